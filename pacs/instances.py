"""Store one received DICOM instance and record it: the one path shared by the C-STORE
listener, STOW-RS and pulls. The file is written into the content-hashed store
(scanq.storage, the store uploads use) while it is read, in chunks, so an instance of
any size never sits whole in memory; its header (models.readers.dicom.read_tags, read
without the pixel data) says which study and series it joins and where the router
sends it.

Patient id, accession number and study date are kept on the study for its owner; they
never go to the logs (this module logs internal ids only)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from db.session import session_scope
from db.studies import Origin, RecordedInstance, record_instance
from models.readers.dicom import MAGIC, PREAMBLE, DicomError, DicomTags, read_tags
from pacs.router import route
from scanq.storage import ContentWriter

CHUNK = 1024 * 1024
MAX_UID = 64  # PS3.5 9.1


class InstanceError(ValueError):
    """Not a DICOM instance that can be recorded; the message says why. The UIDs are
    those read, when the header could be read; `not_dicom` when the content is no DICOM
    file at all, `not_in_study` when it is one of another study than the request's."""

    def __init__(
        self,
        message: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        not_in_study: bool = False,
        not_dicom: bool = False,
    ):
        super().__init__(message)
        self.sop_class_uid, self.sop_instance_uid = sop_class_uid, sop_instance_uid
        self.not_in_study, self.not_dicom = not_in_study, not_dicom


def read_header(path: Path) -> DicomTags:
    """The fields ScanQ routes and groups by, read up to the pixel data."""
    with open(path, "rb") as fh:
        if fh.read(PREAMBLE + len(MAGIC))[PREAMBLE:] != MAGIC:
            raise InstanceError("not a DICOM file (no DICM prefix)", not_dicom=True)
    try:
        tags = read_tags(path)
    except DicomError as exc:
        raise InstanceError(str(exc)) from None
    if not tags.study_uid:
        raise InstanceError("the instance has no StudyInstanceUID")
    if not tags.sop_instance_uid:
        raise InstanceError("the instance has no SOPInstanceUID")
    for name in ("study_uid", "series_uid", "sop_instance_uid", "sop_class_uid"):
        if len(getattr(tags, name) or "") > MAX_UID:
            raise InstanceError(f"the instance's {name} is longer than {MAX_UID} characters")
    return tags


META_GROUP = b"\x02\x00"  # (0002,xxxx) little endian: File Meta Information first


class IncomingFile(ContentWriter):
    """A DICOM instance written into the store while it arrives (scanq.storage's writer).

    A Part-10 file sent without its 128-byte preamble and "DICM" prefix but starting
    with its File Meta Information (what pydicom's dcmwrite makes of a dataset built in
    memory, and so what dicomweb-client sends) is stored with them, so every stored
    instance is a file the readers recognise."""

    def __init__(self, data_dir: Path):
        super().__init__(data_dir)
        self._head: bytes | None = b""  # the first bytes, until the prefix is known

    def write(self, chunk: bytes) -> None:
        if self._head is not None:
            self._head += chunk
            if len(self._head) < PREAMBLE + len(MAGIC):
                return
            chunk, self._head = self._head, None
            if chunk[PREAMBLE : PREAMBLE + len(MAGIC)] != MAGIC and chunk[:2] == META_GROUP:
                chunk = bytes(PREAMBLE) + MAGIC + chunk
        super().write(chunk)

    def commit(self) -> tuple[str, str]:
        head, self._head = self._head, None
        if head:  # shorter than a preamble: stored as it came (and refused when read)
            super().write(head)
        return super().commit()


def file_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def record_stored(
    database_url: str,
    data_dir: Path,
    incoming: IncomingFile,
    origin: Origin,
    expect_study_uid: str | None = None,
) -> RecordedInstance:
    """Name a fully written IncomingFile by its hash and record it in its study. Raises
    InstanceError (and keeps nothing) when it is not a DICOM instance ScanQ can place in
    a study (or not of `expect_study_uid`); anything that is one is recorded, screened
    or not."""
    digest, rel = incoming.commit()
    try:
        tags = read_header(data_dir / rel)
        if expect_study_uid and tags.study_uid != expect_study_uid:
            raise InstanceError(
                f"the instance belongs to study {tags.study_uid}, not to the study "
                f"{expect_study_uid} of the request",
                tags.sop_class_uid,
                tags.sop_instance_uid,
                not_in_study=True,
            )
    except InstanceError:
        _drop_unreferenced(data_dir, rel, database_url, digest)
        raise
    with session_scope(database_url) as session:
        return record_instance(session, tags, route(tags), digest, rel, incoming.size, origin)


def store_instance(
    database_url: str, data_dir: Path, chunks: Iterable[bytes], origin: Origin
) -> RecordedInstance:
    """Write the Part-10 file that `chunks` make into the store and record it."""
    with IncomingFile(data_dir) as incoming:  # discarded unless record_stored took it
        for chunk in chunks:
            incoming.write(chunk)
        return record_stored(database_url, data_dir, incoming, origin)


def store_instance_file(
    database_url: str, data_dir: Path, path: Path, origin: Origin
) -> RecordedInstance:
    return store_instance(database_url, data_dir, file_chunks(path), origin)


def audit_receipts(
    database_url: str,
    owner: str,
    received: dict[int, int],
    refused: list[str] = (),
    refused_target: str = "",
    **detail,
) -> None:
    """The audit trail of one lot of receipts (an association, a STOW-RS request, a
    pulled study): a dicom_receive event per study with how many instances came, and,
    when some were refused, one dicom_refuse event on `refused_target` with how many
    and why (the first reasons). Reasons may quote header values, so they go here,
    where only admins read, and never to the logs."""
    from db.accounts import audit

    with session_scope(database_url) as session:
        for study_id, n in received.items():
            audit(session, owner, "dicom_receive", f"study:{study_id}", {**detail, "instances": n})
        if refused:
            why = [reason[:300] for reason in refused[:10]]
            audit(session, owner, "dicom_refuse", refused_target,
                  {**detail, "instances": len(refused), "reasons": why})  # fmt: skip


def _drop_unreferenced(data_dir: Path, rel: str, database_url: str, digest: str) -> None:
    """Remove a refused file unless some recorded instance or scan has the same bytes."""
    from sqlalchemy import select

    from db.models import Scan, StudyInstance

    with session_scope(database_url) as session:
        used = session.scalar(
            select(StudyInstance.id).where(StudyInstance.sha256 == digest).limit(1)
        ) or session.scalar(select(Scan.id).where(Scan.sha256 == digest).limit(1))
    if not used:
        (data_dir / rel).unlink(missing_ok=True)
