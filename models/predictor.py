"""Batched inference with one saved model version, through TensorFlow or ONNX Runtime.

Both runtimes run the same thing: the version's pixel preparation in NumPy
(`models.pixel_views`, cut off the front of the model by `models.split`), then the
network on the prepared views, which returns P(covid) and the pooled features the
out-of-distribution check needs (`models.ood`), so that check costs no second pass.
Probabilities are temperature-calibrated with the version's stored temperature.

Images are cut into calls of `batch_size` rows. TensorFlow calls a `tf.function` with
that fixed batch shape (partial calls are padded), so the graph is traced once per
process. ONNX Runtime takes any batch size, so nothing is padded. With `streams` > 1
that many calls run at once from a small thread pool (both runtimes release the GIL in
their kernels; see models.batching for what it buys on a CPU), each preparing its own
pixels first.

`model` is the whole Keras model as trained (preparation in the graph): what heat maps
differentiate. The ONNX predictor loads it only when something asks for it. A network
whose head is linear in its pooled features also returns the heat maps
(models.gradcam.maps_output) from the same call: `predict_judge_and_map`.

A version trained on lung fields (models.lung.field, its card's `lung_crop`) is fed as
it was trained: the shipped segmenter, on this predictor's runtime, finds the lungs of
the full images, each is cut to its lung box before the preparation above, and its
heat map is put back into the full image's frame.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.calibration import apply_temperature
from models.onnx_session import onnx_session_options
from models.ood import OODModel, Verdict, judge
from models.pixel_views import View, prepare


def _folder(model_path: Path | str) -> Path:
    path = Path(model_path)
    return path if path.is_dir() else path.parent


class _Batched:
    """Chunking, calls in flight, calibration and the out-of-distribution verdicts;
    a runtime supplies `_run(views) -> (probs, features, maps or None)` for one call."""

    runtime = "?"
    # (input size, border crop) for models.gradcam.finish_maps; None: no maps to finish.
    map_frame: tuple[int, int] | None = None

    def _setup(self, folder: Path | None, views: tuple[View, ...], input_size: int,
               batch_size: int, temperature: float, streams: int) -> None:  # fmt: skip
        self.views = views
        self.input_size = input_size
        from models.lung.field import for_version

        # None for a version that sees whole images (and for an export under check).
        self.lung_field = for_version(folder, self.runtime)
        self.batch_size = batch_size
        self.temperature = temperature
        # None for versions trained before out-of-distribution calibration existed.
        self.ood: OODModel | None = OODModel.load(folder) if folder is not None else None
        # Created here, in the process that uses it: never inherited across a fork.
        self._pool = (
            ThreadPoolExecutor(streams, thread_name_prefix="model") if streams > 1 else None
        )

    def raw_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 1) float32 in 0..255 -> uncalibrated P(covid) (N,), features (N, D)."""
        return self.raw_outputs_with_maps(images)[:2]

    def raw_outputs_with_maps(self, images: np.ndarray, masks: np.ndarray | None = None):
        """Uncalibrated P(covid) (N,), features (N, D) and the heat maps before
        models.gradcam.finish_maps (N, h, w), or None when the network has none. `masks`:
        the full images' lung masks, when the caller has them (a lung-crop version)."""
        return self._outputs(self.as_trained(images, masks)[0])

    def as_trained(self, images: np.ndarray, masks: np.ndarray | None = None):
        """The images as the version was trained on them, and their lung boxes (None:
        the version sees whole images)."""
        if self.lung_field is None or len(images) == 0:
            return images, None
        return self.lung_field.crop(images, masks)

    def _outputs(self, images: np.ndarray):
        n = len(images)
        if n == 0:
            return np.zeros(0, dtype=np.float64), np.zeros((0, 0), dtype=np.float32), None
        chunks = [images[start : start + self.batch_size] for start in range(0, n, self.batch_size)]
        if self._pool is not None and len(chunks) > 1:
            outputs = list(self._pool.map(self._call, chunks))  # keeps the order
        else:
            outputs = [self._call(chunk) for chunk in chunks]
        maps = [m for _p, _f, m in outputs]
        return (
            np.concatenate([p for p, _f, _m in outputs]),
            np.concatenate([f for _p, f, _m in outputs]),
            None if any(m is None for m in maps) else np.concatenate(maps),
        )

    def _call(self, chunk: np.ndarray):
        p, f, m = self._run(prepare(chunk, self.views))
        m = None if m is None else np.asarray(m, dtype=np.float32)
        return np.asarray(p).reshape(-1), np.asarray(f, dtype=np.float32), m

    def _run(self, views: list[np.ndarray]):
        raise NotImplementedError

    def predict_with_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 1) float32 in 0..255 -> calibrated P(covid) (N,), features (N, D)."""
        probs, feats = self.raw_outputs(images)
        return apply_temperature(probs, self.temperature), feats

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 1) float32 in 0..255 -> (N,) calibrated P(covid)."""
        return self.predict_with_features(images)[0]

    def predict_and_judge(self, images: np.ndarray) -> tuple[np.ndarray, list[Verdict]]:
        """Probabilities and each image's out-of-distribution verdict."""
        probs, feats = self.predict_with_features(images)
        return probs, judge(self.ood, images, feats)

    def predict_judge_and_map(self, images: np.ndarray, masks: np.ndarray | None = None):
        """Probabilities, verdicts and each image's heat map in 0..1 (as
        models.gradcam.batch_explainer makes it), all from the one call; maps None when
        the network has no maps output (a head not linear in its pooled features, or
        an export made before maps were part of it). A lung-crop version's maps are put
        back into the full images' frame ((N, S, S)); `masks` are the full images' lung
        masks when the caller has them, so the segmenter runs once per batch."""
        from models.gradcam import finish_maps

        x, boxes = self.as_trained(images, masks)
        probs, feats, raw = self._outputs(x)
        probs = apply_temperature(probs, self.temperature)
        frame = self.map_frame
        maps = None if raw is None or frame is None else finish_maps(raw, *frame)
        if maps is not None and boxes is not None:
            from models.lung.crop import map_back

            maps = map_back(maps, boxes, self.input_size)
        return probs, judge(self.ood, images, feats), maps


class Predictor(_Batched):
    """TensorFlow: what trains, makes heat maps and scores on a GPU."""

    runtime = "tensorflow"

    def __init__(
        self,
        model_path: Path | str,
        batch_size: int = 32,
        temperature: float = 1.0,
        streams: int = 1,
    ):
        import keras
        import tensorflow as tf

        import models.layers  # noqa: F401 - registers the layers saved models may hold
        from models.split import split_model

        path = Path(model_path)
        folder = _folder(path)
        if path.is_dir():
            path = path / "model.keras"
        self.model = keras.models.load_model(path, compile=False)
        from models.lung.modalities import maps_wanted

        views, network = split_model(self.model, maps=maps_wanted(folder))
        self._setup(folder, views, int(self.model.input_shape[1]), batch_size, temperature,
                    streams)  # fmt: skip
        specs = [tf.TensorSpec((batch_size, *t.shape[1:]), tf.float32) for t in network.inputs]
        self._network = tf.function(
            lambda *v: network(list(v), training=False), input_signature=specs
        )
        if len(network.outputs) > 2:
            from models.gradcam import map_frame

            self.map_frame = map_frame(self.model)

    def _run(self, views: list[np.ndarray]):
        keep = len(views[0])
        if keep < self.batch_size:
            views = [np.concatenate([v, np.zeros((self.batch_size - keep, *v.shape[1:]), v.dtype)])
                     for v in views]  # fmt: skip
        p, f, *maps = self._network(*views)
        # Features come as float16 under mixed precision.
        m = np.asarray(maps[0], dtype=np.float32)[:keep] if maps else None
        return np.asarray(p)[:keep], np.asarray(f, dtype=np.float32)[:keep], m


class OnnxPredictor(_Batched):
    """ONNX Runtime on the CPU: the version's checked export (models.export_onnx)."""

    runtime = "onnx"

    def __init__(
        self,
        model_path: Path | str,
        batch_size: int = 8,
        temperature: float = 1.0,
        streams: int = 1,
        threads: int = 1,
        spinning: bool = False,
    ):
        from models.export_record import ONNX_FILE, RECORD_FILE

        folder = _folder(model_path)
        record = json.loads((folder / RECORD_FILE).read_text())
        self._open(folder / ONNX_FILE, record, folder, batch_size, temperature, streams, threads,
                   spinning)  # fmt: skip
        self._model = None
        self._model_file = folder / "model.keras"

    @classmethod
    def from_files(cls, onnx_file: Path, record: dict, model=None, batch_size: int = 8,
                   threads: int = 0) -> OnnxPredictor:  # fmt: skip
        """A predictor on an export not yet in place (the check before it is kept);
        uncalibrated, without out-of-distribution model."""
        self = cls.__new__(cls)
        self._open(onnx_file, record, None, batch_size, 1.0, 1, threads or 1, False)
        self._model, self._model_file = model, None
        return self

    def _open(self, onnx_file, record, folder, batch_size, temperature, streams, threads,
              spinning) -> None:  # fmt: skip
        import onnxruntime as ort

        from models.export_record import views_of

        self.session = ort.InferenceSession(
            str(onnx_file), onnx_session_options(threads, spinning),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._setup(folder, views_of(record), int(record["input_size"]), batch_size, temperature,
                    streams)  # fmt: skip
        self.threads = threads
        # Exports made before the maps output have two outputs (and no map_frame).
        frame = record.get("map_frame")
        if len(self.session.get_outputs()) > 2 and frame:
            self.map_frame = (int(frame[0]), int(frame[1]))

    def _run(self, views: list[np.ndarray]):
        p, f, *maps = self.session.run(None, dict(zip(self._inputs, views, strict=True)))
        return p, f, maps[0] if maps else None

    @property
    def model(self):
        """The Keras model (heat maps differentiate it), loaded on first use."""
        if self._model is None:
            import keras

            import models.layers  # noqa: F401

            self._model = keras.models.load_model(self._model_file, compile=False)
        return self._model
