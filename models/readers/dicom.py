"""DICOM files to the 8-bit grey frames the models take.

The order of operations follows the standard's pixel pipeline: stored values -> the
modality LUT (rescale slope and intercept: CT values become Hounsfield units) -> the
VOI LUT or window -> MONOCHROME1 inverted so that air is black, as in the PNG training
data. A CT slice is first prepared in Hounsfield units by models.ct_slice (the body
found, the table dropped, cropped to the lungs so that it looks like the figure crops
the CT model learnt from; a slice without lung is kept but marked not to be screened,
and one that is already a tight crop passes as it is), then shown through a fixed lung
window (centre -600 HU, width 1500), the window the CT training slices were read in,
rather than whatever window the file suggests; radiographs use the file's own VOI LUT
or window, else their full range. Compressed transfer syntaxes decode through
pydicom's optional plugins (pylibjpeg) where installed; where not, the file gets a
clear error.

pydicom converts each element when it is first read, so a mangled element (found by
atheris: an unknown VR in Columns gave NotImplementedError) can fail anywhere after
`dcmread`: every step here turns that into this file's DicomError, never the upload's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from models.readers.base import Header, ImageError

LUNG_WINDOW = (-600.0, 1500.0)  # centre, width in HU
XRAY_MODALITIES = {"CR", "DX", "DR", "RG"}
MAX_FRAMES = 2000
MAX_VOXELS = 200_000_000  # all frames of one file together
PREAMBLE = 128
MAGIC = b"DICM"

T = TypeVar("T")


class DicomError(ImageError):
    """A DICOM file that cannot be turned into images; the message says why."""


def scanq_modality(modality: str | None) -> str | None:
    """ScanQ's modality ("ct", "xray") for a DICOM Modality, or None for any other."""
    if modality == "CT":
        return "ct"
    if modality in XRAY_MODALITIES:
        return "xray"
    return None


@dataclass(frozen=True)
class DicomTags:
    """The header fields ScanQ reads: where a file belongs and what it shows (the
    PACS side routes and groups instances by these: pacs.router, pacs.instances).
    Texts are stripped, None when absent or empty."""

    modality: str | None  # the file's own Modality, e.g. "CT", "CR", "DX"
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None  # else the file meta's MediaStorageSOPInstanceUID
    sop_class_uid: str | None  # else the file meta's MediaStorageSOPClassUID
    instance_number: int | None
    transfer_syntax: str | None
    view_position: str | None = None  # "PA", "AP", "LL"... (radiographs)
    body_part: str | None = None  # BodyPartExamined, e.g. "CHEST"
    image_type: tuple[str, ...] = ()  # ImageType values, e.g. ("ORIGINAL", "PRIMARY", "AXIAL")
    accession: str | None = None  # AccessionNumber
    study_date: str | None = None  # StudyDate, YYYYMMDD

    @property
    def scanq_modality(self) -> str | None:
        """ "ct", "xray", or None when the file's Modality is neither."""
        return scanq_modality(self.modality)


def _guarded(step: Callable[[], T]) -> T:
    try:
        return step()
    except DicomError:
        raise
    except Exception as exc:
        raise DicomError(f"damaged DICOM element ({type(exc).__name__}: {exc})"[:500]) from None


def read_dataset(data: bytes | os.PathLike, pixels: bool = True):
    """The pydicom Dataset of a Part-10 file (its bytes, or its path: then only what is
    read is loaded); `pixels=False` stops before the pixel data (cheap: for reading
    tags only)."""
    import pydicom

    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return pydicom.dcmread(source, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many types for broken files
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__})") from None


def tags_of(ds) -> DicomTags:
    """The header fields of a pydicom Dataset (one read from bytes, or a C-STORE's)."""

    meta = getattr(ds, "file_meta", None) or {}

    def text(keyword: str, where=ds) -> str | None:
        value = where.get(keyword)
        return (str(value).strip() or None) if value not in (None, "") else None

    def read() -> DicomTags:
        number = ds.get("InstanceNumber")
        syntax = getattr(meta, "TransferSyntaxUID", None)
        image_type = ds.get("ImageType") or ()
        image_type = (image_type,) if isinstance(image_type, str) else tuple(map(str, image_type))
        return DicomTags(
            modality=text("Modality"),
            patient_id=text("PatientID"),
            study_uid=text("StudyInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            sop_instance_uid=text("SOPInstanceUID") or text("MediaStorageSOPInstanceUID", meta),
            sop_class_uid=text("SOPClassUID") or text("MediaStorageSOPClassUID", meta),
            instance_number=int(number) if number not in (None, "") else None,
            transfer_syntax=str(syntax) if syntax else None,
            view_position=text("ViewPosition"),
            body_part=text("BodyPartExamined"),
            image_type=image_type,
            accession=text("AccessionNumber"),
            study_date=text("StudyDate"),
        )

    return _guarded(read)


def read_tags(data: bytes | os.PathLike) -> DicomTags:
    """A Part-10 file's header fields (from its bytes or its path), without reading its
    pixel data."""
    return tags_of(read_dataset(data, pixels=False))


def header_of(ds) -> Header:
    """Size and frames of a Dataset, refusing what cannot be a grey scan of sane size
    before any pixel is decoded."""

    def read() -> Header:
        if "PixelData" not in ds:
            raise DicomError("DICOM file has no pixel data (not an image)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > MAX_FRAMES:
            raise DicomError(f"DICOM file has {frames} frames; at most {MAX_FRAMES} are accepted")
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if rows * cols * frames > MAX_VOXELS:
            raise DicomError(f"DICOM image is too large: {frames} x {rows} x {cols}")
        if ds.get("SamplesPerPixel", 1) != 1:
            raise DicomError("colour DICOM images are not scans this model reads")
        return Header("DICOM", cols, rows, frames, dicom=tags_of(ds))

    return _guarded(read)


def frames_of(ds, modality: str | None = None) -> list[np.ndarray]:
    """Every frame of a Dataset, windowed for `modality` ("ct" or "xray"; None: the
    file's own Modality, radiograph windowing when it is neither)."""
    return frames_and_reasons_of(ds, modality)[0]


def frames_and_reasons_of(
    ds, modality: str | None = None
) -> tuple[list[np.ndarray], list[str | None]]:
    """`frames_of`, and per frame None or why it is not to be screened (a CT slice
    without lung: models.ct_slice.NO_LUNG; the frame is then the whole slice)."""
    return _guarded(lambda: _frames(ds, modality))


def _frames(ds, modality: str | None) -> tuple[list[np.ndarray], list[str | None]]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from models import ct_slice

    if modality is None:
        modality = scanq_modality(str(ds.get("Modality") or "")) or "xray"
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(f"cannot decode DICOM pixel data ({name}): {exc}"[:500]) from None
    stack = pixels if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]
    inverted = ds.get("PhotometricInterpretation") == "MONOCHROME1"
    out, reasons = [], []
    for frame in stack:
        hu = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
        reason = None
        if modality == "ct":
            prepared = ct_slice.prepare(hu)
            values, reason = prepared.hu, prepared.reason
            centre, width = LUNG_WINDOW
            lo, hi = centre - width / 2, centre + width / 2
        else:
            values = np.asarray(apply_voi_lut(hu, ds), dtype=np.float64)
            lo, hi = float(values.min()), float(values.max())
        scaled = np.clip((values - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 255.0
        grey = scaled.round().astype(np.uint8)
        out.append(255 - grey if inverted else grey)
        reasons.append(reason)
    return out, reasons


@dataclass(frozen=True)
class _OpenedDicom:
    header: Header
    dataset: object

    def verify(self) -> None:
        """Nothing more to check: opening parsed every element but the pixels."""

    def frames(self, modality: str | None = None) -> list[np.ndarray]:
        return frames_of(self.dataset, modality)

    def frames_and_reasons(
        self, modality: str | None = None
    ) -> tuple[list[np.ndarray], list[str | None]]:
        return frames_and_reasons_of(self.dataset, modality)


@dataclass(frozen=True)
class DicomReader:
    """Part-10 files: a 128-byte preamble, then "DICM"."""

    name: str = "DICOM"
    suffixes: tuple[str, ...] = (".dcm",)

    def sniff(self, data: bytes) -> bool:
        return data[PREAMBLE : PREAMBLE + len(MAGIC)] == MAGIC

    def open(self, data: bytes) -> _OpenedDicom:
        ds = read_dataset(data)
        return _OpenedDicom(header_of(ds), ds)


DICOM = DicomReader()
