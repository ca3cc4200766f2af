"""The geometry of the job page's histogram of scores, drawn as inline SVG by the
template (no script, no chart library): one bar per bin of [0, 1], its height scaled to
the fullest bin, and where a probability (the version's threshold) lies on the axis."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 400, 100  # the plot area, in SVG user units; axis labels lie below


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


@dataclass(frozen=True)
class Histogram:
    bars: list[Bar]
    total: int
    width: int = WIDTH
    height: int = HEIGHT

    def x_of(self, probability: float) -> float:
        return round(min(max(probability, 0.0), 1.0) * self.width, 2)


def histogram_bars(counts: list[int]) -> Histogram:
    """Bars for these per-bin counts (bins of equal width over [0, 1])."""
    step = WIDTH / len(counts)
    top = max(counts) or 1
    bars = []
    for i, n in enumerate(counts):
        h = round(HEIGHT * n / top, 2)
        low, high = i / len(counts), (i + 1) / len(counts)
        bars.append(
            Bar(round(i * step, 2), round(HEIGHT - h, 2), round(step - 1, 2), h, n, low, high)
        )
    return Histogram(bars=bars, total=sum(counts))
