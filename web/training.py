"""Training requests, shared by the JSON API and the training form: check every
option, store or locate the labelled set, write the job, then send it to the
`training` queue. As with scoring, the send comes after the commit; a job whose send
failed stays queued in SQL and the reconciler sends it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from db.accounts import audit
from db.models import MODALITIES, Job
from db.training_jobs import create_training_job, mark_sent
from models.backbones import BACKBONES, PROBE_POOLS
from models.train import expected_steps
from web.datasets import Dataset, DatasetError, load_dataset, resolve_server_folder, unpack_archive
from web.extensions import get_celery
from web.http import ApiError, boolean_field, bounded_number, db_session, settings
from web.ingest import Limits
from worker.celery_app import TRAIN_MODEL

log = logging.getLogger(__name__)

# name: (type, default, low, high); defaults follow models.train.TrainConfig.
OPTIONS: dict[str, tuple[type, object, float, float]] = {
    "epochs": (int, 30, 1, 500),
    "finetune_epochs": (int, 15, 0, 500),
    "batch_size": (int, 16, 1, 512),
    "learning_rate": (float, 1e-3, 1e-6, 1.0),
    "finetune_learning_rate": (float, 1e-4, 1e-7, 1.0),
    "dropout": (float, 0.3, 0.0, 0.9),
    "patience": (int, 6, 1, 100),
    "target_sensitivity": (float, 0.9, 0.5, 0.999),
    "seed": (int, 0, 0, 2**31 - 1),
    "probe_c": (float, 0.0, 0.0, 100.0),  # 0: chosen on validation
    "input_size": (int, 0, 32, 512),  # 0: the backbone's own size
}
# finetune: head, then the top stage; probe: a linear model on frozen features (what the
# shipped models use, and the better of the two on a few hundred images here).
RECIPES = ("finetune", "probe")


def parse_training_request(form: Mapping[str, str]) -> tuple[str, dict, bool]:
    """(modality, TrainConfig fields, activate) from form fields, or ApiError."""
    modality = (form.get("modality") or "").strip().lower()
    if modality not in MODALITIES:
        raise ApiError(400, "bad_modality", f"modality must be one of {', '.join(MODALITIES)}")
    backbone = (form.get("backbone") or "efficientnet_lite0").strip().lower()
    if backbone not in BACKBONES:
        raise ApiError(400, "bad_backbone", f"backbone must be one of {', '.join(BACKBONES)}")
    config = {name: bounded_number(form, name, *OPTIONS[name]) for name in OPTIONS}
    config["backbone"] = backbone
    config["input_size"] = config["input_size"] or BACKBONES[backbone].default_size
    weights = (form.get("weights") or "auto").strip().lower()
    if weights not in ("auto", "none"):
        raise ApiError(400, "bad_weights", "weights must be auto (ImageNet where present) or none")
    config["weights"] = None if weights == "none" else "auto"
    recipe = (form.get("recipe") or "finetune").strip().lower()
    if recipe not in RECIPES:
        raise ApiError(400, "bad_recipe", f"recipe must be one of {', '.join(RECIPES)}")
    config["recipe"] = recipe
    pool = (form.get("probe_pool") or "avg").strip().lower()
    if pool not in PROBE_POOLS:
        raise ApiError(400, "bad_probe_pool", f"probe_pool must be one of {', '.join(PROBE_POOLS)}")
    config["probe_pool"] = pool
    config["probe_scales"] = _probe_scales(form, config)
    config["probe_imagenet_view"] = _probe_imagenet_view(form, config)
    config["hflip"] = boolean_field(form, "hflip")
    config["equalize"] = boolean_field(form, "equalize")
    return modality, config, boolean_field(form, "activate")


MAX_PROBE_SCALES = 3


def _probe_scales(form: Mapping[str, str], config: dict) -> list[int]:
    """`probe_scales`: comma-separated further sizes for the probe's backbone, each
    within input_size's bounds and different from the others and the input size."""
    raw = (form.get("probe_scales") or "").strip()
    if not raw:
        return []
    _kind, _default, lo, hi = OPTIONS["input_size"]
    message = (
        f"probe_scales must be up to {MAX_PROBE_SCALES} comma-separated sizes from {lo:g} to "
        f"{hi:g} px, each different from input_size and from each other"
    )
    try:
        scales = [int(part) for part in raw.split(",")]
    except ValueError:
        raise ApiError(400, "bad_probe_scales", message) from None
    sizes = [config["input_size"], *scales]
    fits = all(lo <= s <= hi for s in scales) and len(set(sizes)) == len(sizes)
    if len(scales) > MAX_PROBE_SCALES or not fits:
        raise ApiError(400, "bad_probe_scales", message)
    if config["recipe"] != "probe":
        raise ApiError(400, "bad_probe_scales", "probe_scales apply to recipe=probe only")
    return scales


def _probe_imagenet_view(form: Mapping[str, str], config: dict) -> int:
    """`probe_imagenet_view`: the size of the probe's unequalised, ImageNet-scaled view,
    within input_size's bounds; 0 or absent for none."""
    _kind, _default, lo, hi = OPTIONS["input_size"]
    size = bounded_number(form, "probe_imagenet_view", int, 0, 0, hi)
    if size and size < lo:
        raise ApiError(
            400, "bad_probe_imagenet_view",
            f"probe_imagenet_view must be 0 (none) or from {lo:g} to {hi:g} px",
        )  # fmt: skip
    if size and config["recipe"] != "probe":
        raise ApiError(
            400, "bad_probe_imagenet_view", "probe_imagenet_view applies to recipe=probe only"
        )
    return size


def _dataset(archive: bytes | None, data_path: str | None, modality: str) -> tuple[Dataset, str]:
    cfg = settings()
    if bool(archive) == bool(data_path):
        raise ApiError(400, "no_dataset", "send a .zip as `dataset`, or a server `data_path`")
    try:
        if archive:
            limits = Limits(cfg.max_files_per_job, cfg.max_archive_ratio, cfg.max_upload_bytes)
            dataset = unpack_archive(archive, cfg.datasets_dir, limits)
            return dataset, dataset.path.relative_to(cfg.data_dir).as_posix()
        folder = resolve_server_folder(data_path, [cfg.datasets_dir, *cfg.dataset_roots])
        return load_dataset(folder, modality), str(folder)
    except DatasetError as exc:
        raise ApiError(422, "dataset_unusable", str(exc)) from None


def submit_training_job(
    form: Mapping[str, str], archive: bytes | None, owner: str | None = None
) -> tuple[Job, dict]:
    modality, config, activate = parse_training_request(form)
    dataset, stored = _dataset(archive, (form.get("data_path") or "").strip() or None, modality)
    options = {"dataset": stored, "config": config, "activate": activate}
    with db_session() as session:
        job = create_training_job(session, modality, options, expected_steps(config), owner=owner)
        audit(session, owner, "submit_training", f"job:{job.id}", {"config": config})
    try:
        get_celery().send_task(TRAIN_MODEL, args=[job.id])
    except Exception:  # the broker is down: the reconciler sends it from SQL
        log.exception("could not enqueue training job %s; it stays queued in SQL", job.id)
    else:
        with db_session() as session:
            mark_sent(session, job.id)
    return job, dataset.summary()
