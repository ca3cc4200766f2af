"""The real local stack for benchmarks: `scanq up` in a throwaway data directory, and
the HTTP calls a user makes. Loopback only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from cli.client import Client
from scanq.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[1]


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
        self.log = open(self.data_dir / "stack.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up"], cwd=ROOT, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self._logged_in()
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                break
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
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

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


def _pids(*args: str) -> list[int]:
    out = subprocess.run(["pgrep", *args], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]
