"""Load model versions outside any batch's time limit.

Celery's time limit (SCANQ_BATCH_TIME_LIMIT) runs from the start of a task and cannot
be paused, so a task that loads its model spends part of its limit on the load. On a
loaded machine a fresh worker process's first batch ran out of time while the model
loaded, and where a load takes longer than the limit every delivery died and the job
never ended.

So a model version is loaded, and its first call traced, in a background thread of the
worker process that needs it (`start`), and the scoring task only takes a batch once
its version is ready here (`ready`): it waits a little, then leaves the batch for a
later delivery, so the limit only ever covers decoding and scoring. A new inference
worker process starts loading the active versions as soon as it exists (worker.signals),
before its first batch arrives.

A heat-map task (worker.explain) needs more than the predictor: the Keras model and its
traced gradient pass. It is prepared the same way (`what="explainer"`), on top of the
version's predictor, so that task's limit does not count the load either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future

import numpy as np

from models.inference import Predictor
from scanq.settings import Settings

log = logging.getLogger(__name__)

# (version id, path, temperature, backbone), as worker.runtime.predictor_for takes them.
VersionArgs = tuple[int, str, float, str]

# What can be prepared in the background: a version's predictor, or its heat-map
# explainer (models.lung.field.explainer_for), which is built on the predictor.
WHAT = ("predictor", "explainer")

_lock = threading.Lock()
_loads: dict[tuple[str, int], Future] = {}


def _load(settings: Settings, version: VersionArgs) -> Predictor:
    from worker import runtime

    predictor = runtime.predictor_for(settings, *version)
    # The first call traces the graph (TensorFlow) or plans it (ONNX Runtime): done here
    # too, so that the first batch is not the one that pays for it.
    size = predictor.input_size
    predictor.predict_with_features(np.zeros((1, size, size, 1), np.float32))
    return predictor


def _load_explainer(settings: Settings, version: VersionArgs):
    from models.lung.field import explainer_for

    predictor = start(settings, version).result()  # this thread may wait: no limit here
    explain = explainer_for(predictor)
    size = predictor.input_size
    explain(np.zeros((1, size, size, 1), np.float32))  # traces the gradient pass
    return explain


def _make(what: str, settings: Settings, version: VersionArgs):
    return _load_explainer(settings, version) if what == "explainer" else _load(settings, version)


def _run(future: Future, what: str, settings: Settings, version: VersionArgs) -> None:
    started = time.monotonic()
    try:
        future.set_result(_make(what, settings, version))
        log.info("model version %s: %s ready in %.1f s (pid %s, outside any time limit)",
                 version[0], what, time.monotonic() - started, os.getpid())  # fmt: skip
    except BaseException as exc:  # kept for the task that waits on it, which raises it
        log.exception("model version %s: preparing its %s failed", version[0], what)
        future.set_exception(exc)


def start(settings: Settings, version: VersionArgs, what: str = "predictor") -> Future:
    """Start preparing `what` of `version` in this process unless it is ready or under
    way."""
    if what not in WHAT:
        raise ValueError(f"cannot prepare {what!r}: one of {', '.join(WHAT)}")
    key = (what, version[0])
    with _lock:
        future = _loads.get(key)
        if future is None:
            future = _loads[key] = Future()
            threading.Thread(target=_run, args=(future, what, settings, version),
                             name=f"load-{what}-{version[0]}", daemon=True).start()  # fmt: skip
    return future


def ready(
    settings: Settings, version: VersionArgs, wait: float, what: str = "predictor"
) -> Predictor | None:
    """The version's predictor (or explainer) once ready in this process; None if it is
    still loading after `wait` seconds. A failed load raises its error once; the next
    call loads again."""
    future = start(settings, version, what)
    try:
        return future.result(timeout=wait)
    except TimeoutError:
        return None
    except BaseException:
        with _lock:
            if _loads.get((what, version[0])) is future:
                del _loads[(what, version[0])]
        raise


def start_active(settings: Settings) -> list[int]:
    """Start loading every active version (one per modality); their ids."""
    from db.models import ModelVersion
    from db.session import session_scope

    with session_scope(settings.database_url) as session:
        versions = [
            (v.id, v.path, v.temperature, v.backbone)
            for v in session.query(ModelVersion).filter(ModelVersion.active.is_(True))
        ]
    for version in versions:
        start(settings, version)
    return [v[0] for v in versions]
