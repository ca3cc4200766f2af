"""A model version's card: the screening figures of its validation and test patients
(`split_report`), and the human-readable MODEL_CARD.md rendered from card.json
(`render_card`, with its out-of-distribution section)."""

from __future__ import annotations

import numpy as np

from models import calibration, metrics
from models.dataset import Example

NORMAL_FINDINGS = {"no finding", "normal", "noncovid", "non_covid"}


def split_report(
    y: np.ndarray,
    idx: np.ndarray,
    p: np.ndarray,
    threshold: float,
    examples: list[Example],
    groups: list[str],
) -> dict:
    """Screening figures (models.metrics) and calibration error of the images `idx`
    scored `p`, by source, and COVID against other abnormal findings where the set has
    both."""
    r = metrics.screening_report(
        y[idx],
        p,
        threshold,
        groups=[groups[i] for i in idx],
        sources=[examples[i].source for i in idx],
    )
    r["ece"] = round(calibration.expected_calibration_error(y[idx], p), 4)
    # The hard part on chest X-rays: COVID against other abnormal findings (mostly
    # other pneumonias), leaving out negatives recorded as normal.
    abnormal = [k for k, i in enumerate(idx) if y[i] == 1 or _abnormal(examples[i])]
    if any(y[idx[k]] == 0 for k in abnormal) and len(abnormal) < len(idx):
        sub = idx[abnormal]
        r["covid_vs_other_findings"] = metrics.screening_report(
            y[sub], p[abnormal], threshold, groups=[groups[i] for i in sub]
        )
    return r


def _abnormal(ex: Example) -> bool:
    return bool(ex.finding) and ex.finding.strip().lower() not in NORMAL_FINDINGS


def operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> list[float]:
    """[false positive rate, true positive rate] at the threshold, for the ROC plot."""
    c = metrics.confusion(y, p, threshold)
    fpr = c["fp"] / max(c["fp"] + c["tn"], 1)
    tpr = c["tp"] / max(c["tp"] + c["fn"], 1)
    return [round(fpr, 4), round(tpr, 4)]


def render_card(card: dict) -> str:
    def line(name: str, r: dict) -> str:
        ci = r.get("auc_ci95") or [None, None]
        return (
            f"| {name} | {r['n']} ({r['n_covid']}/{r['n_non_covid']}) | {r['auc']} "
            f"[{ci[0]}, {ci[1]}] | {r['sensitivity']} | {r['specificity']} | {r.get('ece', '')} |"
        )

    rows = [line("validation", card["validation"]), line("test", card["test"])]
    for src, r in card["test"].get("by_source", {}).items():
        rows.append(line(f"test: {src}", r))
    if "covid_vs_other_findings" in card["test"]:
        rows.append(line("test: COVID vs other abnormal findings", card["test"][
            "covid_vs_other_findings"]))  # fmt: skip
    cv_lines = []
    if card.get("cross_validation"):
        cv = card["cross_validation"]
        folds = cv["folds"]
        n_folds = cv.get("folds_per_repeat", len(folds))
        repeats = cv.get("auc_per_repeat", [])
        auc, sens, spec = (cv["summary_mean_sd"][k] for k in ("auc", "sensitivity", "specificity"))
        spread = (
            f"(mean ± sd over {len(folds)} test parts: {len(repeats)} partitions into {n_folds} "
            "folds; mean of each partition " + ", ".join(f"{a:.3f}" for a in repeats) + ")"
            if len(repeats) > 1
            else "(mean ± sd over folds; per fold "
            + ", ".join(f"{f['auc']:.3f}" for f in folds)
            + ")"
        )
        cv_lines = [
            f"Settings chosen by patient-grouped {n_folds}-fold cross-validation on the "
            f"development data (`python -m bench.cv`, setting `{cv['setting']}`); on each "
            "fold's held-out patients:",
            "",
            f"- AUC {auc[0]:.3f} ± {auc[1]:.3f} {spread}",
            f"- sensitivity {sens[0]:.3f} ± {sens[1]:.3f}, specificity {spec[0]:.3f} ± "
            f"{spec[1]:.3f} at each fold's validation-chosen threshold",
            "",
        ]
    sections = [render_ood_section(card["ood"]) if card.get("ood") else "", _shortcut(card)]
    return "\n".join(
        [
            f"# ScanQ model card: {card['modality']} / {card['backbone']}"
            f" @ {card['input_size']} px"
            + _also_at(card["config"].get("probe_scales"))
            + _imagenet_view(card["config"].get("probe_imagenet_view")),
            "",
            "Research software, not a diagnostic device. Do not use these scores for the",
            "care of a patient.",
            "",
            f"- Trained with: `{card.get('command', '(library call)')}`",
            f"- Data fingerprint: `{card['data_fingerprint']}`; split: {card['split']}",
            f"- Threshold {card['threshold']:.4f} (chosen on validation for sensitivity >= "
            f"{card['config']['target_sensitivity']}); temperature {card['temperature']:.3f}",
            f"- Backbone start: {'ImageNet weights' if card.get('pretrained') else 'random'}; "
            + (
                f"recipe: linear probe on frozen pooled features, C = "
                f"{card['history']['chosen_c'][0]} (chosen on validation), fitted on the "
                f"{card['split'].get('model_fit_on', 'training')} patients; "
                if card["config"].get("recipe") == "probe"
                else f"recipe: fine-tuning, epochs run: {card['epochs_run']}; "
            )
            + f"training time {card['train_seconds']} s",
            *_lung_crop(card["config"].get("lung_crop")),
            "",
            *cv_lines,
            "This model's own split (train / validation for model selection, calibration "
            "and threshold / test scored once):",
            *(
                [
                    "",
                    "The validation row scores the probe fitted on the training patients "
                    "alone, which chose C, the temperature and the threshold; this version is "
                    "that probe fitted again on training and validation patients.",
                ]
                if card["split"].get("model_fit_on") == "training+validation"
                else []
            ),
            "",
            "| split | n (covid/non) | AUC [95% CI, patient bootstrap] | sensitivity | "
            "specificity | ECE |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Test figures come from held-out patients scored once. They are small samples:",
            "read the intervals, not the point estimates. Many COVID-positive images are",
            "figures cropped from papers, so source-specific shortcuts are possible.",
            "",
        ]
    ) + "".join(sections)


def _shortcut(card: dict) -> str:
    """The X-ray shortcut report (models.lung.shortcut), when the card has one."""
    from models.lung.report import render_shortcut_section

    return render_shortcut_section(card["shortcut"]) if card.get("shortcut") else ""


def _also_at(scales) -> str:
    return f" (and {', '.join(str(s) for s in scales)} px)" if scales else ""


def _imagenet_view(size) -> str:
    return f", ImageNet-scaled view at {size} px" if size else ""


def _lung_crop(margin) -> list[str]:
    """The card's line for a version trained on lung fields (models.lung.field)."""
    if not margin:
        return []
    return [
        f"- Lung-field crop (`lung_crop` {margin:g}): every image, in training and in "
        f"scoring, is cut to its lungs' box widened by {margin:.0%} of the side (the "
        "shipped lung segmenter's, run on the whole image first) and stretched back"
    ]


def render_ood_section(section: dict) -> str:
    rows = "\n".join(
        f"| {name} | {r['n']} | {r['flagged']} | {r['rate']:.3f} |"
        for name, r in section["flag_rates"].items()
    )
    return (
        "\n## Out-of-distribution flag\n\n"
        f"{section['method']}; threshold at the {100 * (1 - section['target_rate']):g}th "
        f"percentile of leave-patient-out scores of the {section['n_calibration']} training "
        f"and validation images (flag rate there: {section['calibration_flag_rate']:.3f}). "
        "Measured flag rates (`in_distribution_test` should be near the target; every "
        "other set should be flagged):\n\n"
        "| set | n | flagged | rate |\n|---|---:|---:|---:|\n" + rows + "\n"
    )
