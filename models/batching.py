"""The fixed batch shape a worker's model is called with, per backbone and device.

The worker pads every model call to one shape so the graph is traced once; the rows of a
job's last call beyond its images are wasted work, so the smallest shape that runs at
full speed is best. On a CPU that plateau starts at small batches; a GPU needs large
ones to fill its cores. The CPU table is what `python -m bench.batch_size` measured on a
2-core machine (bench/out/batch_size.json): per backbone, the smallest batch within 5%
of its fastest. `SCANQ_MODEL_BATCH_SIZE` overrides the table for a machine that
measures differently.

On a CPU the worker also keeps two model calls in flight at once (`streams`): one call
alone leaves about 7% of two cores idle (ops that run on one thread, the Python between
calls), and a second call fills those gaps (figures in docs/benchmarks.md). A GPU
keeps one stream: it runs a process's calls one after another anyway.
`SCANQ_MODEL_STREAMS` overrides.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

CPU_BATCH = {
    "efficientnet_lite0": 8,
    "efficientnet_lite1": 8,
    "efficientnet_lite2": 4,
    "mobilenetv2": 32,
    "efficientnetb0": 8,
    "densenet121": 4,
    "vgg16": 4,
    "resnet50": 8,
    "inceptionv3": 8,
    "xception": 4,
}
CPU_DEFAULT = 16
CPU_STREAMS = 2
GPU_STREAMS = 1
# Not measured here (no GPU): common starting points, smaller for the 299 px models.
GPU_BATCH = {"inceptionv3": 32, "xception": 32}
GPU_DEFAULT = 64


def model_batch_size(backbone: str, device: str, override: int | None = None) -> int:
    """Rows per model call; `device` is "cpu" or "gpu", `override` a configured size."""
    if override:
        return override
    if device == "gpu":
        return GPU_BATCH.get(backbone, GPU_DEFAULT)
    return CPU_BATCH.get(backbone, CPU_DEFAULT)


class CallPlan(NamedTuple):
    rows: int  # rows per model call (the fixed, padded shape)
    streams: int  # model calls in flight at once


def call_plan(
    backbone: str,
    device: str,
    task_size: int,
    rows_override: int | None = None,
    streams_override: int | None = None,
) -> CallPlan:
    """How a worker calls its model for tasks of `task_size` images. A call never holds
    more than one task's images (more rows would only be padding), and with several
    streams a task is cut so that each stream gets a call."""
    streams = streams_override or (
        GPU_STREAMS if device == "gpu" else min(CPU_STREAMS, os.cpu_count() or 1)
    )
    rows = min(model_batch_size(backbone, device, rows_override), task_size)
    if not rows_override:
        rows = min(rows, math.ceil(task_size / streams))
    return CallPlan(rows=max(rows, 1), streams=max(streams, 1))
