"""Turn uploaded files (images, DICOM, or .zip archives of them) into stored scans.

Every file gets a verdict: stored, or an error the user can read. Archives are read
member by member with limits on count and expansion; nested archives, links and
directory entries are refused rather than followed. What a file is, and whether it is
usable, the format registry (models.readers) says: images are only checked from their
header here (cheap) and decoded in the worker; DICOM files are decoded here, each frame
windowed for the job's modality and stored as a PNG.
"""

from __future__ import annotations

import io
import itertools
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from db.jobs import IncomingScan
from models import readers
from models.readers import DICOM, ImageError
from scanq.storage import store_bytes

# What zipfile raises on damaged archives (found by tests/unit/test_fuzz_inputs.py:
# a mangled header gives ValueError "negative seek value", not BadZipFile).
ZIP_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError,
              EOFError, zlib.error)  # fmt: skip


class UploadError(ValueError):
    """The whole request is unusable (as opposed to one bad file in it)."""


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_archive_ratio: int
    max_member_bytes: int


def _display_name(name: str) -> str:
    return name.replace("\\", "/").strip()[:1024] or "(unnamed)"


def archive_members(
    archive_name: str, data: bytes, limits: Limits
) -> Iterator[tuple[str, bytes | str]]:
    """(display name, bytes or error) for each file entry of a zip archive."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS:
        yield archive_name, "not a readable zip archive"
        return
    with zf:
        for info in zf.infolist():
            name = f"{archive_name}/{_display_name(info.filename)}"
            mode = info.external_attr >> 16
            if not info.filename:  # found by atheris: zipfile's is_dir() fails on these
                yield name, "archive entry without a name"
                continue
            if info.is_dir():
                continue
            if stat.S_ISLNK(mode):
                yield name, "symbolic links in archives are not followed"
                continue
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if PurePosixPath(info.filename).is_absolute() or ".." in parts:
                yield name, "archive path escapes the archive; refused"
                continue
            if parts and (parts[0] == "__MACOSX" or parts[-1].startswith(".")):
                continue  # resource forks and hidden files are not scans
            if readers.is_archive(info.filename):
                yield name, "nested archives are not accepted"
                continue
            if info.file_size > limits.max_member_bytes or (
                info.compress_size
                and info.file_size / info.compress_size > limits.max_archive_ratio
            ):
                yield name, "archive member expands far beyond its size; refused"
                continue
            try:
                with zf.open(info) as fh:
                    content = fh.read(limits.max_member_bytes + 1)
            except ZIP_ERRORS as exc:
                yield name, f"cannot read archive member: {type(exc).__name__}: {exc}"[:300]
                continue
            if len(content) > limits.max_member_bytes:
                yield name, "archive member is too large"
                continue
            yield name, content


def _verdict(name: str, content: bytes | str, data_dir, modality: str) -> list[IncomingScan]:
    """Check one file and store it if usable; a DICOM file gives one scan per frame."""
    if isinstance(content, str):
        return [IncomingScan(filename=name, error=content)]
    if readers.sniff(content) is DICOM:
        return _dicom_scans(name, content, data_dir, modality)
    try:
        header = readers.check_header(content)
    except ImageError as exc:
        return [IncomingScan(filename=name, size_bytes=len(content), error=str(exc))]
    digest, rel = store_bytes(data_dir, content)
    return [IncomingScan(filename=name, sha256=digest, stored_path=rel, size_bytes=len(content),
                         width=header.width, height=header.height)]  # fmt: skip


def _dicom_scans(name: str, content: bytes, data_dir, modality: str) -> list[IncomingScan]:
    """Each frame, windowed for the job's modality (models.readers.dicom), stored as an
    8-bit PNG named by its hash. A multi-frame file is a series of its own; single
    slices join the series their SeriesInstanceUID names."""
    try:
        image = readers.decode(content, modality)
    except ImageError as exc:
        return [IncomingScan(filename=name, size_bytes=len(content), error=str(exc))]
    tags = image.header.dicom
    note = None
    if tags.scanq_modality and tags.scanq_modality != modality:
        note = (
            f"the DICOM file says Modality {tags.modality} ({tags.scanq_modality}), "
            f"but the job is for {modality}"
        )
    many = len(image.frames) > 1
    series = (tags.series_uid or name) if many else tags.series_uid
    reasons = image.reasons or (None,) * len(image.frames)
    out = []
    for i, (frame, reason) in enumerate(zip(image.frames, reasons, strict=True), start=1):
        label = f"{name} [frame {i}/{len(image.frames)}]" if many else name
        h, w = frame.shape
        png = readers.png_bytes(frame)
        digest, rel = store_bytes(data_dir, png)
        # A frame not to be screened (a CT slice without lung) is kept, with its reason
        # as its result, and left out of the batches and the study score.
        out.append(IncomingScan(filename=label, sha256=digest, stored_path=rel,
                                size_bytes=len(png), width=w, height=h, series=series,
                                frame=i if many else tags.instance_number, note=note,
                                error=reason))  # fmt: skip
    return out


def _files(
    uploads: Iterable[tuple[str, bytes]], limits: Limits
) -> Iterator[tuple[str, bytes | str]]:
    """Every file of the request, archives opened, in upload order; refuses the request
    as soon as it holds more files than allowed."""
    count = 0
    for raw_name, content in uploads:
        name = _display_name(raw_name)
        is_zip = readers.is_archive(name, content)
        for item in archive_members(name, content, limits) if is_zip else [(name, content)]:
            count += 1
            if count > limits.max_files:
                raise UploadError(f"more than {limits.max_files} files in one job")
            yield item


def ingest(
    uploads: Iterable[tuple[str, bytes]], data_dir, limits: Limits, modality: str = "xray"
) -> list[IncomingScan]:
    """Store every usable image; return one IncomingScan per image (a DICOM file may
    hold many), in upload order."""
    return [scan for chunk in ingest_chunks(uploads, data_dir, limits, modality) for scan in chunk]


def ingest_chunks(
    uploads: Iterable[tuple[str, bytes]],
    data_dir,
    limits: Limits,
    modality: str = "xray",
    files_per_chunk: int = 32,
) -> Iterator[list[IncomingScan]]:
    """`ingest` a few files at a time, as they arrive: the caller can queue the first
    scans while later files are still being received. Checking, hashing and writing run
    in a few threads (Pillow, hashlib and file I/O release the GIL). UploadError when the
    request holds more files or images than allowed, as soon as it does."""
    images = 0
    files = _files(uploads, limits)
    while chunk := list(itertools.islice(files, files_per_chunk)):
        verdicts = _ingest_pool.map(lambda f: _verdict(f[0], f[1], data_dir, modality), chunk)
        scans = [scan for per_file in verdicts for scan in per_file]
        images += len(scans)
        if images > limits.max_files:
            raise UploadError(
                f"more than {limits.max_files} images (DICOM frames count) in one job"
            )
        yield scans


_ingest_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest")
