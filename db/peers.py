"""DICOM peers (who may send to the listener, where results go back) and DICOMweb pull
sources. AE titles are compared as the standard does: up to 16 characters, leading and
trailing spaces not significant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.accounts import audit, get_user
from db.models import DicomPeer, DicomwebSource


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
    peer = get_peer_by_ae(session, ae)
    if peer is None:
        peer = DicomPeer(ae_title=ae, host=host, port=int(port), owner=owner)
        session.add(peer)
    else:
        peer.host, peer.port, peer.owner = host, int(port), owner
    session.flush()
    audit(
        session,
        by,
        "dicom_peer_add",
        f"peer:{ae}",
        {"host": host, "port": int(port), "owner": owner},
    )
    return peer


def remove_peer(session: Session, ae_title: str, by: str | None) -> bool:
    peer = get_peer_by_ae(session, ae_title)
    if peer is None:
        return False
    session.delete(peer)
    audit(session, by, "dicom_peer_remove", f"peer:{peer.ae_title}", {})
    return True


def peer_json(peer: DicomPeer) -> dict:
    return {
        "id": peer.id,
        "ae_title": peer.ae_title,
        "host": peer.host,
        "port": peer.port,
        "user": peer.owner,
        "created_at": peer.created_at.isoformat(),
    }


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
    source = get_source(session, name)
    if source is None:
        source = DicomwebSource(name=name, url=url)
        session.add(source)
    source.url, source.username, source.password_env = url, username or None, password_env or None
    session.flush()
    audit(session, by, "dicomweb_source_add", f"source:{name}", {"url": url})
    return source


def remove_source(session: Session, name: str, by: str | None) -> bool:
    source = get_source(session, name)
    if source is None:
        return False
    session.delete(source)
    audit(session, by, "dicomweb_source_remove", f"source:{name}", {})
    return True


def source_json(source: DicomwebSource) -> dict:
    return {
        "id": source.id,
        "name": source.name,
        "url": source.url,
        "username": source.username,
        "password_env": source.password_env,
        "created_at": source.created_at.isoformat(),
    }
