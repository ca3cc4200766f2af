"""The one registry of input formats: what ScanQ accepts, and how each becomes grey frames.

A reader per format (MONAI's pattern) behind one interface (`models.readers.base`):
its file suffixes, how its bytes begin, a cheap header read, and decoding to 8-bit grey
(H, W) frames (a DICOM file may hold many; an image holds one). The size rule is
checked here, between header and pixels, for every format. Everything that needs to
know formats asks this module: the upload check (web.ingest), the files the CLI sends
(cli.client), the training sets (models.dataset, web.datasets) and the decoders that
feed the models (models.preprocess).

    reader = sniff(data)              # the Reader whose magic bytes `data` begins with
    header = check_header(data)       # format, width, height, frames; ImageError if unusable
    image = decode(data, "ct")        # image.header, image.frames (list of uint8 (H, W)),
                                      # image.reasons (per frame: None, or why not screened)
    grey = decode_grayscale(path)     # the one frame of a file
    header.dicom                      # DICOM only: modality, series_uid, ... (DicomTags)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from models.readers.base import SIZE, Header, ImageError, Opened, Reader, SizeRule
from models.readers.dicom import DICOM, DicomError, DicomTags
from models.readers.images import (
    BMP,
    GIF,
    JPEG,
    PNG,
    TIFF,
    WEBP,
    pillow_format,
    png_bytes,
    unreadable,
)

__all__ = [
    "ARCHIVE_SUFFIXES", "DICOM", "PNG", "READERS", "SIZE", "SUFFIXES", "Decoded", "DicomError",
    "DicomTags",
    "Header", "ImageError", "Reader", "SizeRule", "check_header", "decode", "decode_grayscale",
    "has_input_suffix", "is_archive", "png_bytes", "reader_named", "sniff",
]  # fmt: skip

# DICOM first: a Part-10 file's 128-byte preamble may itself look like a TIFF header.
READERS: tuple[Reader, ...] = (DICOM, PNG, JPEG, TIFF, BMP, GIF, WEBP)
SUFFIXES = frozenset(suffix for reader in READERS for suffix in reader.suffixes)
# Zip archives carry inputs (opened member by member by web.ingest); they are not one.
ARCHIVE_SUFFIXES = frozenset({".zip"})
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Decoded:
    header: Header
    frames: list[np.ndarray]  # (H, W) uint8 each
    # Per frame, why it is not to be screened (None: screen it); e.g. a scanner CT
    # slice without lung (models.ct_slice.NO_LUNG). Empty: screen every frame.
    reasons: tuple[str | None, ...] = ()


def sniff(data: bytes) -> Reader | None:
    """The reader for `data`, told by its first bytes (never by its name), or None."""
    return next((reader for reader in READERS if reader.sniff(data)), None)


def reader_named(name: str) -> Reader:
    """The reader of a format name ("PNG", "DICOM", ...)."""
    return next(reader for reader in READERS if reader.name == name)


def has_input_suffix(path: PurePath | str) -> bool:
    """Whether a file's name says it is one of the accepted formats (for choosing which
    files of a folder to send or train on; what a file is, its bytes decide)."""
    return PurePath(path).suffix.lower() in SUFFIXES


def is_archive(name: str, data: bytes = b"") -> bool:
    """A zip archive, by its name or by its first bytes."""
    return PurePath(name).suffix.lower() in ARCHIVE_SUFFIXES or data.startswith(ZIP_MAGIC)


def _open(data: bytes) -> Opened:
    """The file's header, read by its format's reader, with the size rule applied."""
    if not data:
        raise ImageError("not a readable image (empty file)")
    reader = sniff(data)
    if reader is None:
        other = pillow_format(data)
        if other:
            raise ImageError(f"unsupported image format {other}")
        raise ImageError("not a readable image (not a format ScanQ reads)")
    opened = reader.open(data)
    SIZE.check(opened.header.width, opened.header.height)
    return opened


def check_header(data: bytes) -> Header:
    """The upload check: format and size from the header (and the file's structure, for
    images, without decoding pixels); ImageError with a readable reason."""
    opened = _open(data)
    opened.verify()
    return opened.header


def _bytes(data: bytes | Path | str) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        return Path(data).read_bytes()
    except OSError as exc:
        raise unreadable(exc) from None


def decode(data: bytes | Path | str, modality: str | None = None) -> Decoded:
    """Every frame of a file as 8-bit grey. `modality` ("ct" or "xray") picks a DICOM
    file's window; None lets the file's own Modality decide."""
    opened = _open(_bytes(data))
    frames, reasons = opened.frames_and_reasons(modality)
    return Decoded(opened.header, frames, tuple(reasons))


def decode_grayscale(data: bytes | Path | str, modality: str | None = None) -> np.ndarray:
    """The one grey frame (H, W) uint8 of a file; a DICOM file of several frames is an
    ImageError here (web.ingest and web.datasets store each frame as an image)."""
    image = decode(data, modality)
    if len(image.frames) != 1:
        raise ImageError(
            f"{image.header.format} file has {len(image.frames)} frames where one image is read"
        )
    return image.frames[0]
