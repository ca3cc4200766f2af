"""Benchmarks: scripts that print measured figures (not tests), each writing a report
under `OUT`."""

import threading
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"  # reports; not committed
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data


def call_rate(
    call, rows: int, streams: int, seconds: float, min_calls: int = 2
) -> tuple[float, float]:
    """Rows per second of `call()` (each call scoring `rows` rows) with `streams` threads
    calling it at once for `seconds` (and at least `min_calls` calls each), and rows per
    CPU-second of this process: on a machine shared with other work wall time depends on
    what else runs, CPU time per row much less so."""
    calls = [0] * streams
    t0, c0 = time.perf_counter(), time.process_time()

    def loop(i: int) -> None:
        while time.perf_counter() - t0 < seconds or calls[i] < min_calls:
            call()
            calls[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = sum(calls) * rows
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)
