"""Ctrl-C on `scanq up`: every part stops, in order, without being killed.

The terminal's Ctrl-C goes to the whole foreground process group; this test sends
SIGINT the same way, to a stack that has a browser-like idle connection open and a
kept-alive one (what used to hold a gunicorn worker until its master killed it, 30 s
later, with "Worker was sent SIGKILL! Perhaps out of memory?")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import requests

from tests.conftest import ROOT, free_port

# A bound that only a stuck part reaches: gunicorn kills a worker that has not ended
# after its 30 s graceful timeout, and the supervisor a part after its 30 s grace, so
# both would have printed their line by then.
STOP_BOUND_S = 45


def test_ctrl_c_stops_every_part_without_killing_any(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"SCANQ_DATA_DIR": str(tmp_path), "SCANQ_PORT": str(port),
            "SCANQ_DICOM_PORT": str(free_port()), "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "cli.main", "up"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    parts: list[psutil.Process] = []
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert up.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "scanq up did not start"
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        kept_alive = requests.Session()
        assert kept_alive.get(f"{url}/login", timeout=10).status_code == 200
        idle = socket.create_connection(("127.0.0.1", port))  # a browser's preconnect
        parts = psutil.Process(up.pid).children(recursive=True)
        assert len(parts) >= 6  # redis, three workers, beat, web (and their children)
        # Each part in a group of its own: the terminal's Ctrl-C reaches only the
        # supervisor, which stops the parts before the Redis they use.
        assert all(os.getpgid(p.pid) != up.pid for p in parts)

        os.killpg(up.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        up.wait(STOP_BOUND_S)
        _gone, left = psutil.wait_procs(parts, timeout=5)
        idle.close()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        for proc in parts:  # a part left behind by a failure must not outlive the test
            if proc.is_running():
                proc.kill()
    out = log_path.read_text(errors="replace")
    assert up.returncode == 0, out[-3000:]
    assert not left, f"still running after scanq up ended: {left}"
    for alarming in ("SIGKILL", "did not stop", "Traceback", "Perhaps out of memory"):
        assert alarming not in out, out[-3000:]
    assert "stopping ScanQ" in out


def test_a_benchmark_killed_outright_leaves_no_stack_behind(tmp_path):
    """bench.stack.LocalStack in a process that dies by SIGKILL (no atexit, no
    finally): its `scanq up` gets SIGTERM from the kernel and stops every part."""
    script = (
        "import sys, time; from pathlib import Path; from bench.stack import LocalStack\n"
        "stack = LocalStack(Path(sys.argv[1]), 8).__enter__()\n"
        "print(stack.proc.pid, flush=True); time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["SCANQ_DICOM_PORT"] = str(free_port())
    bench = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    parts: list[psutil.Process] = []
    try:
        up_pid = int(bench.stdout.readline())  # once the stack answers /healthz
        parts = [psutil.Process(up_pid), *psutil.Process(up_pid).children(recursive=True)]
        assert len(parts) >= 7
        bench.kill()
        bench.wait()
        _gone, left = psutil.wait_procs(parts, timeout=STOP_BOUND_S)
        assert not left, f"left running by a killed benchmark: {left}"
    finally:
        if bench.poll() is None:
            bench.kill()
        for proc in parts:
            if proc.is_running():
                proc.kill()
