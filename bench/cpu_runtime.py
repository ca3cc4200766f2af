"""TensorFlow against ONNX Runtime on the raw model call, and ONNX Runtime's thread
choices, in one process with the measurements interleaved.

For each model (the shipped X-ray and CT models, or untrained backbones, exported here
as a worker would on first load): images/s of the predictor the worker uses (pixel
preparation and the network, at the worker's rows per call), for TensorFlow with one
and two calls in flight, and for ONNX Runtime under each thread layout: calls in flight
x intra-op threads per call, with and without spinning between calls. Each variant runs
for `--seconds` in turn, `--rounds` times round, so a slow minute of a shared machine
hits every variant alike; the medians are reported, with every round kept.

    python -m bench.cpu_runtime                          # the shipped X-ray and CT models
    python -m bench.cpu_runtime --models efficientnet_lite0,mobilenetv2,resnet50
    python -m bench.cpu_runtime --layouts 1x2,2x1        # ONNX Runtime layouts only

Writes bench/out/cpu_runtime.json; prints one line per model and variant, and per model
`onnx/tf = R` (the best ONNX layout over TensorFlow with the worker's calls in flight),
by wall time and by this process's CPU time.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench import DEFAULT_DATA, OUT, call_rate

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"


def model_folder(name: str, tmp: Path, images: dict[str, list[Path]]) -> tuple[Path, str, str]:
    """(version folder with a checked export, modality, backbone) for a shipped model
    ("xray", "ct") or an untrained backbone (speed does not depend on the weights)."""
    from models.export_onnx import export_version
    from models.export_record import read_record
    from models.preprocess import load_for_model

    if name in ("xray", "ct"):
        folder = SHIPPED / name
        card = json.loads((folder / "card.json").read_text())
        if read_record(folder) is None:
            raise SystemExit(f"{folder} has no current export: python -m models.reexport")
        return folder, name, card["backbone"]
    from models.backbones import BACKBONES, build_classifier

    size = BACKBONES[name].default_size
    folder = tmp / name
    folder.mkdir()
    model, _f, _p = build_classifier(name, size, weights=None, augment=False)
    model.save(folder / "model.keras")
    check = np.stack([load_for_model(p, size) for p in images["xray"][:8]])
    record = export_version(folder, check, "8 dev X-rays")
    if record["status"] != "ok":
        print(f"{name}: export refused: {record['reason']}")
    return folder, "xray", name


def measure(folder: Path, modality: str, backbone: str, images: dict[str, list[Path]],
            layouts: list[tuple[int, int]], seconds: float, rounds: int) -> dict:  # fmt: skip
    from models.batching import call_plan
    from models.predictor import OnnxPredictor, Predictor
    from models.preprocess import load_for_model

    rows = call_plan(backbone, "cpu", 32).rows
    tf = Predictor(folder, rows)
    batch = np.stack([load_for_model(p, tf.input_size) for p in images[modality][:rows]])
    variants = {"tensorflow 1 call": (tf.raw_outputs, 1), "tensorflow 2 calls": (tf.raw_outputs, 2)}
    if (folder / "model.onnx").exists():
        for streams, threads in layouts:
            for spinning in (False, True):
                p = OnnxPredictor(folder, rows, 1.0, 1, threads, spinning)
                name = f"onnx {streams} x {threads} threads{' spinning' if spinning else ''}"
                variants[name] = (p.raw_outputs, streams)
    for call, _s in variants.values():
        call(batch)  # build, trace, first allocations
    rounds_out: dict[str, list[float]] = {k: [] for k in variants}
    per_cpu: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (call, streams) in variants.items():
            wall, cpu = call_rate(lambda call=call: call(batch), len(batch), streams, seconds)
            rounds_out[name].append(round(wall, 2))
            per_cpu[name].append(round(cpu, 2))
    medians = {k: round(float(np.median(v)), 2) for k, v in rounds_out.items()}
    cpu_medians = {k: round(float(np.median(v)), 2) for k, v in per_cpu.items()}
    onnx = {k: v for k, v in medians.items() if k.startswith("onnx")}
    best = max(onnx, key=onnx.get) if onnx else None
    return {
        "model": folder.name, "modality": modality, "backbone": backbone,
        "input_size": tf.input_size, "rows": rows, "img_per_s_median": medians,
        "img_per_s_rounds": rounds_out, "img_per_cpu_s_median": cpu_medians,
        "img_per_cpu_s_rounds": per_cpu, "best_onnx": best,
        "onnx_over_tf": round(onnx[best] / medians["tensorflow 2 calls"], 3) if best else None,
        "onnx_over_tf_per_cpu_s": round(cpu_medians[best] / cpu_medians["tensorflow 2 calls"], 3)
        if best else None,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SCANQ_SHARED_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--models", default="xray,ct", help="xray, ct, or backbone names")
    ap.add_argument("--layouts", default="1x2,2x1,2x2",
                    help="ONNX Runtime: calls in flight x threads per call")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=4.0, help="each variant, each round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    images = {m: sorted((Path(args.data) / m / "dev").rglob("*.png"))[::7] for m in ("xray", "ct")}
    layouts = [tuple(int(x) for x in lay.split("x")) for lay in args.layouts.split(",")]
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="scanq-cpu-runtime-"))
    try:
        for name in args.models.split(","):
            folder, modality, backbone = model_folder(name.strip(), tmp, images)
            r = measure(folder, modality, backbone, images, layouts, args.seconds, args.rounds)
            results.append(r)
            head = f"{r['model']} ({r['backbone']} @ {r['input_size']}, {r['rows']} rows)"
            for k, v in r["img_per_s_median"].items():
                print(f"{head}: {k}: {v} img/s (rounds {r['img_per_s_rounds'][k]}), "
                      f"{r['img_per_cpu_s_median'][k]} img per CPU-s", flush=True)  # fmt: skip
            print(f"{r['model']}: onnx/tf = {r['onnx_over_tf']} ({r['best_onnx']}; per CPU-s "
                  f"{r['onnx_over_tf_per_cpu_s']})", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count()}, "results": results}
    (OUT / "cpu_runtime.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {OUT / 'cpu_runtime.json'}")


if __name__ == "__main__":
    main()
