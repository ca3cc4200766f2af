"""Job state on SQLite and, where a server is available, PostgreSQL: migrations from
empty, conditional transitions and idempotent results."""

import pytest
from sqlalchemy import func, select, text

from db.jobs import (
    IncomingScan,
    abort_upload,
    add_scans,
    cancel_job,
    claim_batch,
    close_upload,
    create_inference_job,
    finish_batch,
    open_inference_job,
    pending_scans,
    refresh_job,
    store_results,
)
from db.migrate import downgrade, upgrade
from db.models import Batch, Job, Result, Scan
from db.registry import activate_version, active_version, register_version
from db.session import get_engine, session_scope
from tests.conftest import empty_postgres_url

CARD = {"modality": "xray", "backbone": "smallcnn", "input_size": 64, "threshold": 0.5}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    else:
        url = empty_postgres_url()
    upgrade(url)
    return url


def _job(session, n_good=5, n_bad=1, batch_size=2):
    version = register_version(session, CARD, "builtin/xray", activate=True)
    scans = [IncomingScan(f"g{i}.png", "0" * 64, f"scans/{i}", 10, 64, 64) for i in range(n_good)]
    scans += [IncomingScan(f"b{i}.png", error="not an image") for i in range(n_bad)]
    return create_inference_job(session, "xray", version.id, scans, batch_size)


def _score_all(db_url, job_id, batch_ids):
    for batch_id in batch_ids:
        with session_scope(db_url) as s:
            claim_batch(s, batch_id)
            rows = [{"scan_id": sc.id, "job_id": job_id, "probability": 0.2, "label": "non_covid"}
                    for sc in pending_scans(s, batch_id)]  # fmt: skip
            store_results(s, rows)
            finish_batch(s, batch_id)
            refresh_job(s, job_id)


def test_a_job_still_receiving_files_is_scored_but_does_not_finish(db_url):
    """Streamed uploads: batches of the first files are scored while the job is open;
    only closing the upload lets the last result finish it."""
    good = [IncomingScan(f"g{i}.png", "0" * 64, f"scans/{i}", 10, 64, 64) for i in range(5)]
    with session_scope(db_url) as s:
        version = register_version(s, CARD, "builtin/xray", activate=True)
        job_id = open_inference_job(s, "xray", version.id, owner=None).id
        first = add_scans(s, job_id, list(enumerate(good[:2])), batch_size=2, first_seq=0)
    _score_all(db_url, job_id, first)
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.done, job.total) == ("receiving", 2, 2)
        assert job.started_at is not None
        rest = [(2, IncomingScan("bad.png", error="not an image"))]
        rest += [(3 + i, scan) for i, scan in enumerate(good[2:])]
        later = add_scans(s, job_id, rest, batch_size=2, first_seq=len(first))
        assert len(later) == 2
    _score_all(db_url, job_id, later)
    with session_scope(db_url) as s:
        assert refresh_job(s, job_id).status == "receiving"  # every result in, still open
        job = close_upload(s, job_id)
        assert (job.status, job.done, job.failed, job.total) == ("succeeded", 5, 1, 6)
        positions = s.scalars(select(Scan.position).where(Scan.job_id == job_id)).all()
        assert sorted(positions) == list(range(6))
        seqs = s.scalars(select(Batch.seq).where(Batch.job_id == job_id)).all()
        assert sorted(seqs) == [0, 1, 2]


def test_an_aborted_upload_fails_its_job_and_skips_its_batches(db_url):
    scans = [IncomingScan(f"g{i}.png", "0" * 64, f"scans/{i}", 10, 64, 64) for i in range(4)]
    with session_scope(db_url) as s:
        version = register_version(s, CARD, "builtin/xray", activate=True)
        job_id = open_inference_job(s, "xray", version.id, owner=None).id
        batch_ids = add_scans(s, job_id, list(enumerate(scans)), batch_size=2, first_seq=0)
    with session_scope(db_url) as s:
        abort_upload(s, job_id, "upload interrupted: client went away")
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and "client went away" in job.error
        assert claim_batch(s, batch_ids[0]) is None
        assert close_upload(s, job_id).status == "failed"  # a late close changes nothing


def test_an_upload_that_stopped_arriving_is_failed_by_the_reconciler(db_url):
    """A web process that died mid-upload leaves a `receiving` job nothing will close."""
    from datetime import timedelta

    from db.jobs import fail_stalled_uploads
    from db.models import utcnow

    scans = [IncomingScan("g.png", "0" * 64, "scans/g", 10, 64, 64)]
    with session_scope(db_url) as s:
        version = register_version(s, CARD, "builtin/xray", activate=True)
        quiet = open_inference_job(s, "xray", version.id).id
        busy = open_inference_job(s, "xray", version.id).id
        add_scans(s, quiet, list(enumerate(scans)), batch_size=2, first_seq=0)
    with session_scope(db_url) as s:
        s.get(Job, quiet).received_at = utcnow() - timedelta(minutes=20)
    with session_scope(db_url) as s:
        assert fail_stalled_uploads(s, utcnow() - timedelta(minutes=10)) == [quiet]
    with session_scope(db_url) as s:
        assert s.get(Job, quiet).status == "failed"
        assert "stopped arriving" in s.get(Job, quiet).error
        assert s.get(Job, busy).status == "receiving"


def test_job_lifecycle_is_idempotent(db_url):
    with session_scope(db_url) as s:
        job, batch_ids = _job(s)
        job_id = job.id
        assert len(batch_ids) == 3 and job.failed == 1 and job.status == "queued"
    for batch_id in batch_ids:
        for _attempt in range(2):  # a redelivered batch must not add rows
            with session_scope(db_url) as s:
                batch = claim_batch(s, batch_id)
                if batch is None:
                    continue
                rows = [
                    {"scan_id": sc.id, "job_id": job_id, "probability": 0.7, "label": "covid"}
                    for sc in pending_scans(s, batch_id)
                ]
                store_results(s, rows)
                store_results(s, rows)
                finish_batch(s, batch_id)
                refresh_job(s, job_id)
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.done, job.failed, job.total) == ("succeeded", 5, 1, 6)
        assert job.started_at is not None and job.finished_at is not None
        assert s.scalar(select(func.count(Result.id)).where(Result.job_id == job_id)) == 6
        assert claim_batch(s, batch_ids[0]) is None  # done batches are not claimed again


def test_cancelled_job_batches_are_not_claimed(db_url):
    with session_scope(db_url) as s:
        job, batch_ids = _job(s)
        assert cancel_job(s, job.id)
        assert not cancel_job(s, job.id)
        assert claim_batch(s, batch_ids[0]) is None
        assert s.get(Job, job.id).status == "cancelled"


def test_one_active_version_per_modality(db_url):
    with session_scope(db_url) as s:
        a = register_version(s, CARD, "builtin/xray", activate=True)
        b = register_version(s, CARD, "versions/2", activate=False)
        assert active_version(s, "xray").id == a.id
        activate_version(s, b.id)
        assert active_version(s, "xray").id == b.id
        assert s.get(type(a), a.id).active is False


def test_migrations_go_down_and_up(db_url):
    downgrade(db_url, "base")
    with get_engine(db_url).connect() as conn:
        names = conn.execute(text("SELECT 1")).all()
        assert names
    upgrade(db_url)
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(Job.id))) == 0


def test_new_shipped_model_supersedes_the_old_one(db_url, tmp_path):
    import json

    from db.registry import SUPERSEDED, VersionSuperseded, ensure_builtin_versions

    shipped = tmp_path / "default" / "xray"
    shipped.mkdir(parents=True)

    def release(threshold: float) -> list:
        card = {**CARD, "threshold": threshold, "data_fingerprint": "f"}
        (shipped / "card.json").write_text(json.dumps(card))
        with session_scope(db_url) as s:
            return [v.id for v in ensure_builtin_versions(s, tmp_path / "default")]

    (first,) = release(0.5)
    assert release(0.5) == []  # the same release is registered once
    (second,) = release(0.4)
    with session_scope(db_url) as s:
        assert active_version(s, "xray").id == second
        old = s.get(type(active_version(s, "xray")), first)
        assert old.path == SUPERSEDED + "builtin/xray" and not old.active
        with pytest.raises(VersionSuperseded, match="newer release"):
            activate_version(s, first)
        own = register_version(s, CARD, "model_versions/mine", activate=True)
    (third,) = release(0.3)
    with session_scope(db_url) as s:  # a version the user chose stays active
        assert active_version(s, "xray").id == own.id
        assert s.get(type(own), third).path == "builtin/xray"


def test_migrations_build_exactly_the_tables_of_the_models(db_url):
    """A column added to db/models.py without a migration (or the reverse) fails here,
    on SQLite and on PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base
    from db.session import get_engine

    with get_engine(db_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_token_use_is_recorded_once_an_hour_by_one_of_concurrent_requests(db_url):
    from datetime import timedelta

    from db.accounts import (
        TOKEN_TOUCH_INTERVAL,
        create_token,
        ensure_user,
        match_token,
        touch_token,
    )
    from db.models import utcnow

    with session_scope(db_url) as s:
        token = create_token(s, ensure_user(s, "dana"))
    with session_scope(db_url) as s:
        match = match_token(s, token)
        assert match.user.name == "dana" and match.last_used_at is None and match.touch_due()
    now = utcnow()
    with session_scope(db_url) as s:  # two requests that both saw a stale time
        assert touch_token(s, match.token_id, now) is True
        assert touch_token(s, match.token_id, now + timedelta(seconds=1)) is False
    with session_scope(db_url) as s:
        seen = match_token(s, token)
        assert not seen.touch_due(now + TOKEN_TOUCH_INTERVAL - timedelta(seconds=1))
        assert seen.touch_due(now + TOKEN_TOUCH_INTERVAL)
        assert touch_token(s, match.token_id, now + TOKEN_TOUCH_INTERVAL) is True
        assert match_token(s, "sq_not-a-token") is None


def test_migration_0009_gives_each_meaning_of_the_heartbeat_its_column(db_url):
    """An upload's last files, a queued run's last send and a running run's last report
    were one column; the data migration moves each to its own, and back."""
    downgrade(db_url, "0008")
    t = "2026-01-02 03:04:05"
    rows = [("upload", "inference", "receiving"), ("done", "inference", "succeeded"),
            ("queued", "training", "queued"), ("running", "training", "running")]  # fmt: skip
    with get_engine(db_url).begin() as conn:
        for job_id, kind, status in rows:
            conn.execute(
                text("INSERT INTO job (id, kind, modality, status, total, done, failed, "
                     "options, progress, created_at, heartbeat_at) VALUES (:id, :kind, 'ct', "
                     ":status, 0, 0, 0, '{}', '{}', :t, :t)"),
                {"id": job_id, "kind": kind, "status": status, "t": t},
            )  # fmt: skip
    upgrade(db_url, "0009")
    query = text("SELECT id, heartbeat_at, sent_at, received_at FROM job ORDER BY id")
    with get_engine(db_url).connect() as conn:
        got = {r[0]: tuple(v is not None for v in r[1:]) for r in conn.execute(query)}
    assert got == {"upload": (False, False, True), "done": (False, False, True),
                   "queued": (False, True, False), "running": (True, False, False)}  # fmt: skip
    downgrade(db_url, "0008")
    with get_engine(db_url).connect() as conn:
        back = conn.execute(text("SELECT COUNT(*) FROM job WHERE heartbeat_at IS NULL")).scalar()
    assert back == 0
    upgrade(db_url)
