"""Where do the shipped models look? Grad-CAM mass near the image border.

For each modality, the shipped model's Grad-CAM on its own held-out test patients: the
share of the heat map's mass that falls in the outer `margin` of the image (10% of each
side: 36% of the area), per label. A model that reads the lungs puts less than the
area share there; one that reads paper-figure borders, letters and arrows puts more.
Prints one line per modality and label; writes bench/out/gradcam.json.

    python -m bench.gradcam --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench import OUT


def border_share(cam: np.ndarray, size: int, margin: float) -> float:
    heat = np.asarray(
        Image.fromarray(cam.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR
        )
    )
    m = int(round(size * margin))
    inner = heat[m : size - m, m : size - m].sum()
    total = heat.sum()
    return float(1 - inner / total) if total > 0 else float("nan")


def measure(modality: str, data: Path, margin: float) -> dict:
    from models.gradcam import explainer
    from models.version import reload_version

    v = reload_version(Path("models/default") / modality, data)
    size, examples, x = v.input_size, v.examples, v.x
    explain = explainer(v.model)
    _, _, te = v.split
    shares: dict[str, list[float]] = {"covid": [], "non_covid": []}
    for i in te:
        _, cam = explain(x[i])
        label = "covid" if examples[i].label else "non_covid"
        shares[label].append(border_share(cam, size, margin))
    area = 1 - (1 - 2 * margin) ** 2
    out = {"area_share": round(area, 3)}
    for label, vals in shares.items():
        v = np.asarray([s for s in vals if np.isfinite(s)])
        out[label] = {"n": int(len(v)), "mean_border_share": round(float(v.mean()), 3),
                      "share_over_half": round(float(np.mean(v > 0.5)), 3)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--margin", type=float, default=0.1)
    args = ap.parse_args(argv)
    report = {m: measure(m, Path(args.data), args.margin) for m in ("xray", "ct")}
    for m, r in report.items():
        for label in ("covid", "non_covid"):
            v = r[label]
            print(f"{m:5} {label:9} n={v['n']:3}  Grad-CAM mass in the outer {args.margin:.0%}: "
                  f"{v['mean_border_share']:.3f} (area {r['area_share']:.2f}); images with "
                  f"more than half there: {v['share_over_half']:.3f}")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "gradcam.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
