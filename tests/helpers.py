"""Small synthetic files for tests (real scans come from ../shared/data)."""

import io
import stat
import time
import zipfile

import numpy as np
from PIL import Image


def png(seed: int = 0, size: int = 48) -> bytes:
    arr = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def zip_of(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def dicom_bytes(
    frames,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
    instance: int = 1,
    window: tuple[float, float] | None = None,
    compress: str | None = None,
) -> bytes:
    """A Part-10 DICOM file of 16-bit stored values (one array (H, W) or a list of
    frames), as a scanner would write it."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stack = np.asarray(frames if isinstance(frames, list) else [frames], dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.PatientID = modality, "TEST"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = stack.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if len(stack) > 1:
        ds.NumberOfFrames = len(stack)
    ds.PixelData = stack.tobytes()
    if compress:
        ds.compress(compress)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart_part(boundary: str, name: str, filename: str | None, data: bytes) -> bytes:
    """One part of a hand-built multipart body (tests that choose the order of parts
    or send the body in pieces)."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
    return head.encode() + data + b"\r\n"


def wait_until(check, what: str, log: str = "", timeout: float = 240.0, every: float = 0.3):
    """The first truthy value of `check()`, asked every `every` seconds; after `timeout`
    an AssertionError naming `what`, with `log` (a process's log) to see why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}\n{log}")
