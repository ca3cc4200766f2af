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
from scanq.children import own_group_ending_with_parent
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
    """Starts the parts of a stack and stops them in order.

    Each part runs in a process group of its own (scanq.children), so the terminal's
    Ctrl-C reaches only this supervisor: the parts are then told once, with SIGTERM
    (gunicorn and Celery's graceful stop), and the services they use, Redis, stop only
    after them. A second Ctrl-C while they stop asks them to stop at once (Celery's
    cold shutdown: a batch in flight is delivered again)."""

    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    services: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    stopping: bool = False
    hurry: bool = False

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=own_group_ending_with_parent)
        self.children.append((name, proc))
        return proc

    def adopt(self, name: str, proc: subprocess.Popen) -> None:
        """A service the parts use (Redis): stopped after every part."""
        self.services.append((name, proc))

    def handle_signals(self) -> None:
        """Ctrl-C or SIGTERM: stop; the same again while stopping: stop at once."""

        def _on_signal(_signum, _frame):
            if self.stopping:
                self.hurry = True
            self.stopping = True

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)

    def wait(self) -> int:
        """Block until a child exits or a signal arrives; returns that child's code."""
        while not self.stopping:
            for name, proc in self.children + self.services:
                code = proc.poll()
                if code is not None:
                    click.echo(f"{name} exited with {code}; stopping the stack", err=True)
                    return code or 1
            time.sleep(0.2)
        return 0

    def stop(self, grace: float = 30.0) -> None:
        """Stop every part at once, then the services; a part still running after
        `grace` seconds is killed (and said so)."""
        if self.stopping and any(p.poll() is None for _, p in self.children):
            click.echo("stopping ScanQ (Ctrl-C again stops it at once)", err=True)
        self.stopping = True
        self._stop_all(self.children, grace)
        self.hurry = False  # a second Ctrl-C cuts the parts short, not Redis's last write
        self._stop_all(self.services, grace)

    def _stop_all(self, procs: list[tuple[str, subprocess.Popen]], grace: float) -> None:
        running = [(name, p) for name, p in procs if p.poll() is None]
        for _name, proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline, hurried = time.monotonic() + grace, False
        while running:
            running = [(name, p) for name, p in running if p.poll() is None]
            if self.hurry and not hurried:
                hurried = True
                deadline = min(deadline, time.monotonic() + HURRY_GRACE_S)
                for _name, proc in running:
                    proc.send_signal(signal.SIGQUIT)  # Celery's cold, gunicorn's quick stop
            if running and time.monotonic() > deadline:
                for name, proc in running:
                    click.echo(f"{name} did not stop in time; killing it", err=True)
                    proc.kill()
                    proc.wait()
                return
            time.sleep(0.05)


# After a second Ctrl-C, how long the parts have for their quick stop before being killed.
HURRY_GRACE_S = 5.0


def run_stack(settings: Settings, host: str = "127.0.0.1") -> int:
    sup = Supervisor()
    sup.handle_signals()
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
