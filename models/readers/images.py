"""The ordinary image formats, read by Pillow: one reader per format, each opening the
bytes as its own format only, so a file is decoded as what it was sniffed as.

16-bit and float images are windowed to their own min..max rather than truncated, so
a 12-bit radiograph stored in a 16-bit PNG is not rendered nearly black. Transparent
pixels become black, and EXIF orientation is applied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from models.readers.base import SIZE, Header, ImageError

# Pillow's own refusal (DecompressionBombError, at twice this) guards anything that
# opens an image outside the registry; the registry refuses from the header at SIZE.
Image.MAX_IMAGE_PIXELS = SIZE.max_pixels


def unreadable(exc: Exception) -> ImageError:
    """The error for bytes Pillow gives up on; it raises many types for damaged files
    (atheris found a TIFF whose strip offset is a float: a TypeError deep in its loader)."""
    if isinstance(exc, Image.DecompressionBombError):
        return ImageError("image has too many pixels (decompression bomb limit)")
    detail = "" if isinstance(exc, Image.UnidentifiedImageError) else f": {exc}"
    return ImageError(f"not a readable image ({type(exc).__name__}{detail})"[:300])


@dataclass(frozen=True)
class PillowReader:
    name: str  # Pillow's format name
    suffixes: tuple[str, ...]
    magic: tuple[bytes, ...]  # what files of this format begin with
    also: tuple[int, bytes] | None = None  # a second mark at an offset (WEBP in RIFF)

    def sniff(self, data: bytes) -> bool:
        if not data.startswith(self.magic):
            return False
        return self.also is None or data[self.also[0] :].startswith(self.also[1])

    def open(self, data: bytes) -> _OpenedImage:
        try:
            im = Image.open(io.BytesIO(data), formats=[self.name])
            header = Header(self.name, im.width, im.height)
            return _OpenedImage(header, data, im)
        except Exception as exc:
            raise unreadable(exc) from None


@dataclass
class _OpenedImage:
    header: Header
    data: bytes
    image: Image.Image

    def verify(self) -> None:
        """Pillow's check of the file's structure (chunk checksums, for PNG) without
        decoding: what the upload check asks for."""
        try:
            self.image.verify()
        except Exception as exc:
            raise unreadable(exc) from None

    def frames(self, modality: str | None = None) -> list[np.ndarray]:
        try:
            with self.image as im:
                return [_grey(ImageOps.exif_transpose(im))]
        except Exception as exc:
            raise unreadable(exc) from None

    def frames_and_reasons(
        self, modality: str | None = None
    ) -> tuple[list[np.ndarray], list[str | None]]:
        return self.frames(modality), [None]


def _grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).round().astype(np.uint8)
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("L"), dtype=np.uint8)


def png_bytes(grey: np.ndarray) -> bytes:
    """An 8-bit grey frame as a PNG file: how decoded DICOM frames are stored."""
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def pillow_format(data: bytes) -> str | None:
    """The format Pillow would read `data` as, for a file no reader sniffed: to say
    "unsupported image format ICO" rather than "not readable"."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:
        return None


PNG = PillowReader("PNG", (".png",), (b"\x89PNG\r\n\x1a\n",))
JPEG = PillowReader("JPEG", (".jpg", ".jpeg"), (b"\xff\xd8\xff",))
TIFF = PillowReader("TIFF", (".tif", ".tiff"),
                    (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"))  # fmt: skip
BMP = PillowReader("BMP", (".bmp",), (b"BM",))
GIF = PillowReader("GIF", (".gif",), (b"GIF87a", b"GIF89a"))
WEBP = PillowReader("WEBP", (".webp",), (b"RIFF",), also=(8, b"WEBP"))
