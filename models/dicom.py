"""DICOM files to the 8-bit grey frames the models take.

The order of operations follows the standard's pixel pipeline: stored values -> the
modality LUT (rescale slope and intercept: CT values become Hounsfield units) -> the
VOI LUT or window -> MONOCHROME1 inverted so that air is black, as in the PNG training
data. CT is shown through a fixed lung window (centre -600 HU, width 1500), the window
the CT training slices were read in, rather than whatever window the file suggests;
radiographs use the file's own VOI LUT or window, else their full range. Compressed
transfer syntaxes decode through pydicom's optional plugins (pylibjpeg) where installed;
where not, the file gets a clear error.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

LUNG_WINDOW = (-600.0, 1500.0)  # centre, width in HU
XRAY_MODALITIES = {"CR", "DX", "DR", "RG"}
MAX_FRAMES = 2000


class DicomError(ValueError):
    """A DICOM file that cannot be turned into images; the message says why."""


@dataclass(frozen=True)
class DicomImage:
    frames: list[np.ndarray]  # (H, W) uint8 each
    modality: str | None  # the file's own Modality, e.g. "CT", "CR", "DX"
    series_uid: str | None
    instance_number: int | None

    @property
    def scanq_modality(self) -> str | None:
        """ "ct", "xray", or None when the file's Modality is neither."""
        if self.modality == "CT":
            return "ct"
        if self.modality in XRAY_MODALITIES:
            return "xray"
        return None


def is_dicom(data: bytes) -> bool:
    """Part-10 files: a 128-byte preamble, then "DICM"."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_dicom(data: bytes, modality: str) -> DicomImage:
    """Every frame of a DICOM file, windowed for `modality` ("ct" or "xray")."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types for broken files
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__})") from None
    try:
        return _frames(ds, modality)
    except DicomError:
        raise
    except Exception as exc:
        # pydicom converts each element when it is first read, so a mangled element
        # (found by atheris: an unknown VR in Columns gave NotImplementedError) fails
        # here, not in dcmread: still this file's error, never the whole upload's.
        raise DicomError(f"damaged DICOM element ({type(exc).__name__}: {exc})"[:500]) from None


def _frames(ds, modality: str) -> DicomImage:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise DicomError("DICOM file has no pixel data (not an image)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > MAX_FRAMES:
        raise DicomError(f"DICOM file has {frames} frames; at most {MAX_FRAMES} are accepted")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols * frames > 200_000_000:
        raise DicomError(f"DICOM image is too large: {frames} x {rows} x {cols}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(f"cannot decode DICOM pixel data ({name}): {exc}"[:500]) from None
    if ds.get("SamplesPerPixel", 1) != 1:
        raise DicomError("colour DICOM images are not scans this model reads")
    stack = pixels if frames > 1 else pixels[None]
    out = []
    for frame in stack:
        hu = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
        if modality == "ct":
            centre, width = LUNG_WINDOW
            lo, hi = centre - width / 2, centre + width / 2
            values = hu
        else:
            values = np.asarray(apply_voi_lut(hu, ds), dtype=np.float64)
            lo, hi = float(values.min()), float(values.max())
        scaled = np.clip((values - lo) / max(hi - lo, 1e-9), 0.0, 1.0) * 255.0
        grey = scaled.round().astype(np.uint8)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            grey = 255 - grey
        out.append(grey)
    series = ds.get("SeriesInstanceUID")
    number = ds.get("InstanceNumber")
    return DicomImage(
        frames=out,
        modality=str(ds.get("Modality") or "") or None,
        series_uid=str(series) if series else None,
        instance_number=int(number) if number not in (None, "") else None,
    )
