"""Command lines of ScanQ's long-running processes, shared by `scanq up`, `scanq worker`
and docker-compose's documentation, so every way of starting them agrees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def celery_bin() -> list[str]:
    return [sys.executable, "-m", "celery"]


def worker_command(
    queues: str, concurrency: int, name: str = "scanq", pool: str = "prefork"
) -> list[str]:
    return [
        *celery_bin(),
        "-A", "worker.app", "worker",
        "-Q", queues,
        "-c", str(concurrency),
        "-P", pool,
        "-n", f"{name}@%h",
        "--loglevel", "INFO",
        "-O", "fair",
    ]  # fmt: skip


def beat_command() -> list[str]:
    """Beat with celery-redbeat's scheduler (set in worker.celery_app): its state and
    lock live in Redis, so there is no local schedule file."""
    return [*celery_bin(), "-A", "worker.app", "beat", "--loglevel", "INFO"]


def listener_command() -> list[str]:
    """The DICOM listener (pacs.listener) on SCANQ_DICOM_HOST:SCANQ_DICOM_PORT."""
    return [sys.executable, "-m", "cli.main", "dicom-listener"]


def web_command(port: int, workers: int = 2, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{host}:{port}",
        "--workers", str(workers),
        "--threads", "4",
        "--timeout", "600",
        "--access-logfile", "-",
        # prometheus_client's multiprocess directory for /metrics (#21)
        "--config", "python:web.gunicorn_conf",
        "web.wsgi:app",
    ]  # fmt: skip


def count_gpus() -> int:
    """GPUs visible to this host, without importing TensorFlow in the parent."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))
