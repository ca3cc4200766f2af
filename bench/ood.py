"""Measure the out-of-distribution flag of the shipped models for several k.

For each modality: calibrate on the model's own training + validation patients (as
training does), then count flags on its held-out test patients (in distribution: should
be about 1%) and on sets that are not its scans: the other modality, photographs, text
and forms, noise, blank frames, rotated and inverted test scans. Repeated for several k
(neighbours) so the choice of k rests on a measurement. Prints one table per modality
and writes bench/out/ood.json.

    python -m bench.ood --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench import OUT
from models.ood_calibration import featurize, fit_and_measure, other_modality_inputs


def measure(modality: str, data: Path, ks: list[int]) -> dict:
    from models.dataset import split_groups
    from models.version import reload_version

    v = reload_version(Path("models/default") / modality, data)
    tr, va, te = v.split
    other = other_modality_inputs(data, modality, v.input_size)
    featured = featurize(v.model, v.x, te, other)  # once: only the fit depends on k
    groups, fit_idx = split_groups(v.examples), np.concatenate([tr, va])
    by_k = {}
    for k in ks:
        _, section = fit_and_measure(featured, groups, fit_idx, k=k)
        by_k[k] = {"calibration_leave_patient_out": section["calibration_flag_rate"]}
        by_k[k] |= {name: r["rate"] for name, r in section["flag_rates"].items()}
    n = {name: len(inputs) for name, (inputs, _f) in featured.sets.items()}
    return {"n": n, "by_k": by_k}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--k", default="1,3,5,10,20")
    ap.add_argument("--modality", default="xray,ct")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.k.split(",")]
    report = {m: measure(m, Path(args.data), ks) for m in args.modality.split(",")}
    for m, r in report.items():
        names = list(next(iter(r["by_k"].values())))
        print(f"\n{m}: flag rate per set (n: {r['n']})")
        print("k    " + " ".join(f"{n[:14]:>14}" for n in names))
        for k, rates in r["by_k"].items():
            print(f"{k:<4} " + " ".join(f"{rates[n]:>14.3f}" for n in names))
    OUT.mkdir(exist_ok=True)
    (OUT / "ood.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
