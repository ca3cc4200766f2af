"""How close a bulk job comes to the model's own speed, and how much faster ONNX
Runtime scores it than TensorFlow, measured in one run.

For each model measured and each runtime (`--runtimes`, default ONNX Runtime then
TensorFlow; each in its own `scanq up` stack with SCANQ_RUNTIME set): (a) the raw batched
throughput of that runtime on the model file the worker loads (TensorFlow:
`predict_on_batch` on preprocessed arrays; ONNX Runtime: the pixel preparation and the
export's session, as the worker calls them), one call at a time and again with as many
calls in flight as the worker keeps (models.batching), then (b) a bulk job of N real
scans (X-rays, or CT slices with `--modality ct`) through the real stack (private
Redis, Celery worker, gunicorn in a temporary data dir), from the start of the HTTP
upload to the job's last stored result, (c) where the time went (upload and store,
queueing, decode and resize, model, result writes, from the batch rows the worker
writes), and (d) the latency of the status endpoint while the job runs. A warm-up job
loads the model in each worker first (and makes an untrained backbone's export).

    python -m bench.throughput                 # the shipped X-ray model
    python -m bench.throughput --modality ct   # the shipped CT model
    python -m bench.throughput --backbones efficientnet_lite0,mobilenetv2,resnet50
    python -m bench.throughput --runtimes tensorflow   # one runtime only

This machine's speed drifts by 10-20% within a minute, so the raw speed is measured
before and after each job and the job's ratio uses their mean, and the runtimes' jobs
alternate (ONNX, TensorFlow, ONNX, ...): with `--repeats R` each runtime runs R jobs,
and the figures reported are the medians (every repeat's ratio is kept in the report).
`speedup/tf` is the median job speed with the first runtime over the median with
TensorFlow. The ratio printed last is against the one-call loop, the ceiling as issue #8
defines it, for the first model and runtime; the report also holds the ratio against
the worker's own several-call raw speed, the stricter figure.

Writes bench/out/throughput.json and throughput.png; the last two lines printed are
`speedup/tf = R` and `pipeline/raw = R`. A benchmark, not a test: figures depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import requests

from bench import DEFAULT_DATA, OUT, call_rate
from bench.stack import LocalStack
from cli.client import FINAL_STATUSES
from scanq.embedded_redis import free_port


def bench_version(stack: LocalStack, backbone: str, modality: str) -> tuple[int, Path, str]:
    """An untrained model of `backbone` registered in the stack (speed does not depend
    on the weights); `active` takes the stack's active model for `modality`."""
    from db.registry import active_version, register_version
    from db.session import session_scope
    from scanq.settings import load_settings

    settings = load_settings()
    with session_scope(stack.database_url) as session:
        if backbone == "active":
            v = active_version(session, modality)
            path = _with_settings(settings, stack).version_dir(v.path) / "model.keras"
            return v.id, path, v.backbone
    from models.backbones import BACKBONES, build_classifier

    size = BACKBONES[backbone].default_size
    model, _f, _p = build_classifier(backbone, size, weights=None, augment=False)
    rel = f"model_versions/bench-{backbone}"
    (stack.data_dir / rel).mkdir(parents=True, exist_ok=True)
    model.save(stack.data_dir / rel / "model.keras")
    card = {"modality": modality, "backbone": backbone, "input_size": size, "threshold": 0.5}
    with session_scope(stack.database_url) as session:
        version_id = register_version(session, card, rel).id
    return version_id, stack.data_dir / rel / "model.keras", backbone


def _with_settings(settings, stack: LocalStack):
    from dataclasses import replace

    return replace(settings, data_dir=stack.data_dir)


def raw_throughput(
    model_file: Path, images: list[Path], batch_size: int, seconds: float, streams: int = 1
) -> tuple[float, int]:
    """Images per second of `predict_on_batch` on preprocessed, fixed-size batches, with
    `streams` calls in flight at once (one thread each), and the model's input size."""
    import keras

    import models.layers  # noqa: F401 - registers layers that saved models hold
    from models.preprocess import load_for_model

    model = keras.models.load_model(model_file, compile=False)
    size = int(model.input_shape[1])
    pool = np.stack([load_for_model(p, size) for p in images[:batch_size]])
    model.predict_on_batch(pool)  # build and trace once
    rate, _cpu = call_rate(lambda: model.predict_on_batch(pool), batch_size, streams, seconds, 3)
    keras.backend.clear_session()
    return rate, size


def raw_throughput_onnx(
    model_file: Path, images: list[Path], batch_size: int, seconds: float, streams: int = 1
) -> tuple[float, int]:
    """As `raw_throughput`, through the version's ONNX export as the worker runs it
    (NumPy pixel preparation, then the session; the threads of models.runtimes)."""
    from models.onnx_session import onnx_threads
    from models.predictor import OnnxPredictor
    from models.preprocess import load_for_model
    from scanq.settings import load_settings

    threads = onnx_threads(streams, load_settings().onnx_threads)
    predictor = OnnxPredictor(model_file.parent, batch_size, 1.0, 1, threads)
    size = predictor.input_size
    pool = np.stack([load_for_model(p, size) for p in images[:batch_size]])
    predictor.raw_outputs(pool)
    rate, _cpu = call_rate(lambda: predictor.raw_outputs(pool), batch_size, streams, seconds, 3)
    return rate, size


class StatusProbe(threading.Thread):
    """Polls the job's status endpoint until the job ends, timing each answer: four
    times a second, four times as often as the job page does. It is also how the bench
    learns that the job ended, so no second poller loads the web process."""

    def __init__(self, url: str, session_factory, interval: float = 0.25, timeout: float = 3600):
        super().__init__(daemon=True)
        self.url, self.interval, self.session_factory = url, interval, session_factory
        self.deadline = time.monotonic() + timeout
        self.latencies: list[float] = []
        self.errors = 0
        self.final: dict | None = None

    def run(self) -> None:
        session = self.session_factory()
        while self.final is None and time.monotonic() < self.deadline:
            t0 = time.perf_counter()
            try:
                resp = session.get(self.url, timeout=10)
                ok = resp.status_code == 200
            except requests.RequestException:
                ok = False
            self.latencies.append((time.perf_counter() - t0) * 1000)
            self.errors += not ok
            if ok and resp.json()["status"] in FINAL_STATUSES:
                self.final = resp.json()
            else:
                time.sleep(self.interval)


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time used so far by each part of the stack and by this benchmark process
    (the HTTP client): on a machine where they share the cores, what the model does
    not get."""
    import psutil

    roles = {"worker": 0.0, "web": 0.0, "redis": 0.0, "other": 0.0}
    root = psutil.Process(stack.proc.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            cmd, times = " ".join(proc.cmdline()), proc.cpu_times()
        except psutil.Error:
            continue
        roles[_role(cmd)] += times.user + times.system
    own = psutil.Process().cpu_times()
    roles["bench_client"] = own.user + own.system
    return roles


def _role(cmdline: str) -> str:
    if "celery" in cmdline and "inference" in cmdline:
        return "worker"
    if "gunicorn" in cmdline:
        return "web"
    return "redis" if "redis-server" in cmdline else "other"


def stage_times(database_url: str, job_id: str) -> dict:
    """Where a job's time went, from its batch rows: the sums of each stage the worker
    timed, the time inside tasks (claimed to finished), and the time between one batch's
    end and the next one's start (the worker between tasks)."""
    from sqlalchemy import select

    from db.models import Batch
    from db.session import session_scope

    with session_scope(database_url) as session:
        rows = session.execute(
            select(Batch.stats, Batch.started_at, Batch.finished_at).where(Batch.job_id == job_id)
        ).all()
    stats = [r.stats for r in rows if r.stats]
    total = {k: round(sum(s.get(k, 0.0) for s in stats) / 1000, 3)
             for k in ("decode_ms", "model_ms", "lung_share_ms", "write_ms")}  # fmt: skip
    queue = [s["queue_ms"] for s in stats if "queue_ms" in s]
    spans = sorted((r.started_at, r.finished_at) for r in rows if r.started_at and r.finished_at)
    gaps = [max((b[0] - a[1]).total_seconds(), 0.0) for a, b in itertools.pairwise(spans)]
    return {
        "batches": len(stats),
        "decode_s": total["decode_ms"],
        "model_s": total["model_ms"],
        "lung_share_s": total["lung_share_ms"],
        "write_s": total["write_ms"],
        "in_tasks_s": round(sum((b - a).total_seconds() for a, b in spans), 3),
        "between_tasks_s": round(sum(gaps), 3),
        "queue_ms_median": round(float(np.median(queue)), 1) if queue else None,
    }


def wait_for_export(folder: Path, timeout: float = 1800.0) -> None:
    """Until the version's export record is written (kept or refused)."""
    from models.export_record import RECORD_FILE

    deadline = time.monotonic() + timeout
    while not (folder / RECORD_FILE).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no export of {folder} after {timeout:.0f} s")
        time.sleep(0.5)


class Target:
    """One model on one runtime's stack: its registered version, call plan and raw
    measurements, and the jobs run so far."""

    def __init__(self, stack: LocalStack, runtime: str, backbone: str, images: list[Path],
                 batch_size: int, raw_seconds: float, modality: str):  # fmt: skip
        from models.batching import call_plan
        from scanq.settings import load_settings
        from worker.runtime import scoring_device

        self.stack, self.runtime, self.modality, self.images = stack, runtime, modality, images
        self.batch_size, self.raw_seconds = batch_size, raw_seconds
        self.version_id, self.model_file, self.backbone = bench_version(stack, backbone, modality)
        # The raw loops use the call shape the worker picks for this backbone and device:
        # one call at a time (the ceiling as the issue defines it), and as many at once as
        # the worker keeps in flight (the model at its best here).
        settings = load_settings()  # SCANQ_MODEL_BATCH_SIZE and _STREAMS, as the worker sees
        self.plan = call_plan(self.backbone, scoring_device(), batch_size,
                              settings.model_batch_size, settings.model_streams)  # fmt: skip
        warm, _s, _u = stack.submit(images[:batch_size], self.version_id, modality)
        assert stack.wait(warm)["status"] == "succeeded", f"warm-up failed: {stack.data_dir}"
        if runtime == "onnx":  # a version without one exports in the background of its
            wait_for_export(self.model_file.parent)  # first batch: measure after it
        self.raw_runtime = runtime
        if runtime == "onnx" and not (self.model_file.parent / "model.onnx").exists():
            self.raw_runtime = "tensorflow"  # export refused: the worker scores with TF
        self.runs: list[dict] = []
        self.raw_before, self.streams_before, self.size = self.raws()

    def raws(self) -> tuple[float, float, int]:
        raw = raw_throughput_onnx if self.raw_runtime == "onnx" else raw_throughput
        rows, secs = self.plan.rows, self.raw_seconds
        one, size = raw(self.model_file, self.images, rows, secs)
        many = raw(self.model_file, self.images, rows, secs, self.plan.streams)[0]
        return one, many, size

    def job(self, n: int) -> None:
        """One measured job of `n` scans, between two raw measurements."""
        stack, self.n = self.stack, n
        files = [self.images[i % len(self.images)] for i in range(n)]
        cpu_before = cpu_seconds(stack)
        job_id, start, upload_s = stack.submit(files, self.version_id, self.modality)
        probe = StatusProbe(f"{stack.url}/api/v1/jobs/{job_id}", stack.session)
        probe.start()
        probe.join()
        job = probe.final
        assert job is not None, f"job {job_id} did not finish; see {stack.data_dir}"
        cpu_after = cpu_seconds(stack)
        raw_after, streams_after, _size = self.raws()
        finished = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00"))
        elapsed = finished.timestamp() - start
        raw = (self.raw_before + raw_after) / 2
        raw_streams = (self.streams_before + streams_after) / 2
        self.runs.append({"job": job, "job_id": job_id, "elapsed": elapsed, "upload_s": upload_s,
                          "raw": raw, "raw_pair": [self.raw_before, raw_after], "probe": probe,
                          "raw_streams": raw_streams,
                          "img_per_s": job["done"] / elapsed,
                          "cpu": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after},
                          "ratio": job["done"] / elapsed / raw,
                          "ratio_streams": job["done"] / elapsed / raw_streams})  # fmt: skip
        self.raw_before, self.streams_before = raw_after, streams_after

    def report(self) -> dict:
        runs = self.runs
        # The median run by ratio gives the detailed figures.
        mid = sorted(runs, key=lambda r: r["ratio"])[(len(runs) - 1) // 2]
        job, job_id, elapsed, upload_s, probe = (mid[k] for k in ("job", "job_id", "elapsed",
                                                                  "upload_s", "probe"))  # fmt: skip
        raw = mid["raw"]
        scored = job["done"]
        pipeline = scored / elapsed
        lat = np.asarray(probe.latencies)
        return {
            "modality": self.modality,
            "backbone": self.backbone,
            "runtime": self.runtime,
            "raw_runtime": self.raw_runtime,
            "input_size": self.size,
            "batch_size": self.batch_size,
            "model_batch": self.plan.rows,
            "model_streams": self.plan.streams,
            "n": self.n,
            "scored": scored,
            "failed": job["failed"],
            "raw_img_per_s": round(raw, 2),
            "raw_before_after": [round(v, 2) for v in mid["raw_pair"]],
            "raw_streams_img_per_s": round(mid["raw_streams"], 2),
            "job_img_per_s_per_repeat": [round(r["img_per_s"], 2) for r in runs],
            "job_img_per_s_median": round(float(np.median([r["img_per_s"] for r in runs])), 2),
            # Per CPU-second of the worker's processes: on a machine shared with other work
            # a runtime's wall-clock speed depends on the share of the cores it gets.
            "job_img_per_worker_cpu_s_median": round(
                float(np.median([r["job"]["done"] / max(r["cpu"]["worker"], 1e-9) for r in runs])),
                2,
            ),
            "ratio_per_repeat": [round(r["ratio"], 3) for r in runs],
            "ratio_streams_per_repeat": [round(r["ratio_streams"], 3) for r in runs],
            "pipeline_img_per_s": round(pipeline, 2),
            "ratio": round(pipeline / raw, 3),
            # The median of its own repeats (the run in the middle by `ratio` may not be).
            "ratio_vs_streams": round(float(np.median([r["ratio_streams"] for r in runs])), 3),
            "elapsed_s": round(elapsed, 2),
            "upload_and_store_s": round(upload_s, 2),
            **stage_times(self.stack.database_url, job_id),
            "cpu_s": mid["cpu"],
            "status_latency_ms": {
                "requests": int(lat.size),
                "errors": probe.errors,
                "p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
                "p99": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            },
        }


def chart(results: list[dict], path: Path) -> None:
    """Raw (one call, then the worker's calls in flight) and pipeline images per second
    per model, as bars."""
    from PIL import Image, ImageDraw, ImageFont

    bars = (("raw_img_per_s", (170, 170, 170)), ("raw_streams_img_per_s", (110, 110, 110)),
            ("pipeline_img_per_s", (16, 94, 196)))  # fmt: skip
    width, height, left = 640, 60 + 66 * len(results), 170
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    top = max(max(r.get(k, 0) for k, _c in bars) for r in results) or 1
    scale = (width - left - 90) / top
    d.text((10, 10), "images/s: raw model, one call / calls in flight (greys); bulk job (blue)",
           fill="black", font=font)  # fmt: skip
    for i, r in enumerate(results):
        y = 40 + 66 * i
        d.text((10, y + 8), f"{r['backbone']} @ {r['input_size']}", fill="black", font=font)
        d.text((10, y + 26), r.get("runtime", ""), fill="black", font=font)
        for k, (key, colour) in enumerate(bars):
            x1 = left + r.get(key, 0) * scale
            d.rectangle([left, y + k * 18, x1, y + k * 18 + 14], fill=colour)
            d.text((x1 + 6, y + k * 18 + 1), f"{r.get(key, 0):.1f}", fill="black", font=font)
    im.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SCANQ_SHARED_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--n", type=int, default=500, help="images in the measured job")
    ap.add_argument("--modality", default="xray", choices=("xray", "ct"))
    ap.add_argument("--backbones", default="active", help="comma list; 'active' = shipped model")
    ap.add_argument("--batch-size", type=int, default=32, help="images per queued task")
    ap.add_argument("--raw-seconds", type=float, default=10.0, help="each raw measurement")
    ap.add_argument("--repeats", type=int, default=3, help="jobs per model, each between raws")
    ap.add_argument(
        "--runtimes",
        default="onnx,tensorflow",
        help="SCANQ_RUNTIME of each stack, in the order their jobs alternate",
    )
    args = ap.parse_args()
    images = sorted((Path(args.data) / args.modality / "dev").rglob("*.png"))
    if not images:
        raise SystemExit(f"no images under {args.data}/{args.modality}/dev")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    OUT.mkdir(parents=True, exist_ok=True)
    results, speedups, cpu_speedups = [], {}, {}
    with contextlib.ExitStack() as cleanup:
        stacks = {}
        for runtime in runtimes:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="scanq-bench-"))
            stack = LocalStack(Path(tmp), args.batch_size)
            stack.env["SCANQ_RUNTIME"] = runtime
            # Two stacks at once: each its own DICOM listener port (`scanq up` starts one).
            stack.env["SCANQ_DICOM_PORT"] = str(free_port())
            stacks[runtime] = cleanup.enter_context(stack)
        for backbone in args.backbones.split(","):
            targets = [Target(stacks[rt], rt, backbone.strip(), images, args.batch_size,
                              args.raw_seconds, args.modality) for rt in runtimes]  # fmt: skip
            for _ in range(args.repeats):  # the runtimes' jobs alternate
                for target in targets:
                    target.job(args.n)
            reports = [t.report() for t in targets]
            by_runtime = {r["runtime"]: r for r in reports}
            if "tensorflow" in by_runtime and len(reports) > 1:
                first, tf_job = reports[0], by_runtime["tensorflow"]["job_img_per_s_median"]
                speedups[first["backbone"]] = round(first["job_img_per_s_median"] / tf_job, 3)
                per_cpu = "job_img_per_worker_cpu_s_median"
                cpu_speedups[first["backbone"]] = round(
                    first[per_cpu] / max(by_runtime["tensorflow"][per_cpu], 1e-9), 3
                )
                for r in reports:
                    r["speedup_over_tensorflow"] = speedups[first["backbone"]]
            for r in reports:
                results.append(r)
                print(json.dumps(r), flush=True)
    report = {"machine": {"cpus": os.cpu_count()}, "runtimes": runtimes, "results": results,
              "speedup_over_tensorflow": speedups,
              "speedup_over_tensorflow_per_worker_cpu_s": cpu_speedups}  # fmt: skip
    (OUT / "throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, OUT / "throughput.png")
    for r in results:
        print(f"{r['backbone']}@{r['input_size']} [{r['runtime']}]: raw {r['raw_img_per_s']} "
              f"img/s ({r['raw_streams_img_per_s']} with {r['model_streams']} calls at once), "
              f"job {r['job_img_per_s_median']} img/s (median; each "
              f"{r['job_img_per_s_per_repeat']}), ratio {r['ratio']} (each repeat "
              f"{r['ratio_per_repeat']}); against the {r['model_streams']}-call raw "
              f"{r['ratio_vs_streams']} (each {r['ratio_streams_per_repeat']})")  # fmt: skip
    for backbone, speedup in speedups.items():
        print(f"{backbone}: job with {runtimes[0]} / job with tensorflow = {speedup} (images "
              f"per worker CPU-second: {cpu_speedups[backbone]})")  # fmt: skip
    print(f"report: {OUT / 'throughput.json'}, chart: {OUT / 'throughput.png'}")
    if speedups:
        print(f"speedup/tf = {next(iter(speedups.values()))}")
    print(f"pipeline/raw = {results[0]['ratio']}")


if __name__ == "__main__":
    main()
