import base64
import io
import struct

import numpy as np
import pytest
from PIL import Image

from models.preprocess import ImageError, load_for_model, resize_square
from models.readers import decode_grayscale


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG")
    return buf.getvalue()


def test_rgb_becomes_single_channel_luma():
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    gray = decode_grayscale(_png(rgb))
    assert gray.shape == (40, 50)
    assert gray.dtype == np.uint8
    assert abs(int(gray[0, 0]) - 76) <= 1  # ITU-R 601 luma of red


def test_sixteen_bit_is_windowed_to_its_range_not_truncated():
    ramp = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit data
    gray = decode_grayscale(_png(ramp))
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray.reshape(-1).astype(int)) >= 0)


def test_transparent_pixels_become_black():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:16, :, 3] = 255
    gray = decode_grayscale(_png(rgba))
    assert gray[0, 0] == 255 and gray[31, 0] == 0


def test_resize_gives_model_shape_and_range():
    gray = (np.arange(100 * 30) % 256).astype(np.uint8).reshape(100, 30)
    out = resize_square(gray, 64)
    assert out.shape == (64, 64, 1) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "not a readable image"),
        (b"this is text, not a scan", "not a readable image"),
        (_png(np.zeros((8, 8), np.uint8)), "smaller than 16 px on a side"),
    ],
)
def test_bad_inputs_raise_image_error_with_reason(payload, message):
    with pytest.raises(ImageError, match=message):
        load_for_model(payload, 32)


def test_truncated_png_is_an_image_error():
    data = _png((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    with pytest.raises(ImageError):
        decode_grayscale(data[: len(data) // 2])


def test_real_xray_loads(shared_data):
    path = next((shared_data / "xray" / "dev" / "covid").glob("*.png"))
    arr = load_for_model(path, 96)
    assert arr.shape == (96, 96, 1)
    assert arr.std() > 5  # a real radiograph, not a blank frame


def _bitmap_header(width: int, height: int) -> bytes:
    """A 1-bit BMP's headers and palette without any pixel data: only a decoder that
    reads pixels can tell it is truncated."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, 0, 0, 0, 2, 0)
    palette = b"\0\0\0\0\xff\xff\xff\0"
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info + palette


# Found by atheris: 73 bytes that declare 125,435,904 x 1 px and took 13 s to decode
# before the size check refused them. They are a headerless Windows bitmap (Pillow's
# DIB), a format ScanQ does not read: now refused before even the size is looked at.
FOUND_SLOW = base64.b64decode(
    "QAAAAAAAegcBAAAAKgAIAAEAAAAAAAAAAEsDBDLiKgABAAAAAAAAQEtMAAAAAADi7mggSQACAOsKkJCQkJBtIEkBkJCQAgAAAA=="
)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (FOUND_SLOW, "unsupported image format DIB"),
        (_bitmap_header(12_000, 9_000), "image is 12000x9000 px: over 100,000,000 pixels"),
        (_bitmap_header(8, 4_000), "image is 8x4000 px: smaller than 16 px on a side"),
    ],
    ids=["found-by-atheris", "over-the-pixel-limit", "too-narrow"],
)
def test_sizes_are_refused_from_the_header_before_any_pixel_is_decoded(payload, message):
    # Had the pixels been decoded, the bitmaps without pixel data would have been
    # refused as unreadable instead.
    with pytest.raises(ImageError) as err:
        decode_grayscale(payload)
    assert str(err.value) == message
