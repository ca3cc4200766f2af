"""Benchmarks: scripts that print measured figures (not tests), each writing a report
under `OUT`."""

from pathlib import Path

OUT = Path(__file__).parent / "out"  # reports; not committed
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data
