"""DICOM peers (who may send to the listener, where results go back) and DICOMweb pull
sources. AE titles are compared as the standard does: up to 16 characters, leading and
trailing spaces not significant."""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.accounts import audit, get_user
from db.models import DicomPeer, DicomwebSource, iso


class PeerError(ValueError):
    """A peer or source that cannot be added or found; the message says why."""


def normalise_ae(ae_title: str) -> str:
    """An AE title as stored: stripped, 1-16 printable ASCII characters, no backslash."""
    ae = (ae_title or "").strip()
    if not 1 <= len(ae) <= 16 or not all(32 <= ord(c) < 127 and c != "\\" for c in ae):
        raise PeerError("an AE title is 1-16 printable ASCII characters (no backslash)")
    return ae


def get_peer_by_ae(session: Session, ae_title: str) -> DicomPeer | None:
    try:
        ae = normalise_ae(ae_title)
    except PeerError:
        return None
    return session.scalar(select(DicomPeer).where(DicomPeer.ae_title == ae))


def list_peers(session: Session) -> list[DicomPeer]:
    return list(session.scalars(select(DicomPeer).order_by(DicomPeer.ae_title)))


def add_peer(
    session: Session, ae_title: str, host: str, port: int, owner: str, by: str | None
) -> DicomPeer:
    """A new peer, or the existing one of that AE title changed; its studies belong to
    `owner`, who must be a user already."""
    ae = normalise_ae(ae_title)
    host = (host or "").strip()
    if not host or len(host) > 255:
        raise PeerError("a peer needs a host name or address")
    if not 1 <= int(port) <= 65535:
        raise PeerError("a port is between 1 and 65535")
    if get_user(session, owner) is None:
        raise PeerError(f"no user {owner!r}: make it first (scanq user add / token create)")
    fields = {"host": host, "port": int(port), "owner": owner}
    found = get_peer_by_ae(session, ae)
    return _save(session, found, DicomPeer, {"ae_title": ae, **fields}, by,
                 "dicom_peer_add", f"peer:{ae}", fields)  # fmt: skip


def remove_peer(session: Session, ae_title: str, by: str | None) -> bool:
    peer = get_peer_by_ae(session, ae_title)
    return _remove(session, peer, by, "dicom_peer_remove", f"peer:{peer and peer.ae_title}")


def _save(session: Session, row, model, fields: dict, by: str | None, action: str,
          target: str, detail: dict):  # fmt: skip
    """A new `model` row of `fields`, or `row` (the one of that name) changed to them;
    audited either way."""
    if row is None:
        row = model(**fields)
        session.add(row)
    else:
        for name, value in fields.items():
            setattr(row, name, value)
    session.flush()
    audit(session, by, action, target, detail)
    return row


def _remove(session: Session, row, by: str | None, action: str, target: str) -> bool:
    """Delete `row` if there is one, audited; whether there was."""
    if row is None:
        return False
    session.delete(row)
    audit(session, by, action, target, {})
    return True


def peer_json(peer: DicomPeer) -> dict:
    return {
        "id": peer.id,
        "ae_title": peer.ae_title,
        "host": peer.host,
        "port": peer.port,
        "user": peer.owner,
        "created_at": iso(peer.created_at),
    }


def source_credentials(source: DicomwebSource) -> tuple[str | None, str | None]:
    """(user, password) for HTTP basic auth to a source, (None, None) without a user.
    The password is read now from the environment variable the source names, so no
    secret is ever kept in SQL."""
    if not source.username:
        return None, None
    return source.username, os.environ.get(source.password_env or "", "")


def get_source(session: Session, name: str) -> DicomwebSource | None:
    return session.scalar(select(DicomwebSource).where(DicomwebSource.name == name))


def list_sources(session: Session) -> list[DicomwebSource]:
    return list(session.scalars(select(DicomwebSource).order_by(DicomwebSource.name)))


def add_source(
    session: Session,
    name: str,
    url: str,
    username: str | None,
    password_env: str | None,
    by: str | None,
) -> DicomwebSource:
    """A DICOMweb server to pull from (or the one of that name changed)."""
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise PeerError("a source name is 1-64 letters, digits or . _ -")
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise PeerError("a source URL is the DICOMweb base URL, http:// or https://")
    fields = {"name": name, "url": url, "username": username or None,
              "password_env": password_env or None}  # fmt: skip
    return _save(session, get_source(session, name), DicomwebSource, fields, by,
                 "dicomweb_source_add", f"source:{name}", {"url": url})  # fmt: skip


def remove_source(session: Session, name: str, by: str | None) -> bool:
    source = get_source(session, name)
    return _remove(session, source, by, "dicomweb_source_remove", f"source:{name}")


def source_json(source: DicomwebSource) -> dict:
    return {
        "id": source.id,
        "name": source.name,
        "url": source.url,
        "username": source.username,
        "password_env": source.password_env,
        "created_at": iso(source.created_at),
    }
