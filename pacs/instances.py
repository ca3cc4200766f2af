"""Store one received DICOM instance and record it: the one path shared by the C-STORE
listener, STOW-RS and pulls. The file is written content-hashed (the layout of
web.storage: scans/<aa>/<bb>/<sha256>) while it is read, in chunks, so an instance of
any size never sits whole in memory; its header (read without the pixel data) says
which study and series it joins and where the router sends it.

Patient id, accession number and study date are kept on the study for its owner; they
never go to the logs (this module logs internal ids only)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from db.session import session_scope
from db.studies import Origin, RecordedInstance, record_instance
from pacs.router import route

CHUNK = 1024 * 1024


class InstanceError(ValueError):
    """Not a DICOM instance that can be recorded; the message says why. The UIDs are
    those read, when the header could be read."""

    def __init__(
        self,
        message: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
        not_in_study: bool = False,
    ):
        super().__init__(message)
        self.sop_class_uid, self.sop_instance_uid = sop_class_uid, sop_instance_uid
        self.not_in_study = not_in_study


@dataclass(frozen=True)
class InstanceHeader:
    study_uid: str
    series_uid: str | None
    sop_instance_uid: str
    sop_class_uid: str | None
    modality: str | None
    view_position: str | None
    body_part: str | None
    image_type: tuple[str, ...]
    patient_id: str | None
    accession: str | None
    study_date: str | None


def _text(ds, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    return str(value).strip()[:limit] or None


def read_header(path: Path) -> InstanceHeader:
    """The fields ScanQ routes and groups by, read up to the pixel data."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise InstanceError("not a DICOM file (no DICM prefix)") from None
    except Exception as exc:  # pydicom raises many types for broken files
        raise InstanceError(f"not a readable DICOM file ({type(exc).__name__})") from None
    try:
        sop_uid = _text(ds, "SOPInstanceUID") or _text(ds.file_meta, "MediaStorageSOPInstanceUID")
        sop_class = _text(ds, "SOPClassUID") or _text(ds.file_meta, "MediaStorageSOPClassUID")
        study_uid = _text(ds, "StudyInstanceUID")
        image_type = ds.get("ImageType") or ()
        image_type = (image_type,) if isinstance(image_type, str) else tuple(map(str, image_type))
        header = InstanceHeader(
            study_uid=study_uid or "",
            series_uid=_text(ds, "SeriesInstanceUID"),
            sop_instance_uid=sop_uid or "",
            sop_class_uid=sop_class,
            modality=_text(ds, "Modality", 16),
            view_position=_text(ds, "ViewPosition", 16),
            body_part=_text(ds, "BodyPartExamined", 32),
            image_type=image_type,
            patient_id=_text(ds, "PatientID"),
            accession=_text(ds, "AccessionNumber"),
            study_date=_text(ds, "StudyDate", 8),
        )
    except Exception as exc:  # a mangled element fails when first read
        raise InstanceError(f"damaged DICOM header ({type(exc).__name__})") from None
    if not header.study_uid:
        raise InstanceError("the instance has no StudyInstanceUID")
    if not header.sop_instance_uid:
        raise InstanceError("the instance has no SOPInstanceUID")
    return header


PREAMBLE = b"\x00" * 128 + b"DICM"
META_GROUP = b"\x02\x00"  # (0002,xxxx) little endian: File Meta Information first


class IncomingFile:
    """A file written into the store while it arrives: chunks are hashed as they are
    written to a temporary file beside the store; `commit` names it by its hash.

    A Part-10 file sent without its 128-byte preamble and "DICM" prefix but starting
    with its File Meta Information (what pydicom's dcmwrite makes of a dataset built in
    memory, and so what dicomweb-client sends) is stored with them, so every stored
    instance is a file the readers recognise."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        folder = data_dir / "scans"
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        self.path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._head: bytes | None = b""  # the first bytes, until the prefix is known

    def write(self, chunk: bytes) -> None:
        if self._head is not None:
            self._head += chunk
            if len(self._head) < len(PREAMBLE):
                return
            chunk, self._head = self._head, None
            if chunk[128:132] != b"DICM" and chunk[:2] == META_GROUP:
                chunk = PREAMBLE + chunk
        self._fh.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def _flush_head(self) -> None:
        if self._head:
            head, self._head = self._head, None
            self._fh.write(head)
            self._hash.update(head)
            self.size += len(head)
        self._head = None

    def commit(self) -> tuple[str, str]:
        """(sha256, path relative to the data dir); the same content is kept once."""
        self._flush_head()
        self._fh.close()
        digest = self._hash.hexdigest()
        rel = Path("scans") / digest[:2] / digest[2:4] / digest
        target = self.data_dir / rel
        if target.exists():
            self.path.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)  # atomic: a reader never sees half a file
        return digest, rel.as_posix()

    def discard(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


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
        header = read_header(data_dir / rel)
        if expect_study_uid and header.study_uid != expect_study_uid:
            raise InstanceError(
                f"the instance belongs to study {header.study_uid}, not to the study "
                f"{expect_study_uid} of the request",
                header.sop_class_uid,
                header.sop_instance_uid,
                not_in_study=True,
            )
    except InstanceError:
        _drop_unreferenced(data_dir, rel, database_url, digest)
        raise
    where = route(
        header.sop_class_uid,
        header.modality,
        header.view_position,
        header.body_part,
        header.image_type,
    )
    with session_scope(database_url) as session:
        return record_instance(session, header, where, digest, rel, incoming.size, origin)


def store_instance(
    database_url: str, data_dir: Path, chunks: Iterable[bytes], origin: Origin
) -> RecordedInstance:
    """Write the Part-10 file that `chunks` make into the store and record it."""
    incoming = IncomingFile(data_dir)
    try:
        for chunk in chunks:
            incoming.write(chunk)
    except BaseException:
        incoming.discard()
        raise
    return record_stored(database_url, data_dir, incoming, origin)


def store_instance_file(
    database_url: str, data_dir: Path, path: Path, origin: Origin
) -> RecordedInstance:
    return store_instance(database_url, data_dir, file_chunks(path), origin)


def _drop_unreferenced(data_dir: Path, rel: str, database_url: str, digest: str) -> None:
    """Remove a refused file unless some recorded instance or scan has the same bytes."""
    from sqlalchemy import select

    from db.models import Scan, StudyInstance

    with session_scope(database_url) as session:
        used = session.scalar(select(StudyInstance.id).where(StudyInstance.sha256 == digest)) or (
            session.scalar(select(Scan.id).where(Scan.sha256 == digest).limit(1))
        )
    if not used:
        (data_dir / rel).unlink(missing_ok=True)
