"""A contact sheet of the lung segmenter's outlines on X-rays that have no masks
(Actualmed by default), to check it by eye. The sheet shows dev images: write it
outside the repository and never commit it.

    python -m bench.lung_sheet --source Actualmed --out /tmp/lung_sheet.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from bench import DEFAULT_DATA
from models.dataset import load_examples
from models.lung.outline import draw_outline, lung_mask_at
from models.lung.segmenter import shipped
from models.readers import decode_grayscale

TILE = 160


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--source", default="Actualmed", help="part of the source_repo name")
    ap.add_argument("--out", default="/tmp/lung_sheet.png")
    ap.add_argument("--max", type=int, default=48)
    ap.add_argument("--cols", type=int, default=8)
    args = ap.parse_args()
    segmenter = shipped()
    picked = [e for e in load_examples(args.data, "xray") if args.source in e.source]
    picked = picked[: args.max]
    rows = -(-len(picked) // args.cols)
    sheet = Image.new("RGB", (args.cols * TILE, rows * (TILE + 14)), "black")
    draw = ImageDraw.Draw(sheet)
    fractions = []
    for k, ex in enumerate(picked):
        gray = decode_grayscale(ex.path)
        mask = lung_mask_at(gray, segmenter)
        fractions.append(float(mask.mean()))
        pic = draw_outline(Image.fromarray(gray).convert("RGB"), mask).resize((TILE, TILE))
        x, y = (k % args.cols) * TILE, (k // args.cols) * (TILE + 14)
        sheet.paste(pic, (x, y))
        label = "C" if ex.label else "N"
        draw.text((x + 2, y + TILE), f"{k} {label} lung {mask.mean():.2f}", fill="yellow")
    sheet.save(args.out)
    lab = np.array([e.label for e in picked])
    fr = np.array(fractions)
    print(f"{len(picked)} images -> {args.out}; mean lung fraction covid "
          f"{fr[lab == 1].mean():.3f}, non_covid {fr[lab == 0].mean():.3f}; "
          f"empty masks {(fr == 0).sum()}")  # fmt: skip


if __name__ == "__main__":
    main()
