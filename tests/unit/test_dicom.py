"""DICOM to model pixels: modality LUT before the window, lung window for CT, the
file's own window for radiographs, MONOCHROME1 inverted, frames, compressed syntaxes,
and a clear error for anything else. Ingest turns frames into scans of one series and
warns when the file's Modality is not the job's."""

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from models.readers import DicomError, decode
from tests.helpers import dicom_bytes
from web.ingest import Limits, ingest

LIMITS = Limits(max_files=100, max_archive_ratio=100, max_member_bytes=10**8)


def _hu_to_stored(hu: np.ndarray, intercept: int = -1024) -> np.ndarray:
    return (np.asarray(hu) - intercept).astype(np.uint16)


def test_ct_rescale_then_lung_window():
    hu = np.full((32, 32), -600.0)  # the lung window's centre
    hu[0, :] = -2000  # below the window (-1350..150 HU): black
    hu[1, :] = 400  # above: white
    hu[2, :] = -1024  # air: dark grey, (-1024 + 1350) / 1500 * 255
    data = dicom_bytes(_hu_to_stored(hu, -2048), intercept=-2048)
    (frame,) = decode(data, "ct").frames
    assert frame.dtype == np.uint8
    assert frame[0, 0] == 0 and frame[1, 0] == 255 and frame[2, 0] == 55
    assert frame[5, 5] == 128  # -600 HU sits mid-grey only if the intercept was applied


def test_real_ct_slice_survives_a_trip_through_hounsfield_units(shared_data):
    from models.readers import decode_grayscale

    path = sorted((shared_data / "ct" / "dev" / "covid").glob("*.png"))[0]
    grey = decode_grayscale(path).astype(np.float64)
    hu = grey / 255.0 * 1500.0 - 1350.0  # what the lung window maps back to these greys
    stored = _hu_to_stored(np.round(hu), -2048)
    data = dicom_bytes(stored, intercept=-2048, compress=RLELossless)
    (frame,) = decode(data, "ct").frames
    assert np.abs(frame.astype(int) - grey.astype(int)).max() <= 1


def test_radiograph_window_and_monochrome1():
    stored = np.tile(np.linspace(0, 4000, 64), (16, 1)).astype(np.uint16)
    normal = decode(dicom_bytes(stored, modality="DX", window=(2000, 2000)), "xray")
    inverted = decode(dicom_bytes(stored, modality="CR", photometric="MONOCHROME1",
                                      window=(2000, 2000)), "xray")  # fmt: skip
    a, b = normal.frames[0], inverted.frames[0]
    assert a[0, 0] == 0 and a[0, -1] == 255  # window 1000..3000: the ends are clipped
    assert (a[0, :10] == 0).all() and (a[0, -10:] == 255).all()
    np.testing.assert_array_equal(b, 255 - a)  # MONOCHROME1: high values are dark
    assert normal.header.dicom.scanq_modality == inverted.header.dicom.scanq_modality == "xray"


def test_frames_and_compressed_syntaxes_decode_alike():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 2500, (40, 48)).astype(np.uint16) for _ in range(3)]
    plain = decode(dicom_bytes(frames, intercept=-1024), "ct").frames
    assert len(plain) == 3 and all(f.shape == (40, 48) for f in plain)
    for syntax in (RLELossless, JPEG2000Lossless):
        again = decode(dicom_bytes(frames, intercept=-1024, compress=syntax), "ct").frames
        for x, y in zip(plain, again, strict=True):
            np.testing.assert_array_equal(x, y)


def _truncated() -> bytes:
    whole = dicom_bytes(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    return whole[: len(whole) - 3000]


def _unknown_vr_in_columns() -> bytes:
    """A well-formed file whose Columns element claims a value representation pydicom
    does not know (atheris found this: it raised NotImplementedError when read)."""
    good = dicom_bytes(np.zeros((20, 20), np.uint16))
    tag = b"\x28\x00\x11\x00US"  # (0028,0011) Columns, explicit VR little endian
    assert good.count(tag) == 1
    return good.replace(tag, b"\x28\x00\x11\x00UQ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 10, "no pixel data|not a readable"),
        (b"\0" * 128 + b"DICM", "no pixel data|not a readable"),
        (_truncated(), "cannot decode DICOM pixel data|not a readable"),
        (_unknown_vr_in_columns(), "damaged DICOM element"),
    ],
)
def test_broken_dicom_is_a_clear_error(data, message):
    """Each is this file's own error (DicomError), which ingest turns into a failed row;
    anything else would fail the whole upload."""
    with pytest.raises(DicomError, match=message):
        decode(data, "ct")


def test_no_pixel_data_is_a_clear_error():
    full = dicom_bytes(np.zeros((20, 20), np.uint16))
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(full))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DicomError, match="no pixel data"):
        decode(buf.getvalue(), "ct")


def test_ingest_makes_one_scan_per_frame_with_series_and_a_modality_warning(tmp_path):
    rng = np.random.default_rng(1)
    multi = dicom_bytes([rng.integers(0, 2000, (32, 32)).astype(np.uint16) for _ in range(4)],
                        modality="CT", series_uid="1.2.3.4")  # fmt: skip
    slices = [dicom_bytes(rng.integers(0, 2000, (32, 32)).astype(np.uint16), modality="CT",
                          series_uid="9.8.7", instance=n) for n in (2, 1)]  # fmt: skip
    uploads = [("vol.dcm", multi), ("s2.dcm", slices[0]), ("s1.dcm", slices[1]),
               ("tiny.dcm", dicom_bytes(np.zeros((8, 8), np.uint16)))]  # fmt: skip
    scans = ingest(uploads, tmp_path, LIMITS, modality="xray")
    names = [s.filename for s in scans]
    assert names[:4] == [f"vol.dcm [frame {i}/4]" for i in range(1, 5)]
    assert {s.series for s in scans[:4]} == {"1.2.3.4"} and [s.frame for s in scans[:4]] == [
        1,
        2,
        3,
        4,
    ]
    assert [(s.series, s.frame) for s in scans[4:6]] == [("9.8.7", 2), ("9.8.7", 1)]
    assert all("Modality CT (ct), but the job is for xray" in s.note for s in scans[:6])
    assert "smaller than 16 px" in scans[6].error
    assert all(s.stored_path and s.error is None for s in scans[:6])
    with pytest.raises(Exception, match="more than 3 images"):
        ingest([("vol.dcm", multi)], tmp_path, Limits(3, 100, 10**8), modality="ct")
