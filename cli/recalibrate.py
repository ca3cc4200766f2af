"""`scanq train --recipe recalibrate` (#21): no labelled set to send; the server refits
the active version's temperature and threshold on this site's confirmed labels and
gates the new version against it (worker.recalibration)."""

from __future__ import annotations

import click

from cli.client import Client
from cli.train_options import as_fields as option_fields


def recalibrate(modality: str, data_given: bool, options: dict, wait: bool, url: str) -> None:
    if data_given:
        raise click.UsageError(
            "recipe recalibrate takes no --data or --server-path: it refits on this site's "
            "confirmed labels"
        )
    client = Client(url)
    job = client.train({"modality": modality, **option_fields(options)}, None)
    d = job["dataset"]
    click.echo(f"recalibrating model version {d['parent']} on {d['n']} confirmed labels "
               f"({d['n_covid']} covid, {d['n_non_covid']} non_covid, {d['n_patients']} "
               "patients)", err=True)  # fmt: skip
    click.echo(job["id"])
    if wait:
        final = client.wait(job["id"], interval=1.0)
        if final["status"] != "succeeded":
            raise click.ClickException(f"recalibration {final['status']}: {final.get('error')}")
        click.echo(f"model version {final['model_version']} is ready; the gate's decision is "
                   "on the models page", err=True)  # fmt: skip
