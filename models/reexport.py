"""Export a saved version again for ONNX Runtime, checked on its own validation images
(its patient split re-derived from the data it was trained on), and record the check in
its card: how the shipped models' exports were made.

    python -m models.reexport models/default/xray --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from models.export_onnx import export_version
from models.export_record import ONNX_FILE, RECORD_FILE, card_entry


def validation_images(folder: Path, data: Path | str) -> np.ndarray:
    """The version's validation images (models.version.reload_version)."""
    from models.version import reload_version

    version = reload_version(folder, data)
    return version.x[version.split[1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--data", required=True, help="the data the version was trained on")
    args = ap.parse_args(argv)
    for name in (ONNX_FILE, RECORD_FILE):
        (args.folder / name).unlink(missing_ok=True)
    images = validation_images(args.folder, args.data)
    record = export_version(args.folder, images, "its validation images")
    card_path = args.folder / "card.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        card["cpu_runtime"] = card_entry(record)
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    print(json.dumps(card_entry(record), indent=2))
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
