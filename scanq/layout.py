"""ScanQ's top-level packages and a check that they are ScanQ's own.

The repository keeps its layers as top-level packages (cli, db, models, pacs, web,
worker; see the design), and an installed ScanQ puts them into site-packages under
those names. Another distribution with a package of the same name (there are PyPI
projects called `web`, `models`, `db`, `cli`...) would overwrite ScanQ's files or be
overwritten by them when both are installed into one environment (pip does not check
for that), or shadow them from an earlier sys.path entry. `foreign_packages` finds that
without importing anything, so a command can stop with a clear message instead of
failing somewhere deep in an import; ScanQ belongs in a virtual environment or
container of its own (`make install`, the Dockerfile).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOP_LEVEL = ("cli", "db", "models", "pacs", "web", "worker")
HOME = Path(__file__).resolve().parent.parent  # where scanq/ and its siblings live


def foreign_packages() -> dict[str, str]:
    """Top-level names that do not resolve to the folder beside scanq/: name -> where
    they resolve instead ("missing" when nothing provides them)."""
    out = {}
    for name in TOP_LEVEL:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:  # absent, or a namespace package: not ours
            out[name] = "missing" if spec is None else "a namespace package"
        elif Path(spec.origin).resolve().parent != HOME / name:
            out[name] = spec.origin
    return out


def check_packages() -> None:
    """ImportError naming every top-level package that is not ScanQ's own."""
    foreign = foreign_packages()
    if foreign:
        names = ", ".join(f"{name} ({where})" for name, where in foreign.items())
        raise ImportError(
            f"these top-level packages are not ScanQ's own: {names}. Another installed "
            "distribution uses the same names; install ScanQ in a virtual environment of "
            "its own (make install)"
        )
