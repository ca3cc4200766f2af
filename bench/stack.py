"""The real local stack for benchmarks: `scanq up` in a throwaway data directory, and
the HTTP calls a user makes. Loopback only."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from cli.client import Client
from scanq.children import own_group_ending_with_parent
from scanq.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 300  # a fresh stack on a loaded two-core machine
STOP_DEADLINE_S = 60


class LocalStack:
    """`scanq up` in a throwaway data directory, stopped with Ctrl-C's signal."""

    def __init__(self, data_dir: Path, batch_size: int):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        self.env |= {"SCANQ_DATA_DIR": str(data_dir), "SCANQ_PORT": str(self.port),
                     "SCANQ_BATCH_SIZE": str(batch_size), "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
        self.database_url = f"sqlite:///{data_dir / 'scanq.sqlite3'}"

    def __enter__(self) -> LocalStack:
        """Start `scanq up` and wait until it answers; a start that fails stops what it
        had started before raising."""
        self.log = open(self.data_dir / "stack.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up"], cwd=ROOT, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
            # Its own group (so SIGKILL to the group reaches it, not this process) that
            # gets SIGTERM if this process dies without stopping it.
            preexec_fn=own_group_ending_with_parent,
        )  # fmt: skip
        atexit.register(self.stop)  # an exception or Ctrl-C that skips __exit__
        try:
            self._wait_until_healthy()
            return self._logged_in()
        except BaseException:
            self.stop()
            raise

    def _wait_until_healthy(self) -> None:
        """Until /healthz answers 200: patient, since a loaded machine starts the
        stack slowly (a refused connection, a read timeout and a 503 all mean not yet)."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/healthz", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"stack did not start; see {self.data_dir / 'stack.log'}")

    def _logged_in(self) -> LocalStack:
        """Requests carry the token of the admin that the first `scanq up` made."""
        self.token = (self.data_dir / "run" / "admin.token").read_text().strip()
        self.env["SCANQ_TOKEN"] = self.token
        self.http = self.session()
        return self

    def session(self) -> requests.Session:
        """A new HTTP session (one per thread) that sends the admin's token."""
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.token}"
        return http

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the stack whatever happened (idempotent): Ctrl-C's signal to `scanq up`,
        which stops its parts in order; if it has not ended in time, it and whatever of
        its parts is left are killed."""
        if getattr(self, "proc", None) is None:
            return
        parts = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for part in parts:  # each part has a process group of its own (cli.stack)
            with contextlib.suppress(Exception):
                if part.is_running():
                    part.kill()
        self.proc = None
        self.log.close()
        atexit.unregister(self.stop)

    def submit(
        self, files: list[Path], version_id: int | None = None, modality: str = "xray"
    ) -> tuple[str, float, float]:
        """(job id, wall-clock start as a UNIX time, upload round trip in seconds),
        through `scanq submit`'s own client: fields first, files read from disk as they
        go (cli/upload_body.py)."""
        client = Client(self.url, timeout=600, token=self.token)  # one per call: threads
        start, t0 = time.time(), time.perf_counter()
        job = client.submit(files, modality, version_id)
        return job["id"], start, time.perf_counter() - t0

    def wait(self, job_id: str, timeout: float = 3600) -> dict:
        return Client(self.url, token=self.token).wait(job_id, timeout, interval=0.2)

    def inference_worker_rss_kb(self) -> int:
        """Resident memory of the inference worker's pool processes (where models run)."""
        total = 0
        for parent in _pids("-f", "inference@"):
            for child in _pids("-P", str(parent)):
                try:
                    status = Path(f"/proc/{child}/status").read_text()
                except OSError:
                    continue
                total += next(int(line.split()[1]) for line in status.splitlines()
                              if line.startswith("VmRSS:"))  # fmt: skip
        return total


def _descendants(pid: int) -> list:
    """The processes below `pid` (psutil's, from the dev extra; none without it)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _pids(*args: str) -> list[int]:
    out = subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]
