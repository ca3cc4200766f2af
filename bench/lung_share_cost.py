"""What `lung_heat_share` costs the worker per scored X-ray: the batched heat map
(models.gradcam.batch_explainer) and the lung segmenter, against the scoring call
itself (models.predictor), on the shipped X-ray model and real dev images; and what the
shares are on those images (median, and how many fall under the warning's one half),
per source.

    python -m bench.lung_share_cost --n 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import DEFAULT_DATA
from models.dataset import load_examples
from models.lung.segmenter import shipped
from models.lung.share import WARN_BELOW, lung_heat_shares
from models.predictor import Predictor
from models.preprocess import load_for_model
from scanq.settings import get_settings


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    folder = get_settings().model_dir / "xray"
    predictor = Predictor(folder, batch_size=args.batch)
    size = predictor.input_size
    every = load_examples(args.data, "xray")
    examples = [every[i] for i in np.random.default_rng(0).permutation(len(every))[: args.n]]
    x = np.stack([load_for_model(e.path, size) for e in examples])
    segmenter = shipped()
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    # warm up every graph once
    predictor.predict_and_judge(batches[0])
    lung_heat_shares(predictor.model, batches[0], segmenter)
    score = _best_of(lambda: [predictor.predict_and_judge(b) for b in batches], args.repeats)
    share = _best_of(lambda: [lung_heat_shares(predictor.model, b, segmenter) for b in batches],
                     args.repeats)  # fmt: skip
    seg = _best_of(lambda: [segmenter.masks(b) for b in batches], args.repeats)
    per = lambda s: 1000 * s / len(x)  # noqa: E731
    print(f"{len(x)} X-rays at {size} px, batches of {args.batch}: scoring {per(score):.1f} "
          f"ms/image; lung_heat_share {per(share):.1f} ms/image (of which the segmenter "
          f"{per(seg):.1f}); scoring with the share costs {(score + share) / score:.2f}x "
          "scoring alone")  # fmt: skip
    shares = np.array([v for b in batches for v in lung_heat_shares(predictor.model, b, segmenter)],
                      dtype=float)  # fmt: skip
    for source in sorted({e.source for e in examples}):
        sel = np.array([e.source == source for e in examples])
        print(f"{source}: {sel.sum()} X-rays, lung_heat_share median "
              f"{np.nanmedian(shares[sel]):.3f}, under {WARN_BELOW} in "
              f"{np.mean(shares[sel] < WARN_BELOW):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
