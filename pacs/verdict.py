"""A study's verdict from the results of all its jobs, in ONE function so the rule can
be replaced by a measured one (issue #19 point 5) without touching anything else.

Today's rule is the one job pages already use for a series: the study's score is its
highest image probability (CT: over its slices; X-ray: over its frontal images, the
only ones the router screens), and the image that gives it decides the label. The
study is flagged when that image is out of distribution, or when more than half of its
scored images are."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, ModelVersion, Result, Scan, StudyJob

RULE = "highest image probability"


def _summary(rows: list) -> dict:
    scored = [r for r in rows if r.probability is not None]
    best = max(scored, key=lambda r: r.probability, default=None)
    flagged = sum(1 for r in scored if r.out_of_distribution)
    return {
        "images": len(rows),
        "scored": len(scored),
        "failed": sum(1 for r in rows if r.error is not None),
        "out_of_distribution": flagged,
        "score": None if best is None else best.probability,
        "label": None if best is None else best.label,
        "deciding_scan_id": None if best is None else best.scan_id,
        "threshold": None if best is None else best.threshold,
        "flagged": best is not None
        and (bool(best.out_of_distribution) or flagged * 2 > len(scored)),
    }


def study_verdict(session: Session, study_id: int) -> dict:
    """Score, label and flags of the study, per modality and per series, over every
    image of every job of the study."""
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
        .where(StudyJob.study_id == study_id)
        .order_by(Scan.job_id, Scan.position)
    ).all()
    by_modality: dict[str, list] = {}
    by_series: dict[tuple[str, str], list] = {}
    for row in rows:
        by_modality.setdefault(row.modality, []).append(row)
        by_series.setdefault((row.modality, row.series or ""), []).append(row)
    modalities = {m: _summary(r) for m, r in by_modality.items()}
    series = [
        {"series": s or None, "modality": m, **_summary(r)} for (m, s), r in by_series.items()
    ]
    decided = [m for m in modalities.values() if m["score"] is not None]
    top = max(decided, key=lambda m: m["score"], default=None)
    return {
        "rule": RULE,
        "score": None if top is None else top["score"],
        "label": None if top is None else top["label"],
        "flagged": any(m["flagged"] for m in decided),
        "images": len(rows),
        "scored": sum(m["scored"] for m in modalities.values()),
        "failed": sum(m["failed"] for m in modalities.values()),
        "modalities": modalities,
        "series": series,
        "jobs": sorted({row.job_id for row in rows}),
        "model_versions": sorted({row.version_id for row in rows if row.version_id}),
    }
