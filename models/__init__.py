"""Everything that touches pixels or TensorFlow: preprocessing, backbones, training,
evaluation and saved model versions. Imports nothing else of ScanQ's, so it can be
used (and tested) on its own. TensorFlow is imported lazily by the modules that need it,
so importing `models.preprocess` or `models.metrics` stays cheap and fork-safe."""
