"""`scanq evaluate` on a labelled folder of real scans prints the documented JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, sample_images


def test_evaluate_prints_metrics_json(tmp_path, shared_data):
    data = tmp_path / "set"
    for label, n in (("covid", 6), ("non_covid", 6)):
        (data / label).mkdir(parents=True)
        for p in sample_images(shared_data, "ct", label, n):
            (data / label / p.name).write_bytes(p.read_bytes())
    (data / "non_covid" / "broken.png").write_bytes(b"not an image")
    env = dict(os.environ, SCANQ_DATA_DIR=str(tmp_path / "var"), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("DATABASE_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", "--modality", "ct", "--data", str(data),
         "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("auc", "auc_ci95", "sensitivity", "specificity", "accuracy", "threshold", "n",
                "n_covid", "n_non_covid", "model_version"):  # fmt: skip
        assert key in report, key
    assert (report["n"], report["n_covid"], report["n_non_covid"]) == (12, 6, 6)
    assert report["skipped_unreadable"] == 1
    assert 0.0 <= report["auc"] <= 1.0
    assert report["model_version"] == "builtin/ct"

    missing = subprocess.run(
        [sys.executable, "-m", "cli.main", "evaluate", "--modality", "ct", "--data",
         str(tmp_path / "nope")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "does not exist" in missing.stderr
