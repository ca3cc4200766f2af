"""Site monitoring: how one model version does on this site's confirmed cases, beside
its card's test figures, and whether the site's scans drift from the images it was
measured on. One report serves the JSON API (`GET /api/v1/monitoring`), the page
(`/monitoring`), its SVG pictures, the drift banner on every page and /metrics.

Everything here is NumPy and SQL (models.metrics, models.drift): the web process never
imports TensorFlow. A version without a drift reference gets one from a worker
(worker.drift) and the report says it is pending meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import numpy as np
from flask import Response, g, jsonify, render_template, request
from sqlalchemy.orm import Session

from db.models import MODALITIES, ModelVersion, iso, utcnow
from db.monitoring import Confirmed, Scope, confirmed, count_scored, scored
from db.registry import SUPERSEDED, active_version
from models import drift, metrics
from models.calibration import expected_calibration_error
from scanq import DISCLAIMER
from web import monitoring_plots as plots
from web.api import bp as api_bp
from web.auth import current_user
from web.extensions import get_celery
from web.http import ApiError, db_session, settings
from web.pages import bp as pages_bp
from web.submission import resolve_model_version
from worker.celery_app import DRIFT_REFERENCE

log = logging.getLogger(__name__)
RELIABILITY_BINS = 10
ALERT_DAYS = 7  # the banner and /metrics look at windows of the last week
BANNER_TTL_S = 15.0
RESEND_REFERENCE_S = 300.0


@dataclass(frozen=True)
class Query:
    modality: str
    version: ModelVersion
    scope: Scope

    def filters(self) -> dict:
        return {
            "since": iso(self.scope.since),
            "until": iso(self.scope.until),
            "user": self.scope.owner,
        }


def _when(values: Mapping, name: str, end_of_day: bool) -> datetime | None:
    """A date (2026-12-01) or ISO time; a date `until` includes that whole day."""
    raw = (values.get(name) or "").strip()
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"bad_{name}", f"{name} must be a date (YYYY-MM-DD) or an "
                                           "ISO 8601 time") from None  # fmt: skip
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    if end_of_day and len(raw) == 10:
        dt += timedelta(days=1)
    return dt


def parse_query(session: Session, values: Mapping) -> Query:
    """modality (required), model_version (default: the active one), since, until and
    user. A user who is not an admin sees only their own jobs' figures."""
    modality = (values.get("modality") or "").strip().lower()
    if modality not in MODALITIES:
        raise ApiError(400, "bad_modality", f"modality must be one of {', '.join(MODALITIES)}")
    version = resolve_model_version(session, modality, (values.get("model_version") or "").strip())
    since, until = _when(values, "since", False), _when(values, "until", True)
    if since and until and since >= until:
        raise ApiError(400, "bad_range", "since must be before until")
    user = current_user()
    owner = (values.get("user") or "").strip() or None
    if not user.is_admin:
        if owner not in (None, user.name):
            raise ApiError(403, "forbidden", "only an admin sees another user's jobs")
        owner = user.name
    return Query(modality, version, Scope(version.id, since, until, owner))


# --- site performance -------------------------------------------------------------


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Per equal-width probability bin: count, mean predicted, observed share covid."""
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append({
            "bin": [b / bins, (b + 1) / bins],
            "n": n,
            "mean_predicted": round(float(p[m].mean()), 4) if n else None,
            "observed": round(float(y[m].mean()), 4) if n else None,
        })  # fmt: skip
    return out


def performance(rows: list[Confirmed], threshold: float, with_ci: bool = True) -> dict:
    """Figures over the confirmed results that have a score; counts only (figures None)
    when there are none. AUC needs both labels, sensitivity a covid case, specificity a
    non-covid one; each figure's own n is given beside it."""
    with_score = [r for r in rows if r.probability is not None]
    y = np.asarray([r.label for r in with_score], dtype=int)
    p = np.asarray([r.probability for r in with_score], dtype=np.float64)
    body = {
        "n_confirmed": len(with_score),
        "n_covid": int(y.sum()),
        "n_non_covid": int(len(y) - y.sum()),
        "n_confirmed_not_scored": len(rows) - len(with_score),
        "n_patients": len({r.patient for r in with_score}),
        "threshold": round(float(threshold), 6),
        "auc": None, "auc_ci95": [None, None], "sensitivity": None, "specificity": None,
        "confusion": None, "ece": None, "roc": None, "reliability": None,
    }  # fmt: skip
    if not with_score:
        return body
    c = metrics.confusion(y, p, threshold)
    auc = metrics.roc_auc(y, p)
    if not np.isnan(auc):
        body["auc"] = round(auc, 4)
        if with_ci:  # the pictures need no interval
            ci = metrics.bootstrap_auc_ci(y, p, [r.patient for r in with_score])
            body["auc_ci95"] = [None if np.isnan(v) else round(v, 4) for v in ci]
    body["confusion"] = c
    if c["tp"] + c["fn"]:
        body["sensitivity"] = round(c["tp"] / (c["tp"] + c["fn"]), 4)
    if c["tn"] + c["fp"]:
        body["specificity"] = round(c["tn"] / (c["tn"] + c["fp"]), 4)
    body["ece"] = round(expected_calibration_error(y, p), 4)
    body["reliability"] = reliability(y, p)
    if body["auc"] is not None:
        fpr, tpr = metrics.roc_curve(y, p)
        point = [c["fp"] / max(c["fp"] + c["tn"], 1), c["tp"] / max(c["tp"] + c["fn"], 1)]
        body["roc"] = {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist(),
                       "operating_point": [round(v, 4) for v in point]}  # fmt: skip
    return body


def card_figures(version: ModelVersion) -> dict:
    test = (version.metrics or {}).get("test") or {}
    keys = ("auc", "auc_ci95", "sensitivity", "specificity", "n", "n_covid", "n_non_covid",
            "n_patients", "confusion")  # fmt: skip
    return {"split": "test", **{k: test.get(k) for k in keys},
            "threshold": version.threshold}  # fmt: skip


def warnings_for(site: dict, card: dict) -> list[str]:
    out = []
    hi = (site.get("auc_ci95") or [None, None])[1]
    if hi is not None and card.get("auc") is not None and hi < card["auc"]:
        out.append(
            f"On this site's {site['n_confirmed']} confirmed cases the AUC is "
            f"{site['auc']:.3f} [95% CI {site['auc_ci95'][0]:.3f}, {hi:.3f}]: the whole "
            f"interval lies below the model card's test AUC of {card['auc']:.3f}. The model "
            "does worse here than on its own test patients; consider recalibrating or "
            "retraining on this site's confirmed labels."
        )
    return out


# --- drift ------------------------------------------------------------------------

_sent_reference: dict[int, float] = {}


def reference_for(version: ModelVersion) -> tuple[dict | None, str]:
    """(the version's drift reference, its status: ready, pending or unavailable)."""
    if version.path.startswith(SUPERSEDED):
        return None, "unavailable: this shipped version's files were replaced"
    folder = settings().version_dir(version.path)
    ref = drift.load_reference(folder)
    if ref is not None:
        return (None, f"unavailable: {ref['error']}") if ref.get("error") else (ref, "ready")
    now = time.monotonic()
    if now - _sent_reference.get(version.id, -1e9) > RESEND_REFERENCE_S:
        try:
            get_celery().send_task(DRIFT_REFERENCE, args=[version.id])
            _sent_reference[version.id] = now
        except Exception:  # the broker is down: asked again on the next look
            log.exception("could not ask for the drift reference of version %s", version.id)
    return None, "pending: a worker is scoring the version's reference images"


def _window_bounds(key: str, period: str) -> tuple[datetime, datetime]:
    if period == "day":
        start = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return start, start + timedelta(days=1)
    start = datetime.strptime(key + "-1", "%G-W%V-%u").replace(tzinfo=timezone.utc)
    return start, start + timedelta(days=7)


def drift_windows(rows, reference: dict | None, period: str, cfg) -> list[dict]:
    by_key: dict[str, list] = {}
    for at, p, s, f in rows:
        by_key.setdefault(drift.window_key(at, period), []).append((p, s, f))
    out = []
    for key in sorted(by_key):
        start, end = _window_bounds(key, period)
        stats = drift.window_stats(by_key[key], reference)
        reasons = drift.drift_reasons(stats, cfg.drift_psi, cfg.drift_ood_share,
                                      cfg.drift_min_images)  # fmt: skip
        out.append({"window": key, "start": iso(start), "end": iso(end), **stats,
                    "alert": bool(reasons), "alert_reasons": reasons})  # fmt: skip
    return out


def drift_report(session: Session, version: ModelVersion, scope: Scope) -> dict:
    cfg = settings()
    reference, status = reference_for(version)
    rows = scored(session, scope)
    days = drift_windows(rows, reference, "day", cfg)
    weeks = drift_windows(rows, reference, "week", cfg)
    recent = (utcnow() - timedelta(days=ALERT_DAYS)).isoformat().replace("+00:00", "Z")
    alerting = [w for w in days + weeks if w["alert"] and w["end"] > recent]
    return {
        "method": "population stability index over 10 equal-mass bins of the reference, "
        "less its chance level (models.drift)",
        "reference": {
            "status": status,
            "images": reference.get("images") if reference else None,
            "n": reference.get("n") if reference else None,
            "flagged_share": reference.get("flagged_share") if reference else None,
            "score_quantiles": drift.quantiles(reference["scores"]) if reference else None,
            "ood_quantiles": drift.quantiles(reference["ood_scores"]) if reference else None,
        },
        "settings": {
            "psi": cfg.drift_psi,
            "ood_share": cfg.drift_ood_share,
            "min_images": cfg.drift_min_images,
        },  # fmt: skip
        "day": days,
        "week": weeks,
        "alert": bool(alerting),
        "alert_reasons": [f"{w['window']}: {r}" for w in alerting for r in w["alert_reasons"]],
    }


# --- the report -------------------------------------------------------------------


def monitoring_report(values: Mapping) -> dict:
    with db_session() as session:
        q = parse_query(session, values)
        site = performance(confirmed(session, q.scope), q.version.threshold)
        card = card_figures(q.version)
        body = {
            "modality": q.modality,
            "model_version": q.version.id,
            "model_label": q.version.label,
            "active": q.version.active,
            "filters": q.filters(),
            "n_scored": count_scored(session, q.scope),
            **site,
            "card": card,
            "warnings": warnings_for(site, card),
            "drift": drift_report(session, q.version, q.scope),
            "disclaimer": DISCLAIMER,
        }
    body["links"] = {name: f"/api/v1/monitoring/{name}.svg?{request.query_string.decode()}"
                     for name in PLOTS}  # fmt: skip
    return body


def _plot_roc(session, q: Query) -> str:
    site = performance(confirmed(session, q.scope), q.version.threshold, with_ci=False)
    if not site["roc"]:
        return plots.empty_svg("Site ROC", "needs confirmed labels of both classes")
    title = f"Site ROC, AUC {site['auc']:.3f} (n={site['n_confirmed']})"
    return plots.roc_svg(site["roc"]["fpr"], site["roc"]["tpr"],
                         site["roc"]["operating_point"], title)  # fmt: skip


def _plot_reliability(session, q: Query) -> str:
    site = performance(confirmed(session, q.scope), q.version.threshold, with_ci=False)
    if not site["reliability"]:
        return plots.empty_svg("Reliability", "no confirmed labels yet")
    return plots.reliability_svg(
        site["reliability"], f"Reliability (n={site['n_confirmed']}, ECE {site['ece']})"
    )


def _drift_plot(kind: str):
    def draw(session, q: Query) -> str:
        reference, _ = reference_for(q.version)
        windows = drift_windows(scored(session, q.scope), reference, "day", settings())
        labels = [w["window"][5:] for w in windows]
        if kind == "flagged":
            bands = [[w["flagged_share"]] if w["flagged_share"] is not None else None
                     for w in windows]  # fmt: skip
            ref = [reference["flagged_share"]] if reference else None
            return plots.windows_svg(
                labels,
                bands,
                "Share flagged out of distribution, per day",
                "share flagged",
                ref,
                limit=settings().drift_ood_share,
            )
        key, ref_key = ("score_quantiles", "scores") if kind == "scores" else (
            "ood_quantiles", "ood_scores")  # fmt: skip
        ref = drift.quantiles(reference[ref_key]) if reference else None
        bands = [w[key] for w in windows]
        top = max([1.0] + [b[-1] for b in bands if b] + (ref or [])) if kind == "ood" else 1.0
        what = "P(covid)" if kind == "scores" else "out-of-distribution score"
        return plots.windows_svg(labels, bands, f"{what} per day (10-90%, median)", what, ref,
                                 ymax=float(np.ceil(top * 2) / 2),
                                 limit=1.0 if kind == "ood" else None)  # fmt: skip

    return draw


PLOTS = {
    "roc": _plot_roc,
    "reliability": _plot_reliability,
    "flagged": _drift_plot("flagged"),
    "scores": _drift_plot("scores"),
    "ood": _drift_plot("ood"),
}


@api_bp.get("/monitoring")
def api_monitoring():
    return jsonify(monitoring_report(request.args))


@api_bp.get("/monitoring/<name>.svg")
def api_monitoring_plot(name: str):
    if name not in PLOTS:
        raise ApiError(404, "plot_not_found", f"plots: {', '.join(PLOTS)}")
    with db_session() as session:
        svg = PLOTS[name](session, parse_query(session, request.args))
    return Response(svg, mimetype="image/svg+xml")


@pages_bp.get("/monitoring")
def monitoring_page():
    values = dict(request.args)
    values.setdefault("modality", "xray")
    try:
        report, error = monitoring_report(values), None
    except ApiError as exc:
        report, error = None, exc.message
    with db_session() as session:
        versions = session.query(ModelVersion).order_by(ModelVersion.id).all()
        choices = [(v.id, v.label, v.modality, v.active) for v in versions]
    query = urlencode({k: v for k, v in values.items() if v})
    return render_template("monitoring.html", r=report, error=error, values=values,
                           versions=choices, query=query, modalities=MODALITIES,
                           plots=list(PLOTS)), 400 if error else 200  # fmt: skip


# --- the banner and /metrics ---------------------------------------------------------

_banner_lock = threading.Lock()
_banner: tuple[float, list[dict]] = (-1e9, [])


def drift_alerts(session: Session) -> list[dict]:
    """Per modality, the active version's drift alert over the last week's windows."""
    out = []
    since = utcnow() - timedelta(days=ALERT_DAYS + 7)  # whole ISO weeks reaching back
    for modality in MODALITIES:
        version = active_version(session, modality)
        if version is None:
            continue
        report = drift_report(session, version, Scope(version.id, since=since))
        out.append({"modality": modality, "model_version": version.id,
                    "alert": report["alert"], "reasons": report["alert_reasons"]})  # fmt: skip
    return out


def cached_drift_alerts() -> list[dict]:
    global _banner
    with _banner_lock:
        at, alerts = _banner
        if time.monotonic() - at < BANNER_TTL_S:
            return alerts
    with db_session() as session:
        alerts = drift_alerts(session)
    with _banner_lock:
        _banner = (time.monotonic(), alerts)
    return alerts


@pages_bp.app_context_processor
def _drift_banner() -> dict:
    """`drift_banner` for base.html: the modalities whose scans drift, for anyone
    logged in. A failure here must never break a page."""
    if not getattr(g, "user", None):
        return {"drift_banner": []}
    try:
        return {"drift_banner": [a for a in cached_drift_alerts() if a["alert"]]}
    except Exception:
        log.exception("drift banner")
        return {"drift_banner": []}
