"""The shipped lung segmenter, loaded lazily in the process that uses it.

`LungSegmenter.masks` takes the images the classifiers take ((N, S, S, 1) float32 0..255,
stretched square by models.preprocess) at any S and gives boolean lung masks at S.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.lung.export import WEIGHTS

THRESHOLD = 0.5
# Images per network call, by runtime: each one's fastest on a CPU (docs/benchmarks.md).
ROWS = {"onnx": 8, "tensorflow": 32}


def default_dir() -> Path:
    """models/default/lung beside the default classifiers (SCANQ_MODEL_DIR moves both)."""
    from scanq.settings import get_settings

    return Path(get_settings().model_dir) / "lung"


def two_lungs(mask: np.ndarray) -> np.ndarray:
    """The mask's two largest connected regions, dropping any under a tenth of the
    largest: the net marks the odd letter or marker outside the chest as lung (seen on
    the Actualmed contact sheet), and those blobs would count in every lung figure."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= 0.1 * sizes.max()]
    return np.isin(labels, keep)


class LungSegmenter:
    """The shipped U-Net, run as the classifier of the same worker is: by TensorFlow, or
    on a CPU by ONNX Runtime (`runtime="onnx"`) from `lung.onnx` beside `lung.keras`
    (shipped, or made and checked on the first batch). The grey-level preparation
    (resize to the net's size, equalisation) is NumPy (models.pixel_views) for both, so
    they only differ by the network's float rounding."""

    def __init__(
        self,
        folder: Path | str | None = None,
        batch_size: int | None = None,
        runtime: str = "tensorflow",
    ):
        self.folder = Path(folder) if folder else default_dir()
        self._batch_size = batch_size
        self.runtime = "tensorflow"
        self._model = self._network_model = self._call = self._session = None
        self._want_onnx = runtime == "onnx"
        if self._want_onnx:
            from models.lung.export import current_export

            self._use_onnx(current_export(self.folder))
        # With a checked export, Keras (and TensorFlow) is never loaded in this process.
        if self._session is not None:
            self.size = int(self._session.get_inputs()[0].shape[1])
        else:
            self.size = int(self.model.input_shape[1])

    @property
    def model(self):
        """The Keras U-Net as trained (equalisation in the graph), loaded on first use."""
        if self._model is None:
            import keras

            import models.layers  # noqa: F401 - registers HistogramEqualization

            self._model = keras.models.load_model(self.folder / WEIGHTS, compile=False)
        return self._model

    @property
    def network(self):
        """The network after the in-model equalisation: what both runtimes run (named,
        so that its export names the same nodes in every process)."""
        if self._network_model is None:
            import keras

            m = self.model
            self._network_model = keras.Model(
                m.get_layer("equalize").output, m.output, name="lung_network"
            )
        return self._network_model

    def _use_onnx(self, path: Path | None) -> None:
        if path is None:
            return
        from models.lung.export import open_session

        self._session, self.runtime, self._want_onnx = open_session(path), "onnx", False

    def prepared(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 1) 0..255 -> the network's input: resized to its size, equalised."""
        from models.pixel_views import equalize, resize

        return equalize(resize(np.asarray(images, np.float32), self.size, self.size, False))

    def _network_tf(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if self._call is None:
            spec = tf.TensorSpec((None, self.size, self.size, 1), tf.float32)
            self._call = tf.function(lambda v: self.network(v, training=False),
                                     input_signature=[spec])  # fmt: skip
        return self._call(x).numpy()

    def _network(self, x: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {self._session.get_inputs()[0].name: x})[0]
        out = self._network_tf(x)
        if self._want_onnx:  # no export yet: made now, checked on this batch
            from models.lung.export import export_checked

            self._want_onnx = False
            self._use_onnx(export_checked(self.folder, self.network, x, out))
        return out

    @property
    def batch_size(self) -> int:
        """Images per call: as asked, else the fastest for the runtime in use (which
        changes once an export made on the first batch passes its check)."""
        return self._batch_size or ROWS[self.runtime]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, size, size) lung probabilities at the segmenter's own size."""
        x = self.prepared(images)
        out = [
            self._network(np.ascontiguousarray(x[i : i + self.batch_size]))
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out)[..., 0] if out else np.zeros((0, self.size, self.size))

    def masks(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) boolean lung masks at the images' own size S."""
        from models.pixel_views import bilinear_matrix

        s = int(images.shape[1])
        probs = self.probabilities(images)
        kept = np.stack([two_lungs(p >= THRESHOLD) for p in probs]) if len(probs) else probs
        probs = np.where(kept, probs, 0.0).astype(np.float32)
        # Bilinear up to S as two matrix products: what `pixel_views.resize` computes,
        # to float rounding, in a fraction of its time (a threshold follows, not a net).
        up = bilinear_matrix(self.size, s)  # the same for rows and columns: square
        return up @ probs @ up.T >= THRESHOLD

    def card(self) -> dict:
        return json.loads((self.folder / "card.json").read_text())


_cache: dict[str, LungSegmenter] = {}


def shipped(folder: Path | str | None = None, runtime: str = "tensorflow") -> LungSegmenter | None:
    """The segmenter of `folder` (default: the shipped one) on `runtime` ("tensorflow"
    or "onnx", as the classifier it serves), loaded once per process; None when no
    segmenter file is there."""
    path = Path(folder) if folder else default_dir()
    if not (path / WEIGHTS).exists():
        return None
    runtime = "onnx" if runtime == "onnx" else "tensorflow"
    key = f"{path.resolve()}:{runtime}"
    if key not in _cache:
        _cache[key] = LungSegmenter(path, runtime=runtime)
    return _cache[key]
