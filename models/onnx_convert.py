"""A Keras network to an ONNX file: the one conversion both exports use (the classifiers'
in models.export_onnx, the lung segmenter's in models.lung.export), kept apart from
either so that neither export imports the other."""

from __future__ import annotations

from pathlib import Path

OPSET = 17


def convert(network, path: Path) -> tuple[list[str], list[str]]:
    """Freeze the Keras network (inputs: prepared views, any batch size) and write it as
    ONNX; returns its input and output names. `tf2onnx.convert.from_function` leaves
    Keras 3's captured constants (the Normalization layers' mean and variance) as
    graph inputs, so the function is frozen to constants first."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    specs = [
        tf.TensorSpec((None, *t.shape[1:]), tf.float32, name=f"view{i}")
        for i, t in enumerate(network.inputs)
    ]
    fn = tf.function(lambda *views: network(list(views), training=False), input_signature=specs)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs,
        opset=OPSET, output_path=str(path),
    )  # fmt: skip
    return inputs, outputs
