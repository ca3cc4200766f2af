"""Model versions: registration, the active version per modality, activation.

The shipped default models (`models/default/<modality>/card.json`) are registered on
first start with path `builtin/<modality>`; versions trained here live under the data
directory. Exactly one version per modality is active; activation is one transaction.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from db.models import Job, ModelVersion, Result


class VersionNotFound(LookupError):
    pass


class VersionInUse(Exception):
    """The version is active, or jobs and results name it: deleting it would leave
    history pointing at nothing."""


def active_version(session: Session, modality: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.modality == modality, ModelVersion.active.is_(True))
        .order_by(ModelVersion.id.desc())
    ).first()


# Sections of a model card kept with its version (models.train writes the card).
CARD_METRICS = ("validation", "test", "split", "config", "command", "cross_validation", "ood",
                "shortcut")  # fmt: skip


def card_metrics(card: dict) -> dict:
    """What a version's row keeps of its card (GET /api/v1/models/<id> `metrics`)."""
    return {k: card.get(k) for k in CARD_METRICS}


def register_version(
    session: Session,
    card: dict,
    path: str,
    activate: bool = False,
    training_job_id: str | None = None,
) -> ModelVersion:
    test = card.get("test") or {}
    version = ModelVersion(
        modality=card["modality"],
        backbone=card["backbone"],
        input_size=int(card["input_size"]),
        path=path,
        threshold=float(card["threshold"]),
        temperature=float(card.get("temperature", 1.0)),
        auc=test.get("auc"),
        sensitivity=test.get("sensitivity"),
        specificity=test.get("specificity"),
        metrics=card_metrics(card),
        data_fingerprint=card.get("data_fingerprint"),
        training_job_id=training_job_id,
    )
    session.add(version)
    session.flush()
    if activate:
        activate_version(session, version.id)
    return version


SUPERSEDED = "superseded:"


class VersionSuperseded(Exception):
    """A shipped version whose files a newer release replaced: kept for the history of
    what it scored, but it can no longer score."""


def activate_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise VersionNotFound(f"no model version {version_id}")
    if version.path.startswith(SUPERSEDED):
        raise VersionSuperseded(
            f"model version {version_id} was a shipped model whose files a newer release "
            "replaced; it can no longer score"
        )
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.modality == version.modality, ModelVersion.id != version_id)
        .values(active=False)
    )
    version.active = True
    session.flush()
    return version


def ensure_builtin_versions(session: Session, model_dir: Path) -> list[ModelVersion]:
    """Register each shipped model once (by path, data fingerprint, backbone and
    threshold). A new shipped model replaces the files of the one before it, so older
    rows of that path are marked superseded (kept for the history of what they scored,
    never activated again), and the new one becomes active unless the user has made a
    version of their own the active one."""
    added = []
    for card_path in sorted(Path(model_dir).glob("*/card.json")):
        card = json.loads(card_path.read_text())
        if "modality" not in card:  # not a classifier: models/default/lung (segmenter)
            continue
        path = f"builtin/{card_path.parent.name}"
        known = session.scalars(
            select(ModelVersion).where(
                ModelVersion.path == path,
                ModelVersion.data_fingerprint == card.get("data_fingerprint"),
                ModelVersion.backbone == card["backbone"],
                ModelVersion.threshold == float(card["threshold"]),
            )
        ).first()
        if known:
            # The same files; sections added to their card since (the shortcut report)
            # reach the registered version's metrics, and what was added to those
            # (a recalibration) stays.
            metrics = {**(known.metrics or {}), **card_metrics(card)}
            if known.metrics != metrics:
                known.metrics = metrics
            continue
        current = active_version(session, card["modality"])
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.path == path)
            .values(path=SUPERSEDED + path, active=False)
        )
        version = register_version(session, card, path)
        if current is None or current.path.startswith(("builtin/", SUPERSEDED)):
            activate_version(session, version.id)
        added.append(version)
    return added


def delete_version(session: Session, version_id: int) -> ModelVersion:
    """Remove a version that nothing uses; the caller removes its files."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise VersionNotFound(f"no model version {version_id}")
    if version.path.startswith("builtin/"):
        raise VersionInUse(f"model version {version_id} is a shipped model")
    if version.active:
        raise VersionInUse(f"model version {version_id} is active; activate another first")
    used = session.scalar(
        select(
            exists().where(Job.model_version_id == version_id, Job.kind == "inference")
            | exists().where(Result.model_version_id == version_id)
        )
    )
    if used:
        raise VersionInUse(f"model version {version_id} scored jobs whose results name it")
    session.execute(
        update(Job).where(Job.model_version_id == version_id).values(model_version_id=None)
    )
    session.delete(version)
    session.flush()
    return version
