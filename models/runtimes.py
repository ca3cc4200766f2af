"""Which runtime scores a model version, and the predictor that runs it.

On a CPU, ONNX Runtime scores a version's checked export (models.export_onnx) faster
than TensorFlow with the same scores (docs/benchmarks.md measures by how much);
TensorFlow stays what trains, what makes heat maps (gradients) and what scores on a GPU.
`SCANQ_RUNTIME` overrides the choice: `auto` (ONNX Runtime on a CPU, TensorFlow on a
GPU), `tensorflow`, or `onnx`.

A version without an export (one saved before exports existed) gets it on first load:
its first batch of real images is scored by TensorFlow, the export is made from it in
the background (in a process of its own: models.export_onnx.export_apart) and checked
against those very scores, and the batches after it use the export once it passed. A
version whose export was refused (a layer that does not convert, scores beyond the
tolerance) keeps TensorFlow, and the reason is logged and kept in its record.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from models.onnx_session import onnx_threads
from scanq.settings import RUNTIMES

log = logging.getLogger(__name__)


def choose(setting: str, device: str) -> str:
    """ "tensorflow" or "onnx" for a `SCANQ_RUNTIME` value on "cpu" or "gpu"."""
    if setting not in RUNTIMES:
        raise ValueError(f"unknown runtime {setting!r}; choose from {', '.join(RUNTIMES)}")
    if setting == "auto":
        return "tensorflow" if device == "gpu" else "onnx"
    return setting


def load_predictor(
    folder: Path | str,
    runtime: str,
    rows: int,
    temperature: float,
    streams: int,
    threads: int | None = None,
):
    """A predictor for the version at `folder` on the chosen runtime ("tensorflow" or
    "onnx", from `choose`); for "onnx", its export, or TensorFlow when there is none
    that passed its check (made on first use when it was never tried)."""
    from models.predictor import OnnxPredictor, Predictor

    folder = Path(folder)
    if runtime == "tensorflow":
        return Predictor(folder, rows, temperature, streams)
    from models.export_onnx import onnx_missing

    missing = onnx_missing()
    if missing:
        log.warning("%s: scoring with TensorFlow: %s", folder, missing)
        return Predictor(folder, rows, temperature, streams)
    from models.export_record import read_record

    record = read_record(folder)
    threads = onnx_threads(streams, threads)
    if record is None:
        return ExportOnFirstBatch(folder, rows, temperature, streams, threads)
    if record["status"] != "ok":
        log.warning("%s: scoring with TensorFlow: export refused: %s", folder, record["reason"])
        return Predictor(folder, rows, temperature, streams)
    return OnnxPredictor(folder, rows, temperature, streams, threads)


class ExportOnFirstBatch:
    """TensorFlow for a version that has no export yet, until its export is ready. The
    first batch with real images starts the export, checked on those images (the
    warm-up's blank trace frame would prove nothing), in a background thread, so no
    batch waits for it or spends its time limit on it; the batches after it use the
    export once it passed. Several processes that load the same version make one export
    between them (models.export_onnx locks)."""

    def __init__(self, folder: Path, rows: int, temperature: float, streams: int, threads: int):
        from models.predictor import Predictor

        self.folder, self.rows, self.temperature = folder, rows, temperature
        self.streams, self.threads = streams, threads
        self._tf = Predictor(folder, rows, temperature, streams)
        self.active = self._tf
        self._lock = threading.Lock()
        self._tried = False
        self.exported = threading.Event()  # set once the export was tried, kept or not

    def __getattr__(self, name):  # input_size, model, ood, views, runtime...
        return getattr(self.active, name)

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.active.predict_with_features(images)
        self._export_once(images)
        return out

    def predict_judge_and_map(self, images: np.ndarray, masks: np.ndarray | None = None):
        out = self.active.predict_judge_and_map(images, masks)
        self._export_once(images)
        return out

    def _export_once(self, images: np.ndarray) -> None:
        from models.ood import blank_frames

        real = np.asarray(images)[~blank_frames(np.asarray(images))]
        with self._lock:
            if self._tried or not len(real):
                return
            self._tried = True
        threading.Thread(target=self._export_then_signal, args=(real.copy(),),
                         name="onnx-export", daemon=True).start()  # fmt: skip

    def _export_then_signal(self, images: np.ndarray) -> None:
        try:
            self._export(images)
        except Exception:  # scoring goes on with TensorFlow
            log.exception("%s: scoring with TensorFlow: the export failed", self.folder)
        finally:
            self.exported.set()

    def _export(self, images: np.ndarray) -> None:
        from models.export_onnx import export_apart
        from models.predictor import OnnxPredictor

        try:
            record = export_apart(
                self.folder, images, f"the first {len(images)} images this version scored",
                self.temperature,
            )  # fmt: skip
        except OSError as exc:  # a read-only version folder: no lock, no export
            log.warning("%s: scoring with TensorFlow: cannot export here: %s", self.folder, exc)
            return
        if record["status"] == "ok":
            self.active = OnnxPredictor(self.folder, self.rows, self.temperature, self.streams,
                                        self.threads)  # fmt: skip
            log.info("%s: exported for ONNX Runtime in %.1f s (largest probability "
                     "difference %.2g)", self.folder, record["seconds"],
                     record["check"]["max_probability_difference"])  # fmt: skip
        else:
            log.warning("%s: scoring with TensorFlow: %s", self.folder, record["reason"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_with_features(images)[0]

    def predict_and_judge(self, images: np.ndarray):
        from models.ood import judge

        probs, feats = self.predict_with_features(images)
        return probs, judge(self.active.ood, images, feats)
