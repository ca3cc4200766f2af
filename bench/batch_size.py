"""Raw throughput of each backbone at several model batch sizes, on this machine.

The worker pads every model call to one fixed batch shape (`models.batching`); this
measures which shape is fastest per backbone, the evidence behind that table. Weights do
not change speed, so untrained models are timed (no weights needed).

    python -m bench.batch_size                                 # all backbones, CPU sizes
    python -m bench.batch_size --backbones efficientnet_lite0 --sizes 8,16,32

Writes bench/out/batch_size.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bench import OUT

NEAR = 0.05  # this machine's run-to-run noise: sizes this close to the fastest tie


def images_per_second(model, batch: int, size: int, seconds: float) -> float:
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 1)).astype("float32")
    model.predict_on_batch(x)  # trace this shape once
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        model.predict_on_batch(x)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    from models.backbones import BACKBONES, build_classifier
    from worker.runtime import configure_tensorflow

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backbones", default=",".join(b for b in BACKBONES if b != "smallcnn"))
    ap.add_argument("--sizes", default="4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    device = configure_tensorflow()  # the worker's own set-up: BLAS threads, GPU options
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for name in args.backbones.split(","):
        size = BACKBONES[name].default_size
        model, _f, _p = build_classifier(name, size, weights=None, augment=False)
        rates = {b: round(images_per_second(model, b, size, args.seconds), 1) for b in sizes}
        best = max(rates, key=rates.get)
        # What models.batching.CPU_BATCH holds: the smallest batch near the fastest.
        choice = min(b for b in sizes if rates[b] >= (1 - NEAR) * rates[best])
        row = {"backbone": name, "input_size": size, "img_per_s": rates, "best": best,
               "choice": choice}  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "cpus": os.cpu_count(), "results": results}
    (OUT / "batch_size.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
