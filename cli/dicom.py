"""`scanq dicom peer|source ...` (made on the server against the database, like
`scanq user`), `scanq dicom-listener` (the DICOM listener in the foreground) and
`scanq pull` (through the API: the pull runs in a worker)."""

from __future__ import annotations

import time

import click

from cli.accounts import _table, _when
from cli.client import Client
from db.peers import (
    PeerError,
    add_peer,
    add_source,
    list_peers,
    list_sources,
    remove_peer,
    remove_source,
)
from db.session import session_scope
from scanq.settings import get_settings


def _session():
    return session_scope(get_settings().database_url)


def _removed(remove, key: str, what: str) -> None:
    """`remove` the peer or source `key`, or fail saying there is none."""
    with _session() as session:
        if not remove(session, key, by=None):
            raise click.ClickException(f"no {what} {key!r}")
    click.echo(f"{what} {key} removed", err=True)


def _checked(make):
    try:
        return make()
    except PeerError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def dicom() -> None:
    """DICOM peers (who may send to ScanQ, where results go) and DICOMweb sources."""


@dicom.group()
def peer() -> None:
    """DICOM nodes allowed to send studies (by calling AE title)."""


@peer.command("add")
@click.argument("ae_title")
@click.option("--host", required=True, help="where the peer listens (results go back there)")
@click.option("--port", type=int, required=True)
@click.option("--user", "owner", required=True, help="the user who owns what this peer sends")
def peer_add(ae_title: str, host: str, port: int, owner: str) -> None:
    """Allow AE_TITLE to send; its studies belong to --user."""
    with _session() as session:
        p = _checked(lambda: add_peer(session, ae_title, host, port, owner, by=None))
        click.echo(f"peer {p.ae_title} at {p.host}:{p.port}, studies owned by {p.owner}")


@peer.command("list")
def peer_list() -> None:
    with _session() as session:
        rows = [
            (p.ae_title, p.host, str(p.port), p.owner, _when(p.created_at))
            for p in list_peers(session)
        ]
    _table(("AE title", "host", "port", "user", "added"), rows)


@peer.command("remove")
@click.argument("ae_title")
def peer_remove(ae_title: str) -> None:
    """Refuse AE_TITLE from now on (its studies stay)."""
    _removed(remove_peer, ae_title, "DICOM peer")


@dicom.group()
def source() -> None:
    """DICOMweb servers studies can be pulled from (QIDO-RS / WADO-RS)."""


@source.command("add")
@click.argument("name")
@click.option("--url", required=True, help="DICOMweb base URL, e.g. http://pacs:8042/dicom-web")
@click.option("--username", default=None, help="HTTP basic auth user")
@click.option("--password-env", default=None, help="environment variable holding the password")
def source_add(name: str, url: str, username: str | None, password_env: str | None) -> None:
    with _session() as session:
        s = _checked(lambda: add_source(session, name, url, username, password_env, by=None))
        click.echo(f"source {s.name} at {s.url}")


@source.command("list")
def source_list() -> None:
    with _session() as session:
        rows = [
            (s.name, s.url, s.username or "-", _when(s.created_at)) for s in list_sources(session)
        ]
    _table(("name", "url", "user", "added"), rows)


@source.command("remove")
@click.argument("name")
def source_remove(name: str) -> None:
    _removed(remove_source, name, "DICOMweb source")


@click.command("dicom-listener")
def dicom_listener() -> None:
    """Run the DICOM listener (C-STORE, C-ECHO) on SCANQ_DICOM_HOST:SCANQ_DICOM_PORT."""
    from pacs.listener import run_listener

    settings = get_settings()
    click.echo(
        f"DICOM listener {settings.dicom_ae} on {settings.dicom_host}:{settings.dicom_port}",
        err=True,
    )
    run_listener(settings)


@click.command()
@click.option("--source", "source_name", required=True, help="a configured DICOMweb source")
@click.option("--modality", default=None, help="ModalitiesInStudy, e.g. DX, CR, CT")
@click.option("--since", default=None, help="studies from this date on (YYYY-MM-DD)")
@click.option("--study", "study_uid", default=None, help="one StudyInstanceUID")
@click.option("--results-to", default=None, help="AE title of the peer results go to")
@click.option("--wait", is_flag=True, help="wait until every study is retrieved")
@click.option("--url", default=None, help="ScanQ web URL (default $SCANQ_URL or local)")
def pull(source_name, modality, since, study_uid, results_to, wait, url) -> None:
    """Pull studies by query from a DICOMweb source and screen them."""
    client = Client(url)
    body = {
        "source": source_name,
        "modality": modality,
        "since": since,
        "study_uid": study_uid,
        "results_to": results_to,
    }
    started = client._send("POST", "/api/v1/pulls", json=body).json()
    click.echo(started["id"])
    if not wait:
        return
    while True:
        state = client.get(f"/api/v1/pulls/{started['id']}").json()
        if state["status"] == "done":
            out = state["outcome"]
            click.echo(
                f"{out['instances']} instances in {len(out['studies'])} studies, "
                f"{out['failed']} failed",
                err=True,
            )
            for error in out["errors"]:
                click.echo(f"  {error}", err=True)
            return
        time.sleep(1)
