"""Where the lungs are on a chest X-ray, and what that says about a model.

A small U-Net trained by `python -m models.lung.train` on the dev set's lung masks
(shipped in models/default/lung) finds the lungs; `share` measures how much of a heat
map lies inside them for every scored X-ray; `shortcut` measures a version's AUC with the
lungs hidden and with only the lungs kept; `crop` cuts an image to its lung field for the
lung-field training recipe. Masks themselves never reach a classifier.
"""
