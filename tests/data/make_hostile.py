"""Write the corpus of hostile upload files in tests/data/hostile/ (kept in git, so
the exact bytes that once broke or could break the ingest stay under test), and
expected.json: each file's expected per-file error, or null for a file that must be
scored. Re-run after adding a case:

    python -m tests.data.make_hostile
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent / "hostile"


def _png(size=(48, 48), mode="L", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "1":
        im = Image.new("1", size, 0)
    else:
        im = Image.fromarray((rng.random(size[::-1]) * 255).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _zip(entries: dict[str, bytes], link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def cases() -> dict[str, tuple[bytes, str | None]]:
    from tests.helpers import dicom_bytes

    good = _png(seed=1)
    png_16 = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(png_16, "PNG")
    tiff = io.BytesIO()
    Image.fromarray((np.random.default_rng(2).random((40, 40)) * 255).astype(np.uint8)).save(
        tiff, "TIFF"
    )
    whole_dcm = dicom_bytes(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    return {
        "empty.png": (b"", "empty file"),
        "text.png": (b"this is not an image\n", "not a readable image"),
        "text.dcm": (b"this is not DICOM either\n", "not a readable image"),
        "truncated.png": (_png(seed=3)[:300], "not a readable image"),
        "one_pixel.png": (_png(size=(1, 1)), "smaller than 16 px"),
        "bomb.png": (_png(size=(20000, 20000), mode="1"), "decompression bomb"),
        "over_100_megapixels.png": (_png(size=(10001, 10001), mode="1"), "over 100,000,000 pixels"),
        "png_named.jpg": (good, None),  # the extension lies; the content decides
        "sixteen_bit.png": (png_16.getvalue(), None),
        "scan.tif": (tiff.getvalue(), None),
        "escape.zip": (_zip({"../evil.png": good}), "escapes the archive"),
        "absolute.zip": (_zip({"/tmp/evil.png": good}), "escapes the archive"),
        "link.zip": (_zip({}, link="evil_link.png"), "symbolic links"),
        "nested.zip": (_zip({"inner.zip": _zip({"x.png": good})}), "nested archives"),
        "zip_bomb.zip": (_zip({"zeros.png": b"\0" * 20_000_000}), "expands far beyond"),
        "broken.zip": (b"PK\x03\x04" + b"\0" * 40, "not a readable zip archive"),
        # Found by the fuzzer: zipfile raised ValueError (negative seek), not BadZipFile.
        "mangled_header.zip": (
            _zip({"a.png": good, "b/c.png": good})[1:],
            "cannot read archive member",
        ),
        "fake.dcm": (b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 10, "no pixel data"),
        "truncated.dcm": (whole_dcm[:-3000], "cannot decode DICOM pixel data"),
        "good.dcm": (whole_dcm, None),
    }


# Inputs the fuzzers found, kept byte for byte (not made here): name -> expected error.
FOUND = {
    # atheris: a member with an empty name broke zipfile's is_dir() (IndexError).
    "found_by_atheris_nameless_member.zip": "archive entry without a name",
    # atheris: a TIFF whose strip offset is a float (TypeError in Pillow's loader).
    "found_by_atheris_float_strip_offset.tif": "not a readable image",
    # atheris: an unknown value representation in Columns (NotImplementedError in pydicom
    # when the element was first read).
    "found_by_atheris_unknown_vr.dcm": "damaged DICOM element",
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    expected = {name: error for name, error in FOUND.items() if (HERE / name).exists()}
    for name, (data, error) in cases().items():
        (HERE / name).write_bytes(data)
        expected[name] = error
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
