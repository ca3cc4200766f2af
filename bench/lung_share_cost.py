"""What `lung_heat_share` costs the worker per scored X-ray, per runtime (TensorFlow and
ONNX Runtime), on the shipped X-ray model and real dev images: scoring alone (the
scoring call, whose network now also returns the heat maps), scoring with the share as
the worker makes it (maps from that same call + the lung segmenter on the same runtime),
and, for reference, the share by the gradient path (models.gradcam.batch_explainer: a
second, forward and backward, Keras pass) that it replaces. Also what the shares are on
those images (median, and how many fall under the warning's one half), per source.

    python -m bench.lung_share_cost --n 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import DEFAULT_DATA
from models.dataset import load_examples
from models.lung.segmenter import shipped
from models.lung.share import WARN_BELOW, lung_heat_shares, shares_for_scoring
from models.preprocess import load_for_model
from models.runtimes import load_predictor
from scanq.settings import get_settings


def _best_of(fn, repeats: int) -> float:
    return _interleaved([fn], repeats)[0]


def _interleaved(fns: list, repeats: int) -> list[float]:
    """Best time of each function over `repeats` rounds that run them one after the
    other: on a shared machine, a busy spell then slows every contender alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def _with_share(predictor, batch: np.ndarray) -> list:
    """What worker.scoring does for an X-ray batch with the lung share on."""
    _probs, _verdicts, maps = predictor.predict_judge_and_map(batch)
    return shares_for_scoring(predictor, batch, maps)


def _measure(runtime: str, folder, examples: list, args) -> np.ndarray:
    """Print the costs on one runtime; the shares it stored."""
    predictor = load_predictor(folder, runtime, args.batch, 1.0, streams=1)
    size = predictor.input_size
    x = np.stack([load_for_model(e.path, size) for e in examples])
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    segmenter = shipped(runtime=predictor.runtime)
    predictor.predict_and_judge(batches[0])  # warm up every graph / session once
    _with_share(predictor, batches[0])
    per = lambda s: 1000 * s / len(x)  # noqa: E731
    score, both, seg = _interleaved(
        [lambda: [predictor.predict_and_judge(b) for b in batches],
         lambda: [_with_share(predictor, b) for b in batches],
         lambda: [segmenter.masks(b) for b in batches]],
        args.repeats,
    )  # fmt: skip
    print(f"{predictor.runtime}: {len(x)} X-rays at {size} px, batches of {args.batch}: "
          f"scoring {per(score):.1f} ms/image; scoring + lung_heat_share {per(both):.1f} "
          f"ms/image (segmenter {per(seg):.1f}, on {segmenter.runtime}): "
          f"{both / score:.2f}x scoring alone")  # fmt: skip
    if predictor.runtime == "tensorflow":
        model = predictor.model
        lung_heat_shares(model, batches[0], segmenter)
        grad = _best_of(lambda: [lung_heat_shares(model, b, segmenter) for b in batches],
                        args.repeats)  # fmt: skip
        print(f"  the share by the gradient path (a second Keras pass) cost "
              f"{(score + grad) / score:.2f}x scoring alone")  # fmt: skip
    return np.array([v for b in batches for v in _with_share(predictor, b)], dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runtimes", default="tensorflow,onnx")
    args = ap.parse_args()
    folder = get_settings().model_dir / "xray"
    every = load_examples(args.data, "xray")
    examples = [every[i] for i in np.random.default_rng(0).permutation(len(every))[: args.n]]
    for runtime in args.runtimes.split(","):
        shares = _measure(runtime, folder, examples, args)
    for source in sorted({e.source for e in examples}):
        sel = np.array([e.source == source for e in examples])
        print(f"{source}: {sel.sum()} X-rays, lung_heat_share median "
              f"{np.nanmedian(shares[sel]):.3f}, under {WARN_BELOW} in "
              f"{np.mean(shares[sel] < WARN_BELOW):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
