"""`scanq`: run the stack, submit scans, read results, evaluate and manage models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from cli.accounts import token, user
from cli.client import ApiError, Client, expand_paths, zip_labelled_folder
from cli.dicom import dicom, dicom_listener, pull
from cli.train_options import as_fields as option_fields
from cli.train_options import training_options
from scanq import DISCLAIMER
from scanq.settings import RUNTIMES, get_settings

url_option = click.option("--url", default=None, help="ScanQ web URL (default $SCANQ_URL or local)")


class _Commands(click.Group):
    """Every command reports the API's refusals, an unreachable server and a database it
    cannot use the same way: one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import OperationalError

        from scanq.layout import check_packages

        try:
            check_packages()  # another distribution's `web`, `models`... (scanq.layout)
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise click.ClickException(str(exc)) from None
        except ModuleNotFoundError as exc:  # a path that imports models without asking first
            from cli.runtime import is_missing_runtime, runtime_message

            if not is_missing_runtime(exc):
                raise
            raise click.ClickException(runtime_message([exc.name.split(".")[0]])) from None
        except OperationalError as exc:  # the commands that work on the database itself
            url = get_settings().database_url
            raise click.ClickException(
                f"database {url.split('@')[-1]}: {exc.orig}. Is SCANQ_DATA_DIR (or "
                "DATABASE_URL) that of the running stack, and is it migrated (scanq migrate)?"
            ) from None


@click.group(cls=_Commands)
def cli() -> None:
    """ScanQ: batch COVID-19 screening of chest X-rays and CT slices (research use only)."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
def up(host: str) -> None:
    """Start the whole local stack in the foreground (Ctrl-C stops it)."""
    from cli.runtime import require_model_runtime
    from cli.stack import run_stack

    require_model_runtime()  # its workers run models
    sys.exit(run_stack(get_settings(), host))


@cli.command()
@click.option("--queues", default="inference,training", show_default=True)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="processes per worker (CPU: 1, TensorFlow uses every core)",
)
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help="'auto', a number, or 0: one worker process per GPU",
)
def worker(queues: str, concurrency: int, gpus: str) -> None:
    """Start Celery workers; beside a running `scanq up` they find its Redis."""
    from cli.processes import count_gpus, worker_command
    from cli.runtime import require_model_runtime
    from cli.stack import Supervisor, prepare

    require_model_runtime()
    settings = get_settings()
    prepare(settings)
    n_gpus = count_gpus() if gpus == "auto" else int(gpus)
    if n_gpus <= 0:
        os.execv(sys.executable, worker_command(queues, concurrency, "cpu"))
    sup = Supervisor()
    sup.handle_signals()
    for i in range(n_gpus):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(i))
        sup.start(f"gpu{i}", worker_command(queues, 1, f"gpu{i}"), env)
    try:
        sys.exit(sup.wait())
    finally:
        sup.stop()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
def web(host: str, workers: int) -> None:
    """Start the web app under gunicorn."""
    from cli.processes import web_command
    from cli.stack import prepare

    settings = get_settings()
    prepare(settings)
    cmd = web_command(settings.port, workers, host)
    os.execv(cmd[0], cmd)


@cli.command()
def beat() -> None:
    """Start celery beat: reconciliation and retraining schedules. Several may run; one
    holds the lock and fires."""
    from cli.processes import beat_command

    cmd = beat_command()
    os.execv(cmd[0], cmd)


@cli.command("migrate")
def migrate_cmd() -> None:
    """Bring the database schema to the newest revision and register shipped models."""
    from cli.stack import prepare

    prepare(get_settings())
    click.echo("database is up to date")


def _progress_note(job: dict | None) -> str | None:
    """What the bar shows beside its count: failures and status, or a training run's
    last loss and validation AUC."""
    if job is None:
        return None
    if job.get("kind") == "training":
        epochs = (job.get("progress") or {}).get("epochs") or [{}]
        last = epochs[-1]
        scores = [
            f"{k} {last[k]:.3f}" for k in ("loss", "val_auc") if isinstance(last.get(k), float)
        ]
        return " ".join([*scores, job["status"]])
    return f"{job['failed']} failed, {job['status']}"


def wait_for_job(client: Client, job_id: str, interval: float = 1.0, quiet: bool = False) -> dict:
    """Poll the job until it ends, drawing click's progress bar on stderr: redrawn in
    place on a terminal, only its label once when stderr is a file or a pipe."""
    if quiet:
        return client.wait(job_id, interval=interval)
    first = client.job(job_id)
    label = "epochs" if first.get("kind") == "training" else "images"
    with click.progressbar(length=max(first["total"], 1), label=label, show_pos=True,
                           show_eta=False, item_show_func=_progress_note,
                           file=click.get_text_stream("stderr")) as bar:  # fmt: skip

        def show(job: dict) -> None:
            bar.length = max(job["total"], 1)  # grows while an upload is still received
            step = job["done"] + job["failed"] - bar.pos
            if step > 0:
                bar.update(step, job)
            else:  # a new status without progress: redraw with it
                bar.current_item = job
                bar.render_progress()

        return client.wait(job_id, interval=interval, on_poll=show)


def summary_line(job: dict) -> str:
    """E.g. "succeeded: 6 scored, 0 failed, of 7; 1 out of distribution (not scored)"."""
    flagged = job.get("flagged", 0)
    skipped = flagged if (job.get("options") or {}).get("skip_out_of_distribution") else 0
    scored, failed, total = job["done"] - skipped, job["failed"], job["total"]
    line = f"{job['status']}: {scored} scored, {failed} failed, of {total}"
    if flagged:
        line += f"; {flagged} out of distribution" + (" (not scored)" if skipped else "")
    return line


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--modality", type=click.Choice(["xray", "ct"]), required=True)
@click.option("--model-version", type=int, default=None)
@click.option(
    "--skip-out-of-distribution",
    is_flag=True,
    help="give no probability to images unlike the model's training scans",
)
@click.option("--wait", is_flag=True, help="show progress until the job ends")
@click.option("--quiet", is_flag=True, help="no progress bar")
@url_option
def submit(paths, modality, model_version, skip_out_of_distribution, wait, quiet, url) -> None:
    """Submit images, folders of images or .zip archives as one job; prints the job id."""
    try:
        files = list(expand_paths(list(paths)))
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    if not files:
        raise click.UsageError("no image or .zip files found in the given paths")
    client = Client(url)
    try:
        job = client.submit(files, modality, model_version, skip_out_of_distribution)
    except OSError as exc:  # a file that went away or became unreadable while sent
        raise click.ClickException(str(exc)) from None
    click.echo(job["id"])
    if wait:
        final = wait_for_job(client, job["id"], quiet=quiet)
        click.echo(summary_line(final), err=True)
        if final["status"] != "succeeded":
            sys.exit(1)


@cli.command()
@click.argument("job_id")
@url_option
def status(job_id, url) -> None:
    """Print a job's status as JSON."""
    click.echo(json.dumps(Client(url).job(job_id), indent=2))


@cli.command()
@click.argument("job_id")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="write CSV to FILE ('-' for stdout)",
)
@url_option
def results(job_id, csv_path, url) -> None:
    """Fetch a job's results: CSV to a file, or JSON lines to stdout."""
    client = Client(url)
    if csv_path:
        body = client.get(f"/api/v1/jobs/{job_id}/results.csv").text
        if csv_path == "-":
            click.echo(body, nl=False)
        else:
            Path(csv_path).write_text(body)
            click.echo(f"wrote {csv_path}", err=True)
        return
    click.echo(f"# {DISCLAIMER}", err=True)
    path = f"/api/v1/jobs/{job_id}/results?limit=1000"
    while path:
        page = client.get(path).json()
        for item in page["items"]:
            click.echo(json.dumps(item))
        path = page["next"]


@cli.command()
@click.option("--modality", type=click.Choice(["xray", "ct"]), required=True)
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True),
    default=None,
    help="folder with covid/ and non_covid/ (and optional labels.csv), or a .zip of one",
)
@click.option("--server-path", default=None, help="a folder on the server instead of --data")
@training_options
@click.option("--no-pretrained", is_flag=True, hidden=True, help="the same as --weights none")
@click.option("--activate", is_flag=True, help="make the new version active when it is done")
@click.option("--wait", is_flag=True, help="show progress until the run ends")
@url_option
def train(modality, data, server_path, no_pretrained, activate, wait, url, **options) -> None:
    """Train a model version on a labelled set, on the training queue; prints the job id.
    Options a recipe does not use are refused for it (see each option's recipe)."""
    if options.get("recipe") == "recalibrate":  # #21: this site's confirmed labels, no set
        from cli.recalibrate import recalibrate

        return recalibrate(modality, bool(data or server_path), options, wait, url)
    if bool(data) == bool(server_path):
        raise click.UsageError("give exactly one of --data and --server-path")
    if no_pretrained:
        options["weights"] = "none"
    fields = {"modality": modality, "activate": str(activate).lower(), **option_fields(options)}
    archive = None
    if server_path:
        fields["data_path"] = server_path
    elif Path(data).is_dir():
        try:
            archive = zip_labelled_folder(Path(data))
        except FileNotFoundError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        archive = Path(data).read_bytes()
    client = Client(url)
    job = client.train(fields, archive)
    for item in job["dataset"]["rejected"]:
        click.echo(f"skipped {item['filename']}: {item['error']}", err=True)
    d = job["dataset"]
    click.echo(
        f"training on {d['n']} images ({d['n_covid']} covid, {d['n_non_covid']} non_covid, "
        f"{d['n_patients']} patients)",
        err=True,
    )
    click.echo(job["id"])
    if wait:
        final = wait_for_job(client, job["id"])
        if final["status"] != "succeeded":
            raise click.ClickException(f"training {final['status']}: {final.get('error') or ''}")
        click.echo(f"model version {final['model_version']} is ready", err=True)


cli.add_command(token)
cli.add_command(user)
# DICOM in (issue #19): peers and sources, the listener, pulls by query.
cli.add_command(dicom)
cli.add_command(dicom_listener)
cli.add_command(pull)


@cli.group()
def models() -> None:
    """List and activate model versions."""


@models.command("list")
@url_option
def models_list(url) -> None:
    items = Client(url).get("/api/v1/models").json()["items"]
    for v in items:
        mark = "*" if v["active"] else " "
        click.echo(
            f"{mark} {v['id']:>4}  {v['modality']:<4}  {v['backbone']}@{v['input_size']}  "
            f"AUC {v['auc']}  sens {v['sensitivity']}  spec {v['specificity']}"
        )


@models.command("activate")
@click.argument("version_id", type=int)
@url_option
def models_activate(version_id, url) -> None:
    v = Client(url).post(f"/api/v1/models/{version_id}/activate")
    click.echo(f"model version {v['id']} is now active for {v['modality']}")


@models.command("delete")
@click.argument("version_id", type=int)
@url_option
def models_delete(version_id, url) -> None:
    """Delete a version that is not active and never scored a job."""
    Client(url).delete(f"/api/v1/models/{version_id}")
    click.echo(f"model version {version_id} deleted")


@cli.command()
@click.option("--modality", type=click.Choice(["xray", "ct"]), required=True)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="folder with covid/ and non_covid/ subfolders of images",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True),
    default=None,
    help="model version folder (default: the shipped model for the modality)",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="what scores: onnx (a version's checked export), tensorflow, or auto (default: "
    "$SCANQ_RUNTIME, else auto: ONNX Runtime on a CPU)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def evaluate(modality, data_dir, model_path, runtime, as_json) -> None:
    """Score a labelled folder locally and report AUC, sensitivity and specificity."""
    from cli.evaluate import evaluate_folder
    from cli.runtime import require_model_runtime

    require_model_runtime()
    settings = get_settings()
    report = evaluate_folder(settings, modality, Path(data_dir), model_path, runtime)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"# {DISCLAIMER}")
    for key in (
        "model_version",
        "runtime",
        "n",
        "n_covid",
        "n_non_covid",
        "auc",
        "auc_ci95",
        "sensitivity",
        "specificity",
        "accuracy",
        "threshold",
    ):
        click.echo(f"{key:>14}: {report[key]}")


if __name__ == "__main__":  # pragma: no cover
    cli()
