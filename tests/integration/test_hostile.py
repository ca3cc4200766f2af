"""The hostile corpus (tests/data/hostile, made by tests/data/make_hostile.py) through
the real API and worker, in one job with real X-rays: every bad file ends with its own
clear error, every good one (including the lying extension, 16-bit PNG, TIFF and DICOM)
is scored, and nothing is written outside the data dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import sample_images

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"


def _tree(root: Path, leave_out: Path | None = None) -> set[str]:
    """Every path under `root`, except those under `leave_out`."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if leave_out is None or leave_out not in (p, *p.parents)}  # fmt: skip


def test_hostile_corpus_fails_file_by_file_and_the_rest_is_scored(stack, shared_data):
    expected = json.loads((CORPUS / "expected.json").read_text())
    outside = stack.data_dir.parent
    before = _tree(outside, leave_out=stack.data_dir)
    good = sample_images(shared_data, "xray", "covid", 3)
    files = [("files", (p.name, p.read_bytes())) for p in good]
    files += [("files", (name, (CORPUS / name).read_bytes())) for name in sorted(expected)]
    files.append(("files", ("../../../../tmp/scanq-escape.png", good[0].read_bytes())))
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "xray"})
    assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", stack.log("worker")
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results?limit=500").json()["items"]

    def item(name: str) -> dict:
        """The file's result, or that of an archive's first member."""
        matches = [
            i for i in items if i["filename"] == name or i["filename"].startswith(name + "/")
        ]
        assert matches, (name, [i["filename"] for i in items])
        return matches[0]

    for name, error in expected.items():
        got = item(name)
        if error is None:
            assert got["status"] == "scored", got
        else:
            assert got["status"] == "failed" and error in got["error"], (name, got)
    for p in good:
        assert item(p.name)["status"] == "scored"
    # A name is only a label: the file named like a path is stored by hash, and scored.
    assert item("../../../../tmp/scanq-escape.png")["status"] == "scored"
    assert not Path("/tmp/scanq-escape.png").exists()
    assert not any("evil" in name for name in _tree(stack.data_dir))
    assert _tree(outside, leave_out=stack.data_dir) == before  # nothing written beside it
    # Stored files are named by content hash only.
    for p in (stack.data_dir / "scans").rglob("*"):
        if p.is_file():
            assert len(p.name) == 64 and all(c in "0123456789abcdef" for c in p.name), p
    assert os.access(stack.data_dir, os.W_OK)


def test_dicom_series_and_frames_are_scored_and_summarised(stack, shared_data):
    """Real CT slices written as HU-coded DICOM: three slices of one series and one
    three-frame file. Each slice is scored, each series summarised by its highest slice
    probability, and a CT file in an X-ray job carries a warning."""
    import numpy as np

    from models.readers import decode_grayscale
    from tests.helpers import dicom_bytes

    def hu_stored(path):  # grey 0..255 -> the lung window's HU range -> stored (+2048)
        grey = decode_grayscale(path).astype(np.float64)
        return np.round(grey / 255 * 1500 - 1350 + 2048).astype(np.uint16)

    slices = sample_images(shared_data, "ct", "covid", 6)
    files = [("files", (f"s{k}.dcm", dicom_bytes(hu_stored(p), intercept=-2048,
                                                 series_uid="1.2.826.0.1.1", instance=k + 1)))
             for k, p in enumerate(slices[:3])]  # fmt: skip
    same_size = [hu_stored(p) for p in slices[3:]]
    h, w = min(a.shape[0] for a in same_size), min(a.shape[1] for a in same_size)
    volume = dicom_bytes([a[:h, :w] for a in same_size], intercept=-2048, series_uid="1.2.826.0.9")
    files.append(("files", ("volume.dcm", volume)))
    resp = stack.http.post(f"{stack.url}/api/v1/jobs", files=files, data={"modality": "ct"})
    job = stack.wait_job(resp.json()["id"])
    assert (job["status"], job["done"], job["total"]) == ("succeeded", 6, 6), stack.log("worker")
    items = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/results").json()["items"]
    series = stack.http.get(f"{stack.url}/api/v1/jobs/{job['id']}/series").json()["items"]
    assert {s["series"]: s["images"] for s in series} == {"1.2.826.0.1.1": 3, "1.2.826.0.9": 3}
    for s in series:
        probs = [i["probability"] for i in items if i["series"] == s["series"]]
        assert s["scored"] == 3 and s["max_probability"] == max(probs)
    assert sorted(i["frame"] for i in items if i["series"] == "1.2.826.0.9") == [1, 2, 3]
    assert not any(i["warning"] for i in items)
    page = stack.http.get(f"{stack.url}/jobs/{job['id']}").text
    assert "1.2.826.0.1.1" in page and f"{max(i['probability'] for i in items[:3]):.3f}" in page

    wrong = stack.http.post(f"{stack.url}/api/v1/jobs", files=files[:1], data={"modality": "xray"})
    done = stack.wait_job(wrong.json()["id"])
    (item,) = stack.http.get(f"{stack.url}/api/v1/jobs/{done['id']}/results").json()["items"]
    assert "says Modality CT (ct), but the job is for xray" in item["warning"]


def test_upload_over_the_limit_is_a_413_json_not_a_reset(tmp_path, redis_url):
    """On a real gunicorn, an upload of 20 MB against a 1 MB limit: the client gets the
    413 and its JSON error, not a reset connection."""
    from tests.conftest import Stack, free_port

    small = Stack(tmp_path / "small", redis_url, free_port(), None)
    small.env["SCANQ_MAX_UPLOAD_MB"] = "1"
    small.start()
    try:
        big = [("files", ("big.png", b"\0" * (20 << 20)))]
        resp = small.http.post(f"{small.url}/api/v1/jobs", files=big, data={"modality": "xray"})
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "upload_too_large"
        assert "limited to 1 MB" in resp.json()["error"]["message"]
        assert small.http.get(f"{small.url}/api/v1/jobs").status_code == 200  # still usable
    finally:
        small.stop()
