"""A `recalibrate` training job (models.recalibrate), run by the training task: the
parent version's stored scores of confirmed results refitted into a new temperature and
threshold, a new version folder with the parent's weights and its own card, then the
champion/challenger gate on the held-back confirmed labels. Scores nothing, loads no
TensorFlow.

The new folder hard-links the parent's files (weights, out-of-distribution bank, any
export) where the file system allows; its own are card.json, MODEL_CARD.md, the report
pictures, seen.json (the parent's record plus the site images it was fitted on, so a
later challenger is not compared on them) and its drift reference (the parent's under
the new temperature).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db.accounts import audit
from db.models import Job, ModelVersion, Scan
from db.monitoring import Scope, confirmed
from db.registry import activate_version, register_version
from db.schedules import finish_run
from db.session import session_scope
from db.training_jobs import finish_training_job, set_stage
from models import recalibrate as rc
from scanq.settings import Settings

log = logging.getLogger(__name__)
OWN_FILES = {"card.json", "MODEL_CARD.md", "roc.png", "confusion.png", "seen.json",
             "drift_reference.json"}  # fmt: skip


def labels_of(session, version_id: int) -> list[rc.Label]:
    """The confirmed results this version scored (with a probability), oldest first."""
    rows = [r for r in confirmed(session, Scope(version_id)) if r.probability is not None]
    sha = dict(session.execute(select(Scan.id, Scan.sha256).where(
        Scan.id.in_([r.scan_id for r in rows]))).all()) if rows else {}  # fmt: skip
    return [rc.Label(r.probability, r.label, r.patient, sha.get(r.scan_id)) for r in rows]


def check_request(session, settings: Settings, parent_id: int) -> list[rc.Label]:
    """The parent's confirmed labels, or rc.Refused saying why they do not suffice."""
    labels = labels_of(session, parent_id)
    rc.check(labels, settings.recalibrate_min)
    rc.split(labels)
    return labels


def run_recalibration(settings: Settings, job_id: str, modality: str, options: dict) -> str:
    url = settings.database_url
    gate = options.get("gate") or {}
    parent_id = int(options["recalibrate"]["parent"])
    with session_scope(url) as session:
        set_stage(session, job_id, "refitting temperature and threshold")
        parent = session.get(ModelVersion, parent_id)
        if parent is None or parent.modality != modality:
            raise rc.Refused("no_parent", f"no {modality} model version {parent_id} to recalibrate")
        labels = check_request(session, settings, parent_id)
        parent_folder = settings.version_dir(parent.path)
        p_temp, p_thr, p_label = parent.temperature, parent.threshold, parent.label
    fit, held = rc.split(labels)
    y = np.asarray([x.label for x in labels])
    p = np.asarray([x.probability for x in labels])
    groups = [x.patient for x in labels]
    parent_card = json.loads((parent_folder / "card.json").read_text())
    target = float(options["config"].get("target_sensitivity", 0.9))
    new_t, new_thr = rc.refit(y[fit], p[fit], p_temp, target)
    p_new = rc.rescore(p, p_temp, new_t)

    def part(idx, probs, threshold):
        return rc.report(y[idx], probs[idx], threshold, [groups[i] for i in idx])

    champion, challenger = part(held, p, p_thr), part(held, p_new, new_thr)
    card = _card(parent_card, parent_id, p_label, p_temp, p_thr, new_t, new_thr, target,
                 part(fit, p_new, new_thr), challenger, y[held], p_new[held], job_id,
                 len(set(groups)))  # fmt: skip
    rel = f"model_versions/{job_id}"
    out = settings.version_dir(rel)
    _write_folder(parent_folder, out, card, [labels[i] for i in fit], new_t)
    with session_scope(url) as session:
        set_stage(session, job_id, "comparing with the champion")
        version = register_version(session, card, rel, training_job_id=job_id)
        if not finish_training_job(session, job_id, "succeeded", version.id):
            session.rollback()  # cancelled meanwhile: no version from a cancelled run
            shutil.rmtree(out, ignore_errors=True)
            return "cancelled"
        version_id = version.id
    _gate(settings, gate, parent_id, version_id, champion, challenger, p_thr, new_thr)
    return "succeeded"


def _card(parent_card, parent_id, parent_label, p_temp, p_thr, new_t, new_thr, target, fit_r,
          held_r, y_held, p_held, job_id, n_patients) -> dict:  # fmt: skip
    from models import metrics
    from models.card import operating_point

    fpr, tpr = metrics.roc_curve(y_held, p_held)
    return {
        **{k: v for k, v in parent_card.items() if k not in ("cross_validation", "history")},
        "threshold": new_thr,
        "temperature": new_t,
        "config": {
            **parent_card.get("config", {}),
            "recipe": rc.NAME,
            "target_sensitivity": target,
        },  # fmt: skip
        "recalibration": {
            "parent": parent_id,
            "parent_label": parent_label,
            "parent_temperature": p_temp,
            "parent_threshold": p_thr,
            "labels": fit_r["n"] + held_r["n"],
            "patients": n_patients,
            "method": "the parent's stored probabilities of reviewer-confirmed results, split "
            "by patient into halves (stratified); temperature by likelihood and the threshold "
            f"for sensitivity {target} on the fitting half, compared on the held-back half",
        },
        "parent_test": parent_card.get("test"),
        "split": {
            "method": "site's confirmed labels, patient-grouped halves (fit / held back)",
            "seed": 0,
            "train": 0,
            "val": fit_r["n"],
            "test": held_r["n"],
            "model_fit_on": "the parent's weights, unchanged",
        },
        "validation": fit_r,
        "test": held_r,
        "roc_test": {
            "fpr": fpr.round(4).tolist(),
            "tpr": tpr.round(4).tolist(),
            "operating_point": operating_point(y_held, p_held, new_thr),
        },  # fmt: skip
        "command": f"recalibrate job {job_id} of version {parent_id}",
        "skipped_unreadable": [],
        "epochs_run": 0,
        "train_seconds": 0.0,
    }


def _write_folder(parent: Path, out: Path, card: dict, fitted: list[rc.Label], new_t: float):
    from models import drift
    from models.gate import SEEN_FILE, _patient_key
    from models.report import write_report_images

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in parent.iterdir():
        if src.is_file() and src.name not in OWN_FILES:
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copyfile(src, tmp / src.name)
    seen_path = parent / SEEN_FILE
    seen = json.loads(seen_path.read_text()) if seen_path.exists() else {
        "images": [], "patients": [], "dup_groups": []}  # fmt: skip
    seen["images"] = sorted(set(seen["images"]) | {x.sha256 for x in fitted if x.sha256})
    people = {k for x in fitted if x.patient.startswith("patient:")
              and (k := _patient_key(x.patient.split(":", 1)[1]))}  # fmt: skip
    seen["patients"] = sorted(set(seen["patients"]) | people)
    (tmp / SEEN_FILE).write_text(json.dumps(seen) + "\n")
    (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (tmp / "MODEL_CARD.md").write_text(render(card))
    write_report_images(card, tmp)
    reference = drift.load_reference(parent)
    if reference and not reference.get("error"):
        drift.save_reference(tmp, drift.retemper(reference, new_t))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def render(card: dict) -> str:
    """MODEL_CARD.md of a recalibrated version."""
    r, t, v = card["recalibration"], card["test"], card["validation"]
    parent_test = card.get("parent_test") or {}

    def ci(x):
        lo, hi = x.get("auc_ci95") or [None, None]
        return f"{x.get('auc')} [{lo}, {hi}]"

    return "\n".join([
        f"# ScanQ model card: {card['modality']} / {card['backbone']} @ {card['input_size']} px,"
        f" recalibrated from {r['parent_label']}",
        "",
        "Research software, not a diagnostic device. Do not use these scores for the",
        "care of a patient.",
        "",
        f"- Weights: version {r['parent']}'s, unchanged. Temperature {r['parent_temperature']:.3f}"
        f" -> {card['temperature']:.3f}; threshold {r['parent_threshold']:.4f} -> "
        f"{card['threshold']:.4f}.",
        f"- Fitted on {v['n']} of this site's {r['labels']} confirmed labels ({r['patients']} "
        f"patients); {r['method']}.",
        "",
        "| part | n (covid/non) | AUC [95% CI] | sensitivity | specificity | ECE |",
        "|---|---|---|---|---|---|",
        f"| site, fitting half | {v['n']} ({v['n_covid']}/{v['n_non_covid']}) | {ci(v)} | "
        f"{v['sensitivity']} | {v['specificity']} | {v.get('ece', '')} |",
        f"| site, held back | {t['n']} ({t['n_covid']}/{t['n_non_covid']}) | {ci(t)} | "
        f"{t['sensitivity']} | {t['specificity']} | {t.get('ece', '')} |",
        f"| parent's own test split | {parent_test.get('n')} | {ci(parent_test)} | "
        f"{parent_test.get('sensitivity')} | {parent_test.get('specificity')} | |",
        "",
        "Recalibration keeps the ranking of scans, so the AUC is the parent's by construction;",
        "what changes is the operating point and what a probability means.",
        "",
    ])  # fmt: skip


def _gate(settings: Settings, gate: dict, champion_id: int, challenger_id: int, champion: dict,
          challenger: dict, old_thr: float, new_thr: float) -> None:  # fmt: skip
    """The gate every challenger passes (models.gate.decide), on the held-back confirmed
    labels; the decision is kept on the version, in the audit trail and, for a schedule,
    on its run."""
    from models.gate import decide

    decision = decide(champion, challenger, float(gate.get("margin", 0.0)))
    reason = (
        f"{decision.reason}; recalibration keeps the ranking (AUC equal by construction), "
        f"threshold {old_thr:.4f} -> {new_thr:.4f}, ECE {champion['ece']:.3f} -> "
        f"{challenger['ece']:.3f} on {challenger['n']} held-back confirmed labels"
    )
    report = {"compared_on": "held-back half of the site's confirmed labels (by patient)",
              "champion": champion, "challenger": challenger}  # fmt: skip
    url = settings.database_url
    with session_scope(url) as session:
        version = session.get(ModelVersion, challenger_id)
        version.metrics = {**(version.metrics or {}), "recalibration": {
            "parent": champion_id, "promoted": decision.promote, "reason": reason,
            "report": report}}  # fmt: skip
        if decision.promote:
            activate_version(session, challenger_id)
        if gate.get("run"):
            finish_run(session, gate["run"], "promoted" if decision.promote else "kept", reason,
                       challenger_version_id=challenger_id, report=report)  # fmt: skip
        job = session.scalar(select(Job).where(Job.id == version.training_job_id))
        detail = {"champion": champion_id, "promoted": decision.promote, "reason": reason}
        audit(session, job.owner if job else None, "gate", f"model:{challenger_id}", detail)
    log.info("gate for recalibrated version %s: %s", challenger_id, reason)


def refuse_recalibration(session, settings: Settings, schedule) -> str | None:
    """For a schedule whose recipe is `recalibrate`: why it cannot run now (no active
    version, too few labels, one class only), or None. None for other recipes."""
    if (schedule.config or {}).get("recipe") != rc.NAME:
        return None
    from db.registry import active_version

    champion = active_version(session, schedule.modality)
    if champion is None:
        return f"no active {schedule.modality} model to recalibrate"
    try:
        check_request(session, settings, champion.id)
    except rc.Refused as exc:
        return str(exc)
    return None


def recalibration_options(schedule, champion) -> dict:
    """What a schedule's training job adds for the `recalibrate` recipe."""
    if (schedule.config or {}).get("recipe") != rc.NAME or champion is None:
        return {}
    return {"recalibrate": {"parent": champion.id}}
