"""TensorFlow set-up and the per-process model cache.

Called from inside tasks, so TensorFlow is first imported in the child process. On a
GPU host each worker process should see one device (`scanq worker` starts one process
per GPU with CUDA_VISIBLE_DEVICES set); memory growth stops one process from grabbing
all of a card, and mixed precision speeds convolutions on tensor cores.
"""

from __future__ import annotations

import logging
import os
import threading

from scanq.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_configured = False
_predictors: dict[int, object] = {}


def configure_tensorflow() -> str:
    """Idempotent; returns "gpu" or "cpu"."""
    global _configured
    import tensorflow as tf

    with _lock:
        gpus = tf.config.list_physical_devices("GPU")
        if not _configured:
            _single_threaded_blas()
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError as exc:  # already initialised
                    log.warning("memory growth not set: %s", exc)
            if gpus and os.environ.get("SCANQ_MIXED_PRECISION", "1") == "1":
                import keras

                keras.mixed_precision.set_global_policy("mixed_float16")
            _configured = True
        return "gpu" if gpus else "cpu"


# Present when a GPU driver is loaded (NVIDIA's, or ROCm's): without one, TensorFlow
# sees no GPU, so asking it is not needed.
GPU_DRIVER_FILES = ("/proc/driver/nvidia/gpus", "/dev/kfd")


def scoring_device() -> str:
    """The device scoring runs on ("gpu" or "cpu"), found without importing TensorFlow
    on a host with no GPU driver: a CPU worker scoring an ONNX export then never loads
    TensorFlow, its memory and its thread pools (docs/benchmarks.md). With a driver,
    TensorFlow is set up and asked."""
    from pathlib import Path

    if any(Path(f).exists() for f in GPU_DRIVER_FILES):
        return configure_tensorflow()
    _single_threaded_blas()
    return "cpu"


def _single_threaded_blas() -> None:
    """NumPy's OpenBLAS threads (the out-of-distribution neighbour search multiplies
    small matrices per batch) spin after each call and take CPU from the model
    (docs/benchmarks.md). The matrices are small: one thread does them as fast, and
    the model keeps the cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn (the cpu/gpu extras) brings it
        return
    threadpool_limits(limits=1, user_api="blas")


def predictor_for(
    settings: Settings, version_id: int, path: str, temperature: float, backbone: str
):
    """Load a model version once per process; later batches reuse it. Its call shape
    and the calls in flight at once are chosen for its backbone and this process's
    device (models.batching), its runtime by `SCANQ_RUNTIME` and the device
    (models.runtimes: ONNX Runtime on a CPU when the version's export passed its check)."""
    with _lock:
        cached = _predictors.get(version_id)
    if cached is not None:
        return cached
    device = scoring_device()
    from models.batching import call_plan
    from models.runtimes import choose, load_predictor

    plan = call_plan(backbone, device, settings.batch_size, settings.model_batch_size,
                     settings.model_streams)  # fmt: skip
    runtime = choose(settings.runtime, device)
    predictor = load_predictor(settings.version_dir(path), runtime, plan.rows, temperature,
                               plan.streams, settings.onnx_threads)  # fmt: skip
    with _lock:
        _predictors[version_id] = predictor
    log.info("loaded model version %s (%s, %d rows per call, %d at once, on %s, runtime %s) "
             "in pid %s", version_id, backbone, plan.rows, plan.streams, device,
             predictor.runtime, os.getpid())  # fmt: skip
    return predictor
