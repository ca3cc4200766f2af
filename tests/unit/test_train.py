"""One tiny training run on real chest X-rays: what its card and saved version hold."""

import json
from dataclasses import replace

import numpy as np
from PIL import Image

from models.dataset import load_examples
from models.train import TrainConfig, train
from models.version import save_version


def test_tiny_run_card_and_saved_version(shared_data, tmp_path):
    every = load_examples(shared_data, "xray")
    rng = np.random.default_rng(0)
    pick = [every[i] for i in rng.permutation(len(every))]
    covid = [e for e in pick if e.label == 1][:20]
    other = [e for e in pick if e.label == 0 and e.finding.lower() != "no finding"][:12]
    normal = [e for e in pick if e.label == 0 and e.finding.lower() == "no finding"][:8]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    examples = covid + other + normal + [replace(covid[0], path=broken, patient_id="b")]
    cfg = TrainConfig(modality="xray", backbone="smallcnn", input_size=32, epochs=2,
                      finetune_epochs=0, weights=None)  # fmt: skip
    result = train(cfg, examples)
    card = result.card
    assert card["skipped_unreadable"] == [
        {"file": "broken.png", "error": card["skipped_unreadable"][0]["error"]}
    ]
    assert card["split"]["train"] + card["split"]["val"] + card["split"]["test"] == 40
    test = card["test"]
    assert test["n"] == card["split"]["test"] and 0 <= test["auc"] <= 1
    assert set(test["by_source"]) <= {e.source for e in examples}
    # COVID against other abnormal findings: the normal negatives are left out
    sub = test["covid_vs_other_findings"]  # the seeded split has both kinds of negative
    assert sub["n_covid"] == test["n_covid"] and 0 < sub["n_non_covid"] < test["n_non_covid"]
    roc = card["roc_test"]
    assert roc["fpr"][0] == roc["tpr"][0] == 0.0 and roc["fpr"][-1] == roc["tpr"][-1] == 1.0

    out = save_version(result, tmp_path / "v1", command="test")
    saved = json.loads((out / "card.json").read_text())
    assert saved["command"] == "test" and saved["threshold"] == card["threshold"]
    assert "Research software, not a diagnostic device" in (out / "MODEL_CARD.md").read_text()
    for name in ("roc.png", "confusion.png"):
        with Image.open(out / name) as im:
            assert im.size == (360, 360) and len(np.unique(np.asarray(im))) > 2
    # What it saw, for the retraining gate: its training and validation images only.
    from models.gate import unseen_by

    fitted_on = card["split"]["train"] + card["split"]["val"]
    assert len(json.loads((out / "seen.json").read_text())["images"]) == fitted_on
    assert unseen_by(out, result.test_examples) == result.test_examples
    # Its export for ONNX Runtime, checked on its validation images (models.export_onnx).
    export = saved["cpu_runtime"]
    assert export["status"] == "ok" and export["check"]["checked_on"] == "its validation images"
    assert export["check"]["images"] == min(card["split"]["val"], 64)
    assert (out / "model.onnx").exists()
    assert unseen_by(out, result.seen_examples) == []
