"""Loading a model version in the background of a worker process (worker.warmup): one
load per version however many ask, a wait that gives up without blocking scoring, and a
failed load that is reported once and tried again. Real threads; the load itself is a
function the test controls (the integration fault test loads real models)."""

import threading

import pytest

from worker import warmup


@pytest.fixture
def loads(monkeypatch):
    """Replace the model load by one that waits for the test's go."""
    calls, go = [], threading.Event()
    outcome = {"value": "predictor"}

    def load(_settings, version):
        calls.append(version[0])
        assert go.wait(10)
        if isinstance(outcome["value"], Exception):
            raise outcome["value"]
        return outcome["value"]

    monkeypatch.setattr(warmup, "_load", load)
    monkeypatch.setattr(warmup, "_loads", {})
    return calls, go, outcome


def test_one_load_per_version_and_a_wait_that_gives_up(loads):
    calls, go, _ = loads
    version = (7, "builtin/ct", 1.0, "efficientnet_lite0")
    assert warmup.ready(None, version, wait=0) is None  # loading: the task leaves the batch
    assert warmup.ready(None, version, wait=0.05) is None
    go.set()
    assert warmup.ready(None, version, wait=5) == "predictor"
    assert warmup.ready(None, version, wait=0) == "predictor"  # loaded: no wait at all
    assert calls == [7]


def test_a_failed_load_raises_once_then_loads_again(loads):
    calls, go, outcome = loads
    version = (8, "builtin/xray", 1.0, "efficientnet_lite0")
    outcome["value"] = OSError("model.keras is unreadable")
    go.set()
    with pytest.raises(OSError, match="unreadable"):
        warmup.ready(None, version, wait=5)
    outcome["value"] = "predictor"
    assert warmup.ready(None, version, wait=5) == "predictor"
    assert calls == [8, 8]


def test_the_explainer_is_prepared_on_the_predictor_it_loads_once(loads, monkeypatch):
    """A heat-map task's explainer is built in the background on the version's one
    predictor (the load the scoring tasks share), and a task asking meanwhile waits
    and then gives up instead of building it under its time limit."""
    calls, go, _ = loads
    built = []

    def explainer_for(predictor):
        built.append(predictor)
        return lambda images: (None, images)

    import models.lung.field

    monkeypatch.setattr(models.lung.field, "explainer_for", explainer_for)

    class Loaded:
        input_size = 4

    loads[2]["value"] = Loaded()
    version = (9, "builtin/xray", 1.0, "efficientnet_lite0")
    assert warmup.ready(None, version, wait=0.05, what="explainer") is None
    go.set()
    explain = warmup.ready(None, version, wait=5, what="explainer")
    assert explain is not None and warmup.ready(None, version, wait=0) is built[0]
    assert warmup.ready(None, version, wait=0, what="explainer") is explain
    assert calls == [9] and len(built) == 1
    with pytest.raises(ValueError, match="cannot prepare"):
        warmup.start(None, version, what="picture")
