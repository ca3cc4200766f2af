"""The fixed batch shape a worker's model is called with, per backbone and device.

The worker pads every model call to one shape so the graph is traced once; the rows of a
job's last call beyond its images are wasted work, so the smallest shape that runs at
full speed is best. On a CPU that plateau starts at small batches; a GPU needs large
ones to fill its cores. The CPU table is what `python -m bench.batch_size` measured on a
2-core machine (bench/out/batch_size.json): per backbone, the smallest batch within 5%
of its fastest. `SCANQ_MODEL_BATCH_SIZE` overrides the table for a machine that
measures differently.
"""

from __future__ import annotations

CPU_BATCH = {
    "efficientnet_lite0": 8,
    "mobilenetv2": 32,
    "efficientnetb0": 8,
    "densenet121": 4,
    "vgg16": 4,
    "resnet50": 8,
    "inceptionv3": 8,
    "xception": 4,
}
CPU_DEFAULT = 16
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
