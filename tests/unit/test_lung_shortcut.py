"""The shortcut report of a freshly trained (tiny) X-ray version: in its card, its
Markdown card and the metrics its registry row keeps (what GET /api/v1/models shows)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from db.models import Base
from db.registry import register_version
from models.card import render_card
from models.dataset import load_examples
from models.train import TrainConfig, train


def test_a_new_xray_version_reports_its_auc_with_the_lungs_hidden_and_alone(shared_data):
    every = load_examples(shared_data, "xray")
    pick = [every[i] for i in np.random.default_rng(1).permutation(len(every))]
    examples = [e for e in pick if e.label == 1][:24] + [e for e in pick if e.label == 0][:16]
    cfg = TrainConfig(modality="xray", backbone="smallcnn", input_size=32, epochs=2,
                      finetune_epochs=0, weights=None)  # fmt: skip
    card = train(cfg, examples).card
    report = card["shortcut"]
    assert report["n"] == card["split"]["test"] == card["test"]["n"]
    assert report["auc"] == pytest.approx(card["test"]["auc"], abs=0.005)  # same patients
    for name in ("auc", "auc_lungs_hidden", "auc_lungs_only"):
        lo, hi = report[f"{name}_ci95"]
        assert 0.0 <= lo <= report[name] <= hi <= 1.0, (name, report)
    assert 0.05 < report["lung_fraction"] < 0.8 and report["reading"]
    assert "lungs hidden (filled with their own mean grey)" in render_card(card)

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        version = register_version(session, card, "test/xray")
        assert version.metrics["shortcut"] == report


def test_a_shipped_card_given_its_shortcut_report_later_reaches_its_registered_row(tmp_path):
    import json

    from db.registry import ensure_builtin_versions

    card = {"modality": "xray", "backbone": "smallcnn", "input_size": 64, "threshold": 0.5,
            "data_fingerprint": "f", "test": {"auc": 0.8}}  # fmt: skip
    (tmp_path / "xray").mkdir()
    (tmp_path / "lung").mkdir()  # the segmenter's card is not a classifier's
    (tmp_path / "lung" / "card.json").write_text(json.dumps({"what": "lung segmenter"}))
    (tmp_path / "xray" / "card.json").write_text(json.dumps(card))
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        (version,) = ensure_builtin_versions(session, tmp_path)
        assert version.metrics.get("shortcut") is None
        version.metrics = {**version.metrics, "recalibration": {"n": 60}}
        report = {"auc": 0.8, "auc_lungs_hidden": 0.5, "auc_lungs_only": 0.6}
        (tmp_path / "xray" / "card.json").write_text(json.dumps({**card, "shortcut": report}))
        assert ensure_builtin_versions(session, tmp_path) == []  # the same files: no new row
        assert version.metrics["shortcut"] == report
        assert version.metrics["recalibration"] == {"n": 60}
