"""The lung segmenter on real dev images, and what is measured with its masks: the heat
map's share inside the lungs, the views of the shortcut report, the lung-field crop."""

from __future__ import annotations

import numpy as np
import pytest

from models.lung import metrics as lung_metrics
from models.lung.crop import crop_to_lungs, lung_box
from models.lung.data import load_mask, mask_examples
from models.lung.segmenter import shipped
from models.lung.share import heat_shares, warning
from models.lung.shortcut import hide_lungs, lungs_only
from models.preprocess import load_for_model

# Mean test Dice of the shipped segmenter is in its card (models/default/lung); this floor
# sits below that card's worst group so a broken model or a changed preprocessing fails.
DICE_FLOOR = 0.85


@pytest.fixture(scope="module")
def segmenter():
    seg = shipped()
    assert seg is not None, "models/default/lung/lung.keras is missing"
    return seg


def test_the_segmenter_finds_the_lungs_of_held_out_patients(segmenter, shared_data):
    held_out = set(segmenter.card()["test_patients"])
    pairs = [p for p in mask_examples(shared_data) if p.image.patient_id in held_out]
    # both sources and both labels, a handful of each
    picked = []
    for key in {(p.mask_source, p.image.label) for p in pairs}:
        picked += [p for p in pairs if (p.mask_source, p.image.label) == key][:6]
    x = np.stack([load_for_model(p.image.path, 128) for p in picked])
    pred = segmenter.masks(x)
    truth = [load_mask(p.mask, 128) for p in picked]
    dice = [lung_metrics.dice_iou(m, t)[0] for m, t in zip(pred, truth, strict=True)]
    assert len(picked) >= 12 and np.mean(dice) > DICE_FLOOR, dice
    # masks come back at the size they are asked at
    assert segmenter.masks(np.stack([load_for_model(picked[0].image.path, 256)])).shape == (
        1, 256, 256)  # fmt: skip


def test_the_onnx_segmenter_finds_the_same_lungs(segmenter, shared_data, tmp_path):
    """The shipped export (models/default/lung/lung.onnx), and one made again on the first
    batch where it is missing, segment as TensorFlow does on real X-rays."""
    import shutil

    from models.lung.export import ONNX_FILE, RECORD_FILE, current_export
    from models.lung.segmenter import LungSegmenter

    paths = sorted((shared_data / "xray" / "dev").rglob("*.png"))[::61][:10]
    x = np.stack([load_for_model(p, 256) for p in paths])
    expected = segmenter.masks(x)
    assert current_export(segmenter.folder) is not None, "shipped lung.onnx stale or missing"
    fast = LungSegmenter(segmenter.folder, runtime="onnx")
    assert fast.runtime == "onnx"
    assert np.mean(fast.masks(x) == expected) > 0.999
    folder = tmp_path / "lung"
    shutil.copytree(segmenter.folder, folder, ignore=shutil.ignore_patterns(ONNX_FILE, ".*"))
    (folder / RECORD_FILE).unlink(missing_ok=True)
    fresh = LungSegmenter(folder, runtime="onnx")
    assert fresh.runtime == "tensorflow"  # until its first batch checks the new export
    assert np.mean(fresh.masks(x) == expected) > 0.999
    assert fresh.runtime == "onnx" and current_export(folder) is not None
    assert np.mean(fresh.masks(x) == expected) > 0.999


def test_the_heat_share_is_the_maps_mass_inside_the_mask():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    left, both = np.zeros((4, 4)), np.ones((4, 4))
    left[:, :2] = 1.0
    shares = heat_shares(np.stack([left, both, np.zeros((4, 4))]), np.stack([mask] * 3))
    assert shares[0] == 1.0 and shares[1] == pytest.approx(0.5) and shares[2] is None
    assert warning(0.3) and "outside the lungs" in warning(0.3)
    assert warning(0.7) is None and warning(None) is None


def test_hiding_and_keeping_the_lungs():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    hidden = hide_lungs(img, mask)
    assert np.all(hidden[0][mask[0]] == img[0][mask[0]].mean())
    assert np.all(hidden[0][~mask[0]] == img[0][~mask[0]])
    only = lungs_only(img, mask)
    assert np.all(only[0][~mask[0]] == 0) and np.all(only[0][mask[0]] == img[0][mask[0]])


def test_the_crop_keeps_the_lung_box_with_its_margin_and_never_drops_a_scan():
    mask = np.zeros((100, 100), bool)
    mask[30:60, 20:80] = True
    assert lung_box(mask, 0.1) == (20, 70, 10, 90)
    assert lung_box(np.zeros((10, 10), bool), 0.1) is None
    img = np.random.default_rng(0).uniform(0, 255, (2, 100, 100, 1)).astype(np.float32)
    out, masks = crop_to_lungs(img, np.stack([mask, np.zeros_like(mask)]), 0.1)
    assert out.shape == img.shape and masks.shape == (2, 100, 100)
    assert np.array_equal(out[1], img[1])  # nothing found: kept whole
    assert masks[0].mean() > mask.mean()  # the lungs fill more of the crop
