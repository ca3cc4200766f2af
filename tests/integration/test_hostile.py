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
