"""Scanner CT slices prepared before the lung window (models.ct_slice): the body and
lungs found in Hounsfield units, the table dropped, the slice cropped to the lungs; a
slice without lung marked not screened; an already tight crop left as it is; and the
reason carried from the DICOM reader to the scan's result."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models import ct_slice, readers
from tests.conftest import sample_images
from tests.helpers import dicom_bytes

FIELD = 512


def _crop_hu(path) -> np.ndarray:
    """A dev crop in HU, as tests/dicom_factory writes it (grey g -> g/255*1500-1350)."""
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L").resize((300, 230)), dtype=np.float64)
    return grey / 255.0 * 1500.0 - 1350.0, grey


def _field_with_body(rng, semi=(150, 120), centre=(230, 256)) -> tuple[np.ndarray, tuple]:
    """A scanner field: air, a body ellipse of soft tissue, a table line under it,
    padding outside the circular field of view. Returns it and the ellipse's box."""
    field = np.full((FIELD, FIELD), -1000.0)
    yy, xx = np.mgrid[:FIELD, :FIELD]
    cy, cx = centre
    ry, rx = semi[1], semi[0]
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    field[body] = 40.0
    table = cy + ry + 12
    field[table : table + 6, 40 : FIELD - 40] = 200.0
    field += rng.normal(0.0, 10.0, field.shape)
    field[(yy - FIELD / 2) ** 2 + (xx - FIELD / 2) ** 2 > (FIELD / 2) ** 2] = -2048.0
    return field, (cy - ry, cy + ry, cx - rx, cx + rx), table


def test_a_dev_crop_in_a_scanner_field_is_found_again(shared_data):
    """A dev crop inside a body ellipse, in a field of air with a table: the prepared
    slice is a box inside the body, around the crop, without the table. (A crop read
    in a lung window: many dev figures are in a soft-tissue window, whose greys mapped
    back through the lung window are not Hounsfield units of a body.)"""
    rng = np.random.default_rng(0)
    hu, grey = _crop_hu(sample_images(shared_data, "ct", "covid", 1)[0])
    field, body_box, table = _field_with_body(rng, semi=(165, 130))
    top, left = 230 - 115, 256 - 150
    inner = field[top : top + 230, left : left + 300]
    inner[grey >= 8] = hu[grey >= 8]  # the figure's black surround stays body tissue
    prepared = ct_slice.prepare(field)
    assert prepared.reason is None and not prepared.already_cropped
    t, b, lft, r = prepared.box
    slack = 0.05 * (body_box[1] - body_box[0]) + 4  # the margin, and the coarse grid
    assert t >= body_box[0] - slack and b <= body_box[1] + slack, prepared.box
    assert lft >= body_box[2] - slack and r <= body_box[3] + slack, prepared.box
    assert b < table  # the table is not in it
    crop_box = (top, top + 230, left, left + 300)
    inter = max(0, min(b, crop_box[1]) - max(t, crop_box[0])) * max(
        0, min(r, crop_box[3]) - max(lft, crop_box[2])
    )
    assert inter / (230 * 300) > 0.9  # the chest is in it
    assert prepared.hu.shape == (b - t, r - lft) and 0.1 < prepared.lung_fraction < 0.7
    assert prepared.hu[0, 0] < -900  # the air at the box's corner is kept as air
    blanked = ct_slice.prepare(field, blank_outside=True)
    assert blanked.hu[0, 0] == ct_slice.OUTSIDE_HU and blanked.box == prepared.box
    lungs = ct_slice.prepare(field, to="lungs")
    assert lungs.hu.size < prepared.hu.size and lungs.reason is None


def test_a_slice_of_soft_tissue_only_shows_no_lung():
    """An abdomen-like slice (soft tissue, a fat rim, a spine, two small gas bubbles)
    is outside the lungs: not screened, with the reason."""
    rng = np.random.default_rng(1)
    field, _box, _table = _field_with_body(rng)
    yy, xx = np.mgrid[:FIELD, :FIELD]
    ring = (((yy - 230) / 120) ** 2 + ((xx - 256) / 150) ** 2 > 0.8) & (field > -200)
    field[ring] = -100.0  # subcutaneous fat
    field[(yy - 320) ** 2 + (xx - 256) ** 2 < 20**2] = 700.0  # a vertebra
    for y, x in ((200, 220), (240, 300)):
        field[(yy - y) ** 2 + (xx - x) ** 2 < 7**2] = -950.0  # bowel gas
    prepared = ct_slice.prepare(field)
    assert prepared.reason == ct_slice.NO_LUNG and prepared.lung_fraction < 0.05
    assert ct_slice.is_not_screened(prepared.reason)
    assert ct_slice.prepare(np.full((64, 64), -1000.0)).reason == ct_slice.NO_BODY


def test_a_tight_crop_passes_unchanged(shared_data):
    for path in sample_images(shared_data, "ct", "covid", 3):
        hu, _grey = _crop_hu(path)
        prepared = ct_slice.prepare(hu)
        assert prepared.already_cropped and prepared.reason is None
        assert prepared.hu is hu


@pytest.mark.parametrize("intercept", [-1024.0, -2048.0])
def test_the_dicom_path_crops_scanner_slices_and_marks_slices_without_lung(
    shared_data, tmp_path, intercept
):
    """Through readers.decode and web.ingest: a dev crop written as DICOM decodes to
    the same greys as before; a scanner-like slice comes out cropped; an abdomen-like
    slice is a scan whose result is the reason (not a batch to score)."""
    from web.ingest import Limits, ingest

    path = sample_images(shared_data, "ct", "covid", 1)[0]
    hu, grey = _crop_hu(path)

    def stored(values):
        return np.clip(np.round(values - intercept), 0, 4095).astype(np.uint16)

    tight = readers.decode(dicom_bytes(stored(hu), intercept=intercept), "ct")
    assert tight.reasons == (None,)
    as_stored = (stored(hu) + intercept + 1350.0) / 1500.0 * 255.0  # the lung window
    assert np.abs(tight.frames[0] - np.clip(as_stored, 0, 255).round()).max() <= 1

    rng = np.random.default_rng(2)
    field, _box, _table = _field_with_body(rng, semi=(165, 130))
    inner = field[115:345, 106:406]
    inner[grey >= 8] = hu[grey >= 8]
    abdomen, _b, _t = _field_with_body(rng)
    image = readers.decode(dicom_bytes([stored(field), stored(abdomen)], intercept=intercept))
    assert image.reasons == (None, ct_slice.NO_LUNG)
    assert image.frames[0].shape[0] < 300 and image.frames[1].shape == (FIELD, FIELD)

    limits = Limits(100, 100, 10**8)
    data = dicom_bytes([stored(field), stored(abdomen)], intercept=intercept)
    scans = ingest([("two.dcm", data)], tmp_path, limits, "ct")
    assert [s.error for s in scans] == [None, ct_slice.NO_LUNG]
    assert all(s.stored_path for s in scans)  # the slice without lung can still be seen


def _chest(rng) -> np.ndarray:
    """A chest phantom: a body ellipse with two lungs of -850 HU, a table under it."""
    field, _box, _table = _field_with_body(rng, semi=(165, 115))
    yy, xx = np.mgrid[:FIELD, :FIELD]
    for cx in (180, 332):
        field[((yy - 225) / 80) ** 2 + ((xx - cx) / 55) ** 2 <= 1.0] = -850.0
    return field


def test_a_job_series_counts_slices_without_lung_apart_and_scores_the_rest(client, app):
    """A CT job of one multi-frame file (four chest slices, two without lung): the two
    are results with the reason at once, the series summary (API and job page) scores
    the four by the study rule and counts the two apart, not as failures."""
    from sqlalchemy import select

    from db.jobs import refresh_job, store_results
    from db.models import Scan
    from db.session import session_scope
    from models import study_aggregate

    rng = np.random.default_rng(3)
    frames = [_chest(rng) for _ in range(4)] + [_field_with_body(rng)[0] for _ in range(2)]
    data = dicom_bytes([np.clip(f + 1024, 0, 4095).astype(np.uint16) for f in frames],
                       intercept=-1024.0, series_uid="1.2.826.0.7")  # fmt: skip
    form = {"modality": "ct", "files": [(io.BytesIO(data), "volume.dcm")]}
    resp = client.post("/api/v1/jobs", data=form, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.json
    job_id = resp.json["id"]
    url = app.config["SCANQ_SETTINGS"].database_url
    probabilities = [0.9, 0.2, 0.3, 0.1]
    with session_scope(url) as s:  # what a worker would write for the four it was sent
        scans = s.scalars(select(Scan).where(Scan.job_id == job_id).order_by(Scan.position)).all()
        assert [sc.batch_id is not None for sc in scans] == [True] * 4 + [False] * 2
        store_results(s, [{"scan_id": sc.id, "job_id": job_id, "probability": p,
                           "label": "non_covid", "model_version_id": 1}
                          for sc, p in zip(scans, probabilities, strict=False)])  # fmt: skip
        refresh_job(s, job_id)
    (series,) = client.get(f"/api/v1/jobs/{job_id}/series").json["items"]
    assert (series["images"], series["scored"], series["n_outside_lungs"]) == (6, 4, 2)
    assert series["failed"] == 0 and not series["abstained"]
    assert series["score"] == pytest.approx(study_aggregate.aggregate(probabilities))
    assert series["max_probability"] == 0.9
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f"{series['score']:.3f}" in page and "No lung" in page
    results = client.get(f"/api/v1/jobs/{job_id}/results").json["items"]
    assert [r["error"] for r in results][4:] == [ct_slice.NO_LUNG] * 2
