"""Export the shipped lung segmenter for ONNX Runtime again (models.lung.export), checked
on real dev X-rays: how models/default/lung/lung.onnx was made.

    python -m models.lung.reexport --data ../shared/data
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.lung.export import ONNX_FILE, RECORD_FILE
from models.lung.segmenter import LungSegmenter, default_dir
from models.preprocess import load_for_model


def main(argv: list[str] | None = None) -> int:
    """Export the shipped segmenter again, checked on `--n` dev X-rays."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args(argv)
    folder = args.folder or default_dir()
    for name in (ONNX_FILE, RECORD_FILE):
        (folder / name).unlink(missing_ok=True)
    paths = sorted((Path(args.data) / "xray" / "dev").rglob("*.png"))
    picked = paths[:: max(len(paths) // args.n, 1)][: args.n]
    segmenter = LungSegmenter(folder, batch_size=len(picked), runtime="onnx")
    segmenter.masks(np.stack([load_for_model(p, 256) for p in picked]))
    print((folder / RECORD_FILE).read_text())
    return 0 if segmenter.runtime == "onnx" else 1


if __name__ == "__main__":
    raise SystemExit(main())
