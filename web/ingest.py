"""Turn uploaded files (images, or .zip archives of images) into stored scans.

Every file gets a verdict: stored, or an error the user can read. Archives are read
member by member with limits on count and expansion; nested archives, links and
directory entries are refused rather than followed. Images are only checked from their
header here (cheap); full decoding happens in the worker.
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
from typing import NamedTuple

from PIL import Image

from db.jobs import IncomingScan
from models.dicom import DicomError, is_dicom, read_dicom
from models.preprocess import MAX_PIXELS, MIN_SIDE
from web.storage import store_bytes

# What zipfile raises on damaged archives (found by tests/unit/test_fuzz_inputs.py:
# a mangled header gives ValueError "negative seek value", not BadZipFile).
ZIP_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, ValueError,
              EOFError, zlib.error)  # fmt: skip
ARCHIVE_SUFFIXES = {".zip"}
IMAGE_FORMATS = {"PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"}


class UploadError(ValueError):
    """The whole request is unusable (as opposed to one bad file in it)."""


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_archive_ratio: int
    max_member_bytes: int


class ImageInfo(NamedTuple):
    width: int
    height: int
    format: str


def check_image(data: bytes) -> ImageInfo:
    """Size and format from the header; raises ValueError with a readable reason."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            width, height = im.size
            im.verify()
    except Image.DecompressionBombError:
        raise ValueError("image has too many pixels (decompression bomb limit)") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {fmt}")
    if width * height > MAX_PIXELS:
        raise ValueError(f"image is {width}x{height}: over {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"image is {width}x{height}: smaller than {MIN_SIDE} px on a side")
    return ImageInfo(width, height, fmt)


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
            if PurePosixPath(info.filename).suffix.lower() in ARCHIVE_SUFFIXES:
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
    if is_dicom(content):
        return _dicom_scans(name, content, data_dir, modality)
    try:
        width, height, _format = check_image(content)
    except ValueError as exc:
        return [IncomingScan(filename=name, size_bytes=len(content), error=str(exc))]
    digest, rel = store_bytes(data_dir, content)
    return [IncomingScan(filename=name, sha256=digest, stored_path=rel, size_bytes=len(content),
                         width=width, height=height)]  # fmt: skip


def _dicom_scans(name: str, content: bytes, data_dir, modality: str) -> list[IncomingScan]:
    """Each frame, windowed for the job's modality (models.dicom), stored as an 8-bit
    PNG named by its hash. A multi-frame file is a series of its own; single slices
    join the series their SeriesInstanceUID names."""
    try:
        image = read_dicom(content, modality)
    except DicomError as exc:
        return [IncomingScan(filename=name, size_bytes=len(content), error=str(exc))]
    note = None
    if image.scanq_modality and image.scanq_modality != modality:
        note = (
            f"the DICOM file says Modality {image.modality} ({image.scanq_modality}), "
            f"but the job is for {modality}"
        )
    many = len(image.frames) > 1
    series = (image.series_uid or name) if many else image.series_uid
    out = []
    for i, frame in enumerate(image.frames, start=1):
        label = f"{name} [frame {i}/{len(image.frames)}]" if many else name
        h, w = frame.shape
        if min(h, w) < MIN_SIDE:
            out.append(IncomingScan(filename=label, error=f"image is {w}x{h}: smaller than "
                                    f"{MIN_SIDE} px on a side"))  # fmt: skip
            continue
        png = _png(frame)
        digest, rel = store_bytes(data_dir, png)
        out.append(IncomingScan(filename=label, sha256=digest, stored_path=rel,
                                size_bytes=len(png), width=w, height=h, series=series,
                                frame=i if many else image.instance_number, note=note))  # fmt: skip
    return out


def _png(gray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _files(
    uploads: Iterable[tuple[str, bytes]], limits: Limits
) -> Iterator[tuple[str, bytes | str]]:
    """Every file of the request, archives opened, in upload order; refuses the request
    as soon as it holds more files than allowed."""
    count = 0
    for raw_name, content in uploads:
        name = _display_name(raw_name)
        is_zip = (
            PurePosixPath(name).suffix.lower() in ARCHIVE_SUFFIXES or content[:4] == b"PK\x03\x04"
        )
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
