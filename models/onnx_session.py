"""How a worker process opens ONNX Runtime sessions: the threads of each call and the
session options, shared by the classifiers' predictor (models.predictor) and the lung
segmenter (models.lung.export), and imported by neither's other modules' chain."""

from __future__ import annotations

import os


def onnx_threads(streams: int, override: int | None = None) -> int:
    """Intra-op threads of each call in flight: the cores shared out between the calls,
    so that calls in flight never ask for more threads than there are cores."""
    if override:
        return override
    return max(1, (os.cpu_count() or 1) // max(streams, 1))


def onnx_session_options(threads: int, spinning: bool = False):
    """ONNX Runtime's options for one worker process: `threads` for the ops of one call
    (the calls in flight share the cores), one for running ops side by side, and no
    spinning between calls, which would take the cores from the decode threads and the
    other call in flight (bench/cpu_runtime.py measures the choices)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(int(threads), 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options
