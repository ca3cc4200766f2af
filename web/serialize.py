"""JSON and CSV shapes of jobs, results and model versions, shared by API and pages."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from db.models import Job, ModelVersion, Result, Scan, iso
from models.lung.share import warning as lung_warning
from models.report import REPORT_FILES
from scanq import DISCLAIMER


def job_json(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "modality": job.modality,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        # Scored images the model's out-of-distribution check flagged (within `done`).
        "flagged": job.flagged or 0,
        "model_version": job.model_version_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "error": job.error,
        "options": job.options or {},
        **({"progress": job.progress or {}} if job.kind == "training" else {}),
        "links": {
            "self": f"/api/v1/jobs/{job.id}",
            "results": f"/api/v1/jobs/{job.id}/results",
            "csv": f"/api/v1/jobs/{job.id}/results.csv",
            "page": f"/jobs/{job.id}",
        },
    }


OOD_WARNING = (
    "out of distribution: this image is unlike the scans the model was trained on, so "
    "its probability means little"
)


def result_status(result: Result | None) -> str:
    """pending, failed, scored, or skipped (flagged out of distribution in a job that
    skips such images)."""
    if result is None:
        return "pending"
    if result.error:
        return "failed"
    return "skipped" if result.probability is None else "scored"


def ood_warning(result: Result | None) -> str | None:
    if result is None or not result.out_of_distribution:
        return None
    return f"{OOD_WARNING} ({result.ood_reason})" if result.ood_reason else OOD_WARNING


def warnings_of(scan: Scan, result: Result | None) -> str | None:
    """Everything a reader of this result should be warned about, in one line."""
    parts = [w for w in (scan.note, ood_warning(result)) if w]
    return "; ".join(parts) or None


def result_json(scan: Scan, result: Result | None) -> dict:
    return {
        "scan_id": scan.id,
        "filename": scan.filename,
        "status": result_status(result),
        "probability": None if result is None else result.probability,
        "label": None if result is None else result.label,
        "model_version": None if result is None else result.model_version_id,
        # None when the version has no out-of-distribution calibration.
        "out_of_distribution": None if result is None else result.out_of_distribution,
        "ood_score": None if result is None else result.ood_score,
        # Scored X-rays: the heat map's share inside the segmented lungs (models.lung).
        "lung_heat_share": None if result is None else result.lung_heat_share,
        "lung_warning": lung_warning(None if result is None else result.lung_heat_share),
        "warning": warnings_of(scan, result),
        "error": None if result is None else result.error,
        "sha256": scan.sha256,
        "width": scan.width,
        "height": scan.height,
        "series": scan.series,
        "frame": scan.frame,
        "links": result_links(scan.id),
    }


def result_links(scan_id: int) -> dict:
    """Where one result lives: its resource, heat map (200 once made, 202 while a
    worker makes it, 409 for an image that was not scored) and page."""
    return {
        "self": f"/api/v1/results/{scan_id}",
        "heatmap": f"/api/v1/results/{scan_id}/heatmap.png",
        "page": f"/results/{scan_id}",
    }


def model_json(version: ModelVersion) -> dict:
    return {
        "id": version.id,
        "modality": version.modality,
        "backbone": version.backbone,
        "input_size": version.input_size,
        "threshold": version.threshold,
        "auc": version.auc,
        "sensitivity": version.sensitivity,
        "specificity": version.specificity,
        "active": version.active,
        "created_at": iso(version.created_at),
        "training_job": version.training_job_id,
        "metrics": version.metrics,
        "links": {
            name.removesuffix(".png"): f"/models/{version.id}/{name}" for name in REPORT_FILES
        },
    }


CSV_COLUMNS = [
    "filename",
    "status",
    "probability",
    "label",
    "threshold",
    "model_version",
    "out_of_distribution",
    "ood_score",
    "lung_heat_share",
    "warning",
    "error",
    "sha256",
    "series",
    "frame",
]


def results_csv(rows: Iterable[tuple[Scan, Result | None]], thresholds: dict[int, float]) -> str:
    """CSV with the research-use disclaimer as its first (comment) line."""
    buf = io.StringIO()
    buf.write(f"# {DISCLAIMER}\n")
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for scan, result in rows:
        item = result_json(scan, result)
        mv = item["model_version"]
        writer.writerow(
            [
                item["filename"],
                item["status"],
                "" if item["probability"] is None else f"{item['probability']:.6f}",
                item["label"] or "",
                "" if mv is None else f"{thresholds.get(mv, float('nan')):.6f}",
                "" if mv is None else mv,
                {None: "", True: "true", False: "false"}[item["out_of_distribution"]],
                "" if item["ood_score"] is None else f"{item['ood_score']:.4f}",
                "" if item["lung_heat_share"] is None else f"{item['lung_heat_share']:.4f}",
                item["warning"] or "",
                item["error"] or "",
                item["sha256"] or "",
                item["series"] or "",
                "" if item["frame"] is None else item["frame"],
            ]
        )
    return buf.getvalue()
