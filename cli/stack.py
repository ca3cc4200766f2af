"""`scanq up`: the whole local stack in the foreground (private Redis, workers, beat,
web), stopped cleanly on Ctrl-C or when any part dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click

from cli.processes import beat_command, listener_command, web_command, worker_command
from db.migrate import upgrade
from db.registry import ensure_builtin_versions
from db.session import session_scope
from scanq.embedded_redis import start_redis, wait_for_redis
from scanq.settings import Settings


def prepare(settings: Settings) -> None:
    """Schema to the newest revision and shipped models registered (no TensorFlow)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        for v in ensure_builtin_versions(session, settings.model_dir):
            click.echo(f"registered shipped model {v.label}", err=True)


def first_admin(settings: Settings) -> None:
    """On the first start, a local admin so the embedded default works at once: its
    password and token are printed once; the token is also kept in var/run/admin.token
    (owner-only) where the local `scanq` commands find it."""
    import secrets

    from sqlalchemy import func, select

    from db.accounts import audit, create_token, ensure_user
    from db.models import User

    with session_scope(settings.database_url) as session:
        if session.scalar(select(func.count(User.id))):
            return
        password = secrets.token_urlsafe(12)
        admin = ensure_user(session, "admin", "admin", password=password)
        token = create_token(session, admin, "made by the first scanq up")
        audit(session, None, "create_user", "user:admin", {"role": "admin", "by": "scanq up"})
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.admin_token_file
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(token + "\n")
    click.echo(
        f"First start: created the admin user.\n  log in as: admin / {password}\n"
        f"  API token: {token}\n  (shown once; the token is also in {path})"
    )


@dataclass
class Supervisor:
    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    stopping: bool = False

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env)
        self.children.append((name, proc))
        return proc

    def adopt(self, name: str, proc: subprocess.Popen) -> None:
        self.children.append((name, proc))

    def wait(self) -> int:
        """Block until a child exits or a signal arrives; returns that child's code."""
        while not self.stopping:
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    click.echo(f"{name} exited with {code}; stopping the stack", err=True)
                    return code or 1
            time.sleep(0.5)
        return 0

    def stop(self, grace: float = 30.0) -> None:
        """Stop in reverse start order (web first, Redis last) so in-flight work drains."""
        self.stopping = True
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    click.echo(f"{name} did not stop in {grace:.0f} s; killing it", err=True)
                    proc.kill()
                    proc.wait()


def run_stack(settings: Settings, host: str = "127.0.0.1") -> int:
    sup = Supervisor()

    def _on_signal(signum, _frame):
        sup.stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    env = dict(os.environ, SCANQ_DATA_DIR=str(settings.data_dir))
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if settings.redis_url:
            wait_for_redis(settings.redis_url)
        else:
            proc, url = start_redis(settings.data_dir)
            sup.adopt("redis", proc)
            settings.redis_url_file.write_text(url + "\n")
            click.echo(f"private Redis at {url} (data in {settings.data_dir / 'redis'})", err=True)
        prepare(settings)
        first_admin(settings)
        sup.start("worker-inference", worker_command("inference", 1, "inference"), env)
        sup.start("worker-training", worker_command("training", 1, "training"), env)
        # Results back to the PACS (#19): a small worker without TensorFlow, so a PACS
        # that is down never holds up scoring.
        sup.start("worker-dicom-out", worker_command("dicom_out", 1, "dicom-out"), env)
        sup.start("beat", beat_command(), env)
        sup.start("web", web_command(settings.port, host=host), env)
        if settings.dicom_port:  # SCANQ_DICOM_PORT=0 turns the DICOM listener off
            sup.start("dicom-listener", listener_command(), env)
        click.echo(f"ScanQ is running: open http://{host}:{settings.port}/  (Ctrl-C stops)")
        sys.stdout.flush()
        code = sup.wait()
    finally:
        sup.stop()
        if not settings.redis_url:
            settings.redis_url_file.unlink(missing_ok=True)
    return code
