"""Coverage-guided fuzzing (atheris, libFuzzer) of the readers of untrusted bytes.
Each input goes to the image header check, the decoder, the DICOM reader and the archive
reader; anything other than their own errors is a crash that libFuzzer saves.

    python -m tests.fuzz.atheris_inputs -atheris_runs=200000 tests/data/hostile

tests/unit/test_fuzz_inputs.py runs it briefly in CI; run it long by hand.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from models.readers import ImageError, check_header, decode, decode_grayscale
    from web.ingest import Limits, archive_members

LIMITS = Limits(max_files=50, max_archive_ratio=100, max_member_bytes=5_000_000)


def one_input(data: bytes) -> None:
    with contextlib.suppress(ImageError):
        check_header(data)
    with contextlib.suppress(ImageError):
        decode_grayscale(data)  # DICOM files: windowed by their own Modality
    with contextlib.suppress(ImageError):
        decode(data, "ct")
    for _name, _content in archive_members("fuzz.zip", data, LIMITS):
        pass


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
