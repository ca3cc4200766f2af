"""The format registry: every format is told by its bytes, not its name; one size rule
refuses an image and a DICOM frame alike, from the header; the CLI, the training sets
and the upload check read the same list of formats."""

import io

import numpy as np
import pytest
from PIL import Image

from models import readers
from models.readers import ImageError
from tests.helpers import dicom_bytes


def _encoded(fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], 128, np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"])
def test_each_image_format_is_sniffed_checked_and_decoded(fmt):
    data = _encoded(fmt)
    assert readers.sniff(data) is readers.reader_named(fmt)
    assert readers.check_header(data) == readers.Header(fmt, 40, 30)
    (frame,) = readers.decode(data).frames
    assert frame.shape == (30, 40) and frame.dtype == np.uint8


def test_dicom_header_carries_its_tags_and_frames():
    data = dicom_bytes([np.zeros((20, 24), np.uint16)] * 3, modality="DX", series_uid="1.2.3")
    header = readers.check_header(data)
    assert (header.format, header.width, header.height, header.frames) == ("DICOM", 24, 20, 3)
    assert header.dicom.series_uid == "1.2.3" and header.dicom.scanq_modality == "xray"
    assert readers.dicom.read_tags(data) == header.dicom
    with pytest.raises(ImageError, match="DICOM file has 3 frames where one image is read"):
        readers.decode_grayscale(data)


@pytest.mark.parametrize(
    "data",
    [_encoded("PNG", (8, 40)), dicom_bytes(np.zeros((40, 8), np.uint16))],
    ids=["png", "dicom"],
)
def test_one_size_rule_for_every_format(data):
    for read in (readers.check_header, readers.decode):
        with pytest.raises(ImageError, match=r"^image is 8x40 px: smaller than 16 px on a side$"):
            read(data)


def test_unknown_bytes_are_refused_by_what_they_are_not_their_name():
    with pytest.raises(ImageError, match="unsupported image format ICO"):
        readers.check_header(_encoded("ICO", (32, 32)))
    with pytest.raises(ImageError, match="not a readable image"):
        readers.check_header(b"%PDF-1.7 a report")
    assert readers.sniff(_encoded("PNG")) is readers.PNG  # whatever the file is called
    assert readers.has_input_suffix("a/B.DCM") and readers.has_input_suffix("x.jpeg")
    assert not readers.has_input_suffix("notes.txt") and readers.is_archive("set.ZIP")
