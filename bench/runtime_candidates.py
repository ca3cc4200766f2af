"""Which CPU runtime, at which precision, scores the shipped X-ray network fastest with
the same probabilities: the measurements behind the choice of ONNX Runtime in fp32.

On the network after the NumPy pixel preparation (what every runtime runs), at the
worker's 8 rows per call, on real dev X-rays: TensorFlow, ONNX Runtime in fp32,
ONNX Runtime with a static int8 export (QDQ, per-channel weights, activations
calibrated on other dev images), and OpenVINO in fp32 and bf16 when it is installed
(`pip install openvino`; not a dependency of ScanQ). Each variant runs all images in
turn, `--rounds` times round, so a slow minute hits every variant alike; medians are
reported, by wall time with the cores to itself (`--threads`, default all) and by CPU
time with one thread (the work per image, whatever the threading). Each variant's
largest and median difference of P(covid) from TensorFlow's is beside it: a runtime is
only a candidate if it stays within the export check's tolerance
(models.export_onnx.PROBABILITY_TOLERANCE).

    python -m bench.runtime_candidates
    python -m bench.runtime_candidates --rounds 5 --n 256

Writes bench/out/runtime_candidates.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import DEFAULT_DATA, OUT

XRAY = Path(__file__).resolve().parents[1] / "models" / "default" / "xray"
ROWS = 8


def _images(data: Path, n: int, skip: int) -> np.ndarray:
    from models.preprocess import load_for_model

    files = sorted((data / "xray" / "dev").rglob("*.png"))
    np.random.default_rng(0).shuffle(files)
    return np.stack([load_for_model(f, 256) for f in files[skip : skip + n]])


def _tensorflow(threads: int) -> Callable:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)
    from models.predictor import Predictor

    p = Predictor(XRAY, ROWS)
    return lambda views: np.asarray(p._run(views)[0]).ravel()


def _onnx(path: Path, threads: int) -> Callable:
    import onnxruntime as ort

    from models.onnx_session import onnx_session_options

    s = ort.InferenceSession(str(path), onnx_session_options(threads),
                             providers=["CPUExecutionProvider"])  # fmt: skip
    names = [i.name for i in s.get_inputs()]
    return lambda views: np.asarray(s.run(None, dict(zip(names, views, strict=True)))[0]).ravel()


def _openvino(precision: str, threads: int) -> Callable | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(
        str(XRAY / "model.onnx"), "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
         "INFERENCE_NUM_THREADS": threads},
    )  # fmt: skip
    request = compiled.create_infer_request()
    first = compiled.outputs[0]
    return lambda views: np.asarray(request.infer(list(views))[first]).ravel()


def _int8_export(calibration: list[list[np.ndarray]], folder: Path) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in ort.InferenceSession(str(XRAY / "model.onnx")).get_inputs()]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([dict(zip(names, v, strict=True)) for v in calibration])

        def get_next(self):
            return next(self._it, None)

    pre, out = folder / "pre.onnx", folder / "int8.onnx"
    with contextlib.chdir(folder):  # the quantiser leaves its scratch files in the cwd
        quant_pre_process(str(XRAY / "model.onnx"), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SCANQ_SHARED_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--n", type=int, default=128, help="images timed (and compared)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    from models.export_onnx import PROBABILITY_TOLERANCE
    from models.export_record import read_record, views_of
    from models.pixel_views import prepare

    views_spec = views_of(read_record(XRAY))
    images = _images(Path(args.data), args.n, 0)
    chunks = [prepare(images[i : i + ROWS], views_spec) for i in range(0, len(images), ROWS)]
    calibration = [
        prepare(c, views_spec) for c in np.split(_images(Path(args.data), 64, args.n), 8)
    ]
    tmp = Path(tempfile.mkdtemp(prefix="scanq-candidates-"))
    int8 = _int8_export(calibration, tmp)
    makers = {
        "tensorflow": _tensorflow,
        "onnx fp32": lambda t: _onnx(XRAY / "model.onnx", t),
        "onnx int8 (static QDQ)": lambda t: _onnx(int8, t),
        "openvino fp32": lambda t: _openvino("f32", t),
        "openvino bf16": lambda t: _openvino("bf16", t),
    }
    # TensorFlow's threads are fixed at its first use: its wall and CPU figures come
    # from one setting (all cores), the per-CPU figure from the time that setting used.
    runs = {name: make(args.threads) for name, make in makers.items()}
    runs = {name: run for name, run in runs.items() if run is not None}
    single = {name: make(1) for name, make in makers.items() if name != "tensorflow"}
    single = {name: run for name, run in single.items() if run is not None}
    reference = np.concatenate([runs["tensorflow"](c) for c in chunks])
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for c in chunks:
                run(c)
            wall[name].append((time.perf_counter() - t0) * 1000 / len(images))
            if name == "tensorflow":
                cpu[name].append((time.process_time() - c0) * 1000 / len(images))
        for name, run in single.items():
            c0 = time.process_time()
            for c in chunks:
                run(c)
            cpu[name].append((time.process_time() - c0) * 1000 / len(images))
    report = {"images": len(images), "rows_per_call": ROWS, "threads": args.threads,
              "tolerance": PROBABILITY_TOLERANCE, "variants": {}}  # fmt: skip
    tf_wall = float(np.median(wall["tensorflow"]))
    for name, run in runs.items():
        diff = np.abs(np.concatenate([run(c) for c in chunks]) - reference)
        w, c = float(np.median(wall[name])), float(np.median(cpu[name]))
        report["variants"][name] = {
            "wall_ms_per_image": round(w, 2), "cpu_ms_per_image": round(c, 2),
            "speed_over_tensorflow": round(tf_wall / w, 2),
            "max_probability_difference": float(diff.max()),
            "median_probability_difference": float(np.median(diff)),
            "within_tolerance": bool(diff.max() <= PROBABILITY_TOLERANCE),
            "rounds_wall_ms": [round(x, 2) for x in wall[name]],
        }  # fmt: skip
        print(f"{name:24s} {w:6.2f} ms/img ({tf_wall / w:4.2f}x TF), {c:6.2f} CPU-ms/img "
              f"({'one thread' if name != 'tensorflow' else f'{args.threads} threads'}), "
              f"max |dp| {diff.max():.2g}, median {np.median(diff):.2g}")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "runtime_candidates.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
