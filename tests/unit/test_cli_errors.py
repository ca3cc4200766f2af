"""Every `scanq` command that talks to the server says so in one line when the server
cannot be reached, instead of a traceback."""

from __future__ import annotations

import sys

import click
import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.conftest import free_port


@pytest.mark.parametrize(
    "args",
    [
        ["status", "0" * 32],
        ["results", "0" * 32],
        ["models", "list"],
        ["models", "activate", "1"],
        ["submit", "README.md", "--modality", "ct"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_unreachable_server_is_one_clear_line(args, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("SCANQ_TOKEN", "sq_test")
    if args[0] == "submit":
        scan = tmp_path / "scan.png"
        scan.write_bytes(b"\x89PNG\r\n\x1a\n")
        args = ["submit", str(scan), *args[2:]]
    result = CliRunner().invoke(cli, [*args, "--url", url])
    assert result.exit_code == 1, result.output
    assert f"Error: cannot reach ScanQ at {url} (Connection refused); is it running?" in (
        result.output
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("args", [["token", "list"], ["user", "list"]], ids=" ".join)
def test_a_database_never_migrated_is_one_clear_line(args, tmp_path, monkeypatch):
    """The accounts commands work on the database itself: pointed at the wrong data
    dir they say so, instead of a traceback."""
    from scanq.settings import get_settings

    monkeypatch.setenv("SCANQ_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "no such table" in result.output and "(scanq migrate)?" in result.output
    assert str(tmp_path) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args", [["evaluate", "--modality", "xray", "--data", "."], ["worker"], ["up"]], ids=" ".join
)
def test_a_missing_model_runtime_says_what_to_install(args, monkeypatch):
    """Installed without the `cpu` extra, the commands that run models say which extra
    to install, in one line, before starting anything."""
    for name in ("keras", "tensorflow"):
        monkeypatch.setitem(sys.modules, name, None)  # import and find_spec both fail
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "Error: running models needs keras, tensorflow, which are not installed: " in (
        result.output
    )
    assert "pip install 'scanq[cpu]'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unchecked_import_of_the_runtime_is_one_line_too(monkeypatch):
    """The backstop in the command group: a path that imports Keras without asking."""
    from cli.main import _Commands

    @click.command()
    def needs_keras():
        import keras  # noqa: F401

    monkeypatch.setitem(sys.modules, "keras", None)
    group = _Commands(commands={"needs-keras": needs_keras})
    result = CliRunner().invoke(group, ["needs-keras"])
    assert result.exit_code == 1, result.output
    assert "running models needs keras, which is not installed: pip install" in result.output
