"""A study's verdict from the results of all its jobs, in ONE function: the study
worklist, the stored study row, the Structured Report and the job's series summary
(db.jobs.series_summary) all read the same rule, models.study_aggregate.

Per modality and per series: the score is the chosen aggregate
(models.study_aggregate.CHOSEN, measured in bench/study_aggregate.py; README) over the
screened images that are in distribution: CT slices inside the lungs (a slice without
lung is "not screened", models.ct_slice, and counted apart, not as a failure), X-ray
frontal images (the only ones the router screens). The label is the score against the
version's threshold. When too many screened images are unlike the training scans, or
none is left, the verdict abstains: no score, flagged, with the reason. The study's
score is its highest modality score; it is flagged when any modality is flagged
(abstained, or its deciding images out of distribution)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, ModelVersion, Result, Scan, StudyJob
from db.studies import counted_scan
from models.study_aggregate import AGGREGATES, CHOSEN, summarise

RULE = AGGREGATES[CHOSEN][1]


def study_verdict(session: Session, study_id: int) -> dict:
    """Score, label and flags of the study, per modality and per series, over every
    image of every job of the study that shows an instance as it stands now
    (db.studies.counted_scan: content sent again replaces the earlier scans)."""
    rows = session.execute(
        select(
            Scan.id.label("scan_id"),
            Scan.series,
            Job.id.label("job_id"),
            Job.modality,
            Result.probability,
            Result.label,
            Result.out_of_distribution,
            Result.error,
            ModelVersion.threshold,
            ModelVersion.id.label("version_id"),
        )
        .join(StudyJob, StudyJob.job_id == Scan.job_id)
        .join(Job, Job.id == Scan.job_id)
        .outerjoin(Result, Result.scan_id == Scan.id)
        .outerjoin(ModelVersion, ModelVersion.id == Result.model_version_id)
        .where(StudyJob.study_id == study_id, counted_scan(study_id))
        .order_by(Scan.job_id, Scan.position)
    ).all()
    by_modality: dict[str, list] = {}
    by_series: dict[tuple[str, str], list] = {}
    for row in rows:
        by_modality.setdefault(row.modality, []).append(row)
        by_series.setdefault((row.modality, row.series or ""), []).append(row)
    modalities = {m: summarise(r) for m, r in by_modality.items()}
    series = [
        {"series": s or None, "modality": m, **summarise(r)} for (m, s), r in by_series.items()
    ]
    decided = [m for m in modalities.values() if m["score"] is not None]
    top = max(decided, key=lambda m: m["score"], default=None)
    abstained = [m for m in modalities.values() if m["abstained"] and m["n_images"]]
    reasons = [f"{name}: {m['reason']}" for name, m in modalities.items() if m["abstained"]]
    rule = RULE if not abstained or decided else f"{RULE}; {'; '.join(reasons)}"
    return {
        "rule": rule,
        "aggregate": CHOSEN,
        "score": None if top is None else top["score"],
        "label": None if top is None else top["label"],
        "flagged": bool(abstained),
        "abstained": top is None,
        "reason": "; ".join(reasons) or None,
        "images": len(rows),
        "scored": sum(m["scored"] for m in modalities.values()),
        "failed": sum(m["failed"] for m in modalities.values()),
        "n_screened": sum(m["n_screened"] for m in modalities.values()),
        "n_outside_lungs": sum(m["n_outside_lungs"] for m in modalities.values()),
        "n_out_of_distribution": sum(m["n_out_of_distribution"] for m in modalities.values()),
        "modalities": modalities,
        "series": series,
        "jobs": sorted({row.job_id for row in rows}),
        "model_versions": sorted({row.version_id for row in rows if row.version_id}),
    }
