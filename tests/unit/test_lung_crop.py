"""The lung-field crop (training option `lung_crop`, models.lung.field): what a crop
version is fed, how its heat maps get back to the whole image, and who may ask for it."""

from __future__ import annotations

import numpy as np
import pytest

from models.lung.crop import crop_boxes, lung_boxes, map_back
from models.lung.field import LungField, margin_of
from models.lung.share import heat_shares
from models.preprocess import load_for_model
from models.training_options import OptionError, parse_fields
from tests.conftest import sample_images


def _mask(size=64, rows=(16, 48), cols=(8, 40)):
    m = np.zeros((size, size), bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def test_the_crop_is_the_widened_box_stretched_back_and_no_lungs_keep_the_image():
    img = np.tile(np.arange(64, dtype=np.float32), (64, 1))[None, ..., None]  # grey = column
    images = np.concatenate([img, img])
    masks = np.stack([_mask(), np.zeros((64, 64), bool)])
    boxes = lung_boxes(masks, 0.125)
    assert boxes == [(8, 56, 0, 48), None]  # 8 px margin, clipped at the left edge
    out = crop_boxes(images, boxes)
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.array_equal(out[1], images[1])
    # columns 0..47 stretched over 64: the grey ramp now ends at about 47
    assert out[0, 0, 0, 0] < 1 and 46 <= out[0, 0, -1, 0] <= 47.5


def test_a_map_inside_the_box_lands_inside_the_box_and_shares_stay_in_range():
    boxes = [(8, 56, 0, 48), None]
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 2:6, 2:6] = 1.0  # heat in the middle of the crop
    maps[1] = np.random.default_rng(0).uniform(0, 1, (8, 8))
    full = map_back(maps, boxes, 64)
    assert full.shape == (2, 64, 64) and full.min() >= 0 and full.max() <= 1
    t, b, left, r = boxes[0]
    outside = np.ones((64, 64), bool)
    outside[t:b, left:r] = False
    assert full[0][outside].sum() == 0 and full[0].sum() > 0
    ys, xs = np.nonzero(full[0])
    assert t < ys.min() and ys.max() < b and left < xs.min() and xs.max() < r
    assert full[1].min() >= 0 and full[1].mean() > 0.2  # kept whole: the whole frame
    shares = heat_shares(full, np.stack([_mask(), _mask()]))
    assert all(0.0 <= s <= 1.0 for s in shares)
    # the middle of the crop is the middle of the lungs' box: mostly inside the lungs
    assert shares[0] > 0.9


def test_the_crop_field_on_real_xrays_uses_the_shipped_segmenter(shared_data):
    paths = sample_images(shared_data, "xray", "covid", 3)
    images = np.stack([load_for_model(p, 96) for p in paths])
    field = LungField(0.15)
    cropped, boxes = field.crop(images)
    masks = field.masks(images)
    assert all(b is not None for b in boxes)  # lungs on every chest X-ray here
    again, same = field.crop(images, masks)  # the caller's masks give the same crop
    assert same == boxes and np.array_equal(again, cropped)
    for box, m in zip(boxes, masks, strict=True):
        t, b, left, r = box
        assert m[t:b, left:r].sum() == m.sum()  # the whole lung inside its box
    assert margin_of({"config": {"lung_crop": 0.15}}) == 0.15 and margin_of({}) == 0.0


def test_lung_crop_is_refused_for_ct_and_out_of_range():
    assert parse_fields({"recipe": "probe", "lung_crop": "0.15"}, modality="xray")[
        "lung_crop"
    ] == pytest.approx(0.15)
    with pytest.raises(OptionError, match="lung_crop applies to modality=xray only, not ct"):
        parse_fields({"recipe": "probe", "lung_crop": "0.15"}, modality="ct")
    with pytest.raises(OptionError, match=r"0 \(whole images\) or between 0.01 and 0.3"):
        parse_fields({"recipe": "probe", "lung_crop": "0.5"}, modality="xray")
    parse_fields({"recipe": "probe", "lung_crop": "0"}, modality="ct")  # off is fine anywhere


def test_the_api_refuses_a_ct_training_run_with_a_lung_crop(client, app):
    from tests.unit.test_training_api import _archive, post_training

    resp = post_training(client, _archive(), recipe="probe", lung_crop="0.15")
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "bad_lung_crop", resp.json
    assert "modality=xray only" in resp.json["error"]["message"]
