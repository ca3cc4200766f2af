"""Out-of-distribution flags through the real stack (HTTP -> Redis -> Celery worker ->
SQL) with the shipped X-ray model and its stored calibration: held-out X-rays are
flagged at about the calibrated rate; CT slices sent as X-rays, photographs, text pages
and blank frames are flagged, keep their probability and carry a warning everywhere;
a job may skip scoring them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from models import ood_sets
from models.dataset import load_examples, train_val_test
from scanq import DISCLAIMER
from tests.conftest import sample_images

ROOT_MODELS = Path(__file__).resolve().parents[2] / "models" / "default"


def _items(stack, job_id: str) -> list[dict]:
    return stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}/results?limit=500").json()["items"]


def _submit(stack, files, **data) -> dict:
    resp = stack.http.post(
        f"{stack.url}/api/v1/jobs", files=files, data={"modality": "xray", **data}
    )
    assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", stack.log("worker")
    return job


def test_held_out_xrays_are_flagged_at_about_the_calibrated_rate(stack, shared_data):
    card = json.loads((ROOT_MODELS / "xray" / "card.json").read_text())
    examples = load_examples(shared_data, "xray")
    _, _, test = train_val_test(examples, seed=card["split"]["seed"])
    assert len(test) == card["split"]["test"]  # the patients the calibration never saw
    files = [("files", (examples[i].path.name, examples[i].path.read_bytes())) for i in test]
    job = _submit(stack, files)
    items = _items(stack, job["id"])
    assert len(items) == len(test) and all(i["status"] == "scored" for i in items)
    assert all(i["ood_score"] is not None for i in items)
    flagged = [i for i in items if i["out_of_distribution"]]
    assert job["flagged"] == len(flagged)
    # Calibrated to 1%; a few of 83 is the binomial spread, a tenth would be broken.
    assert len(flagged) <= 0.05 * len(test), [i["filename"] for i in flagged]


def test_foreign_images_are_flagged_with_warnings_and_can_be_skipped(stack, shared_data):
    xrays = sample_images(shared_data, "xray", "non_covid", 4)
    cts = sample_images(shared_data, "ct", "covid", 3) + sample_images(
        shared_data, "ct", "non_covid", 3
    )
    foreign = {f"ct-{p.name}": p.read_bytes() for p in cts}
    foreign |= {
        f"photo-{i}.png": ood_sets.png_bytes(a) for i, a in enumerate(ood_sets.photographs(3))
    }
    foreign |= {
        f"text-{i}.png": ood_sets.png_bytes(a) for i, a in enumerate(ood_sets.text_pages(3))
    }
    foreign |= {f"blank-{i}.png": ood_sets.png_bytes(a) for i, a in enumerate(ood_sets.blank(2))}
    files = [("files", (p.name, p.read_bytes())) for p in xrays]
    files += [("files", (name, data)) for name, data in foreign.items()]

    job = _submit(stack, files)
    by_name = {i["filename"]: i for i in _items(stack, job["id"])}
    for name in foreign:
        item = by_name[name]
        assert item["out_of_distribution"] is True, item
        assert item["status"] == "scored" and 0 <= item["probability"] <= 1  # kept for the record
        assert item["warning"].startswith("out of distribution")
    assert by_name["blank-0.png"]["warning"].endswith("(near-constant image (blank frame))")
    assert job["flagged"] == len(foreign) and job["done"] == len(files)
    for p in xrays:
        assert by_name[p.name]["out_of_distribution"] is False and not by_name[p.name]["warning"]

    body = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results.csv").text
    assert body.startswith(f"# {DISCLAIMER}\n")
    rows = {r["filename"]: r for r in csv.DictReader(io.StringIO(body.split("\n", 1)[1]))}
    assert all(rows[n]["out_of_distribution"] == "true" and rows[n]["warning"] for n in foreign)
    assert rows[xrays[0].name]["out_of_distribution"] == "false"
    page = stack.http.get(f"{stack.url}/jobs/{job['id']}").text
    assert DISCLAIMER in page
    assert page.count('class="ood-warning"') == len(foreign)
    assert f'<span id="flagged-count">{len(foreign)}</span> out of distribution' in page

    skipping = _submit(stack, files, skip_out_of_distribution="true")
    assert skipping["options"]["skip_out_of_distribution"] is True
    by_name = {i["filename"]: i for i in _items(stack, skipping["id"])}
    for name in foreign:
        item = by_name[name]
        assert item["status"] == "skipped" and item["probability"] is None
        assert item["label"] is None and item["out_of_distribution"] is True
    assert all(by_name[p.name]["status"] == "scored" for p in xrays)
    assert skipping["flagged"] == len(foreign) and skipping["failed"] == 0


def test_bad_skip_option_is_a_clear_400(stack):
    files = [("files", ("a.png", ood_sets.png_bytes(ood_sets.noise(1)[0])))]
    resp = stack.http.post(
        f"{stack.url}/api/v1/jobs",
        files=files,
        data={"modality": "xray", "skip_out_of_distribution": "perhaps"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_skip_out_of_distribution"
