"""gunicorn settings for ScanQ's web process (`gunicorn -c python:web.gunicorn_conf`):
prometheus_client's multiprocess mode, so /metrics sums what every worker counted.

Read by gunicorn's master before it forks: PROMETHEUS_MULTIPROC_DIR (if not already
set) becomes `<data dir>/run/prometheus`, emptied when the server starts (files of a
previous run would be added to this one's counts), and a worker that exits has its
live gauges dropped. Everything else stays on the command line.
"""

from __future__ import annotations

import os
import shutil

from scanq.settings import get_settings

_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(get_settings().metrics_dir)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir


def on_starting(server) -> None:
    shutil.rmtree(_dir, ignore_errors=True)
    os.makedirs(_dir, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
