"""What every input format's reader offers, the error it raises, and the one size rule.

A reader opens a file's bytes cheaply (its header: size, frames, format) and decodes
its pixels only when asked; the registry (`models.readers`) checks the size rule
between the two, so no format decodes a pixel of an image it would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from models.readers.dicom import DicomTags


class ImageError(ValueError):
    """A file that cannot be used as a scan; the message is shown to the user."""


@dataclass(frozen=True)
class SizeRule:
    """The smallest side a model can look at, and the most pixels one image (one frame
    of a DICOM file) may have before it is refused unread."""

    min_side: int = 16
    max_pixels: int = 100_000_000

    def check(self, width: int, height: int) -> None:
        if min(width, height) < self.min_side:
            raise ImageError(
                f"image is {width}x{height} px: smaller than {self.min_side} px on a side"
            )
        if width * height > self.max_pixels:
            raise ImageError(f"image is {width}x{height} px: over {self.max_pixels:,} pixels")


SIZE = SizeRule()


@dataclass(frozen=True)
class Header:
    """What a file's header says, before any pixel is decoded."""

    format: str  # the reader's name: "PNG", "JPEG", ..., "DICOM"
    width: int
    height: int
    frames: int = 1
    dicom: DicomTags | None = None  # a DICOM file's own fields (modality, series...)


class Opened(Protocol):
    """A file whose header has been read; `frames` decodes its pixels."""

    header: Header

    def verify(self) -> None:
        """Check the file's structure as far as can be done without decoding pixels
        (the upload check); ImageError if it is damaged."""
        ...

    def frames(self, modality: str | None = None) -> list[np.ndarray]:
        """8-bit grey (H, W) arrays, one per frame. `modality` ("ct" or "xray") picks
        a DICOM file's window; None lets the file's own Modality decide."""
        ...

    def frames_and_reasons(
        self, modality: str | None = None
    ) -> tuple[list[np.ndarray], list[str | None]]:
        """`frames`, and for each why it is not to be screened (None: screen it), e.g.
        a scanner CT slice that shows no lung (models.ct_slice)."""
        ...


class Reader(Protocol):
    """One input format: the names it goes by, how its bytes begin, how it opens."""

    name: str
    suffixes: tuple[str, ...]  # lower case with the dot; the first is the one to store under

    def sniff(self, data: bytes) -> bool:
        """Whether `data` begins as this format's files do (its magic bytes)."""
        ...

    def open(self, data: bytes) -> Opened:
        """Read the header (raising ImageError with the reason); pixels come later."""
        ...
