"""The shortcut report: does an X-ray model read the lungs or something else?

AUC on a version's own test patients three ways: the images as they are, with the lungs
hidden (the lung area filled with its own mean grey, so no edge or brightness step marks
it) and with only the lungs kept (everything else black), each with a patient-grouped
95% bootstrap interval. A model that reads disease from the lungs loses its skill when
they are hidden and keeps most of it when only they remain; one that keeps its AUC
with the lungs hidden is reading something else (borders, text, the source's style).
The lungs come from the shipped segmenter (models.lung.segmenter), never from the masks.
A version trained on lung fields (models.lung.field) gets each view as it scores images:
the lungs are hidden or kept on the whole image, then the view is cut to the box of the
whole image's lungs (the lungs-hidden view is not segmented again: no lungs would be
found in it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models import metrics


def hide_lungs(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each image with its lung area filled with the mean grey of that area."""
    out = np.array(images, dtype=np.float32, copy=True)
    for img, m in zip(out, masks, strict=True):
        if m.any():
            img[m] = img[m].mean()
    return out


def lungs_only(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each image with everything outside its lungs black."""
    return np.where(masks[..., None], images, 0.0).astype(np.float32)


def _auc_with_ci(y: np.ndarray, p: np.ndarray, groups: Sequence[str]) -> tuple[float, list]:
    lo, hi = metrics.bootstrap_auc_ci(y, p, groups)
    return round(float(metrics.roc_auc(y, p)), 4), [round(lo, 4), round(hi, 4)]


def shortcut_report(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    y: Sequence[int],
    groups: Sequence[str],
    segmenter,
    margin: float = 0.0,
) -> dict:
    """`metrics.shortcut` of a version: `predict` maps (N, S, S, 1) 0..255 to scores;
    `groups` are the patients, resampled whole for the intervals; `margin` > 0: the
    version's lung-crop margin, each view cut to the whole image's lung box."""
    from models.lung.crop import crop_boxes, lung_boxes

    y = np.asarray(y, dtype=int)
    masks = segmenter.masks(images)
    boxes = lung_boxes(masks, margin) if margin else None
    report: dict = {"n": int(len(y)), "n_patients": len(set(groups))}
    for name, view in (
        ("auc", images),
        ("auc_lungs_hidden", hide_lungs(images, masks)),
        ("auc_lungs_only", lungs_only(images, masks)),
    ):
        view = view if boxes is None else crop_boxes(view, boxes)
        report[name], report[f"{name}_ci95"] = _auc_with_ci(y, predict(view), groups)
    report["lung_fraction"] = round(float(masks.mean()), 4)
    if margin:
        report["lung_crop"] = margin
    report["segmenter"] = str(segmenter.card().get("command", "models/default/lung"))
    report["reading"] = reading(report)
    return report


def reading(report: dict) -> str:
    """One plain sentence on what the three AUCs say."""
    full, hidden, only = report["auc"], report["auc_lungs_hidden"], report["auc_lungs_only"]
    skill = full - 0.5
    if skill <= 0.05:
        return "the model has little skill on its test patients to begin with"
    kept_hidden = max(hidden - 0.5, 0.0) / skill
    kept_only = max(only - 0.5, 0.0) / skill
    if kept_hidden >= 0.75:
        return (
            f"it keeps {kept_hidden:.0%} of its skill with the lungs hidden: it reads much "
            "outside the lungs (a shortcut risk)"
        )
    if kept_only >= 0.75:
        return (
            f"it keeps {kept_only:.0%} of its skill on the lungs alone and "
            f"{kept_hidden:.0%} with them hidden: it reads mostly the lungs"
        )
    if kept_hidden < 0.25 and kept_only < 0.25:
        return (
            f"it keeps {kept_hidden:.0%} of its skill with the lungs hidden and "
            f"{kept_only:.0%} on the lungs alone: it needs the lungs but not only them (or "
            "it is thrown by images so unlike its training scans), so neither view rules "
            "out a shortcut beside the lungs"
        )
    return (
        f"it keeps {kept_hidden:.0%} of its skill with the lungs hidden and "
        f"{kept_only:.0%} on the lungs alone: it reads both the lungs and what lies "
        "around them"
    )


def version_shortcut(model, x_test: np.ndarray, y_test, groups, margin: float = 0.0) -> dict | None:
    """The card's `shortcut` section for a classifier and its test patients (whole
    images at the model's input size; `margin`: a lung-crop version's); None when no
    lung segmenter is shipped."""
    from models.fitting import predict
    from models.lung.segmenter import shipped

    segmenter = shipped()
    if segmenter is None:
        return None
    return shortcut_report(lambda x: predict(model, x), x_test, y_test, groups, segmenter,
                           margin)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Add the shortcut report to a saved X-ray version's card (its weights and every
    other figure unchanged), on the test patients re-derived from its card's seed:

        python -m models.lung.shortcut --version models/default/xray --data ../shared/data
    """
    import argparse
    import json
    from pathlib import Path

    from models.dataset import split_groups
    from models.lung.field import margin_of
    from models.lung.report import SECTION_HEADING, render_shortcut_section
    from models.version import reload_version

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--version", required=True, help="a saved version's folder")
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args(argv)
    folder = Path(args.version)
    v = reload_version(folder, args.data)
    if v.card["modality"] != "xray":
        raise SystemExit("the shortcut report is for X-ray versions")
    _tr, _va, te = v.split
    groups = split_groups(v.examples)
    y = [v.examples[i].label for i in te]
    section = version_shortcut(v.model, v.x[te], y, [groups[i] for i in te],
                               margin_of(v.card))  # fmt: skip
    if section is None:
        raise SystemExit("no lung segmenter in models/default/lung: python -m models.lung.train")
    card = json.loads((folder / "card.json").read_text())
    card["shortcut"] = section
    (folder / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    # The section replaces its old self at the end of the Markdown card; the rest of the
    # card is kept as it was written when the version was trained.
    md = (folder / "MODEL_CARD.md").read_text()
    md = md.split(SECTION_HEADING)[0].rstrip("\n") + "\n"
    (folder / "MODEL_CARD.md").write_text(md + render_shortcut_section(section))
    print(json.dumps(section, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
