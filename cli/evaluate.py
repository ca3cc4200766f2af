"""`scanq evaluate`: score a labelled folder with a model version, locally.

The model is the given folder, else the active version in the database, else the
shipped default. Images that cannot be decoded are counted and skipped, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scanq.settings import Settings


def _resolve(settings: Settings, modality: str, model_path: str | None) -> tuple[Path, dict, str]:
    if model_path:
        path = Path(model_path)
        card = json.loads((path / "card.json").read_text()) if (path / "card.json").exists() else {}
        return path, card, str(path.name)
    db_file = settings.database_url.startswith("sqlite") and Path(
        settings.database_url.split("///", 1)[-1]
    )
    if not db_file or db_file.exists():
        try:
            from db.registry import active_version
            from db.session import session_scope

            with session_scope(settings.database_url) as session:
                v = active_version(session, modality)
                if v is not None:
                    card = {"threshold": v.threshold, "temperature": v.temperature}
                    return settings.version_dir(v.path), card, v.id
        except Exception:  # no database yet: fall back to the shipped model
            pass
    path = settings.model_dir / modality
    return path, json.loads((path / "card.json").read_text()), f"builtin/{modality}"


def evaluate_folder(
    settings: Settings,
    modality: str,
    data_dir: Path,
    model_path: str | None = None,
    runtime: str | None = None,
) -> dict:
    """`runtime` is a SCANQ_RUNTIME value (default: the setting); the report names the
    runtime that scored (models.runtimes)."""
    from models.dataset import load_examples, split_groups
    from models.metrics import screening_report
    from models.preprocess import ImageError, load_for_model
    from models.runtimes import choose, load_predictor
    from worker.runtime import scoring_device

    path, card, version = _resolve(settings, modality, model_path)
    chosen = choose(runtime or settings.runtime, scoring_device())
    temperature = float(card.get("temperature", 1.0))
    predictor = load_predictor(path, chosen, 32, temperature, 1, settings.onnx_threads)
    examples = load_examples(data_dir)
    arrays, kept, skipped = [], [], 0
    for ex in examples:
        try:
            arrays.append(load_for_model(ex.path, predictor.input_size))
            kept.append(ex)
        except ImageError:
            skipped += 1
    if not kept:
        raise SystemExit(f"no readable images under {data_dir}")
    probs = predictor.predict(np.stack(arrays))
    threshold = float(card.get("threshold", 0.5))
    report = screening_report(
        [ex.label for ex in kept],
        probs,
        threshold,
        groups=split_groups(kept),
        sources=[ex.source for ex in kept],
    )
    report["model_version"] = version
    report["runtime"] = predictor.runtime
    report["skipped_unreadable"] = skipped
    return report
