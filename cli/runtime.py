"""Whether this environment can run models. TensorFlow/Keras and scikit-learn come with
the `cpu` (or `gpu`) extra, not with the base package, which is all the web process
needs; the commands that run models ask here first, so a missing extra is one line
saying what to install instead of a traceback ending in "No module named 'keras'"."""

from __future__ import annotations

import importlib.util

import click

# Top-level modules the model code imports, each provided by the `cpu` and `gpu` extras.
MODEL_RUNTIME = ("keras", "tensorflow", "sklearn")
INSTALL_HINT = "pip install 'scanq[cpu]' (or 'scanq[gpu]' on a machine with CUDA GPUs)"


def missing_model_runtime() -> list[str]:
    """The model runtime's modules that cannot be imported here (none when installed)."""
    missing = []
    for name in MODEL_RUNTIME:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def runtime_message(missing: list[str] | tuple[str, ...]) -> str:
    verb = "is" if len(missing) == 1 else "are"
    return f"running models needs {', '.join(missing)}, which {verb} not installed: {INSTALL_HINT}"


def require_model_runtime() -> None:
    """Raise click's one-line error (exit status 1) when the model runtime is missing."""
    missing = missing_model_runtime()
    if missing:
        raise click.ClickException(runtime_message(missing))


def is_missing_runtime(exc: ImportError) -> bool:
    """Whether this import error is the model runtime missing (a backstop for code
    paths that import it without asking first)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return isinstance(exc, ModuleNotFoundError) and name in MODEL_RUNTIME
