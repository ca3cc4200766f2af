"""Cut a saved model into its pixel preparation and the network that follows.

The preparation layers at the front of a ScanQ model (border crop, histogram
equalisation, resizes to further views) become `models.pixel_views` steps, and the rest
becomes a Keras model whose inputs are the prepared views and whose outputs are the
probability and the pooled features the out-of-distribution check reads
(`models.ood.with_features`). Both runtimes run that network, TensorFlow directly and
ONNX Runtime as its export, on the same prepared views.
"""

from __future__ import annotations

from models.pixel_views import Step, View


def _step(layer) -> Step | None:
    """The preparation step a layer computes, or None when it belongs to the network."""
    import keras

    from models.layers import HistogramEqualization

    if isinstance(layer, HistogramEqualization):
        return Step("equalize")
    if isinstance(layer, keras.layers.Resizing):
        fitted = layer.crop_to_aspect_ratio or getattr(layer, "pad_to_aspect_ratio", False)
        if layer.interpolation != "bilinear" or fitted:
            return None
        return Step("resize", (int(layer.height), int(layer.width), bool(layer.antialias)))
    if isinstance(layer, keras.layers.Cropping2D) and layer.data_format == "channels_last":
        (top, bottom), (left, right) = layer.cropping
        return Step("crop", (int(top), int(bottom), int(left), int(right)))
    return None


def split_model(model, maps: bool = False) -> tuple[tuple[View, ...], object]:
    """(views, network): the steps from the image to each input of the network, and the
    network itself, a Keras model from those inputs to [P(covid), pooled features] and,
    with `maps` and a head that allows it, the heat maps (models.gradcam.maps_output). A
    model without
    preparation layers has one view, the image itself."""
    import keras

    from models.ood import with_features

    image = model.inputs[0]
    chains: dict[int, tuple[object, View]] = {id(image): (image, ())}
    boundary: dict[int, tuple[object, View]] = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            inputs = node.input_tensors
            if not inputs or not all(id(t) in chains for t in inputs):
                # Not fed by the preparation (or a node of another graph): the inputs it
                # takes from the preparation are network inputs.
                for t in inputs:
                    if id(t) in chains:
                        boundary.setdefault(id(t), chains[id(t)])
                continue
            step = _step(layer) if len(inputs) == 1 else None
            if step is None:
                for t in inputs:
                    boundary.setdefault(id(t), chains[id(t)])
                continue
            chains[id(node.output_tensors[0])] = (
                node.output_tensors[0],
                chains[id(inputs[0])][1] + (step,),
            )
    if not boundary:
        raise ValueError("the model's image input feeds no layer")
    tensors = [t for t, _v in boundary.values()]
    views = tuple(v for _t, v in boundary.values())
    full = with_features(model, maps=maps)
    network = keras.Model(tensors, full.outputs, name=f"{model.name}_network")
    return views, network
