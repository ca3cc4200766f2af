"""The monitoring page's pictures as SVG, drawn from the same figures the API returns
(no plotting library: the web image has neither matplotlib nor TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

W, H, M = 380, 300, 46  # width, height, margin
BLUE, RED, GREY = "#105ec4", "#c81e1e", "#999"


def _frame(title: str, xlabel: str, ylabel: str, body: list[str], ymax: float = 1.0) -> str:
    side_x, side_y = W - 2 * M, H - 2 * M
    ticks = []
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        y = H - M - t * side_y
        ticks.append(f'<line x1="{M - 4}" y1="{y:.1f}" x2="{M}" y2="{y:.1f}" stroke="black"/>')
        ticks.append(f'<text x="{M - 6}" y="{y + 4:.1f}" text-anchor="end">{t * ymax:g}</text>')
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{M}" y="18" font-size="12">{escape(title)}</text>',
        f'<rect x="{M}" y="{M}" width="{side_x}" height="{side_y}" fill="none" stroke="black"/>',
        *ticks,
        f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>',
        f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">'
        f"{escape(ylabel)}</text>",
        *body,
        "</svg>",
    ])  # fmt: skip


def _xy(x: float, y: float, ymax: float = 1.0) -> tuple[float, float]:
    return M + x * (W - 2 * M), H - M - min(max(y / ymax, 0.0), 1.0) * (H - 2 * M)


def _path(points: Sequence[tuple[float, float]], colour: str, dash: str = "", width=2) -> str:
    d = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"{extra}/>'


def empty_svg(title: str, message: str) -> str:
    body = [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">{escape(message)}</text>']
    return _frame(title, "", "", body)


def roc_svg(fpr: Sequence[float], tpr: Sequence[float], point: Sequence[float] | None,
            title: str) -> str:  # fmt: skip
    body = [_path([_xy(0, 0), _xy(1, 1)], GREY, "4 3", 1)]
    body.append(_path([_xy(x, y) for x, y in sorted(zip(fpr, tpr, strict=True))], BLUE))
    if point:
        cx, cy = _xy(*point)
        body.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="none" stroke="{RED}" '
            'stroke-width="2"><title>operating point at the threshold</title></circle>'
        )
    return _frame(title, "1 - specificity", "sensitivity", body)


def reliability_svg(bins: Sequence[dict], title: str) -> str:
    """Observed share of COVID against mean predicted probability, per probability bin;
    each point's size grows with its count."""
    body = [_path([_xy(0, 0), _xy(1, 1)], GREY, "4 3", 1)]
    pts = [(b["mean_predicted"], b["observed"], b["n"]) for b in bins if b["n"]]
    if pts:
        body.append(_path([_xy(x, y) for x, y, _ in pts], BLUE, width=1))
        biggest = max(n for *_, n in pts)
        for x, y, n in pts:
            cx, cy = _xy(x, y)
            r = 3 + 5 * (n / biggest) ** 0.5
            body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{BLUE}">'
                        f"<title>n={n}</title></circle>")  # fmt: skip
    return _frame(title, "mean predicted P(covid)", "observed share covid", body)


def windows_svg(
    labels: Sequence[str],
    bands: Sequence[Sequence[float] | None],
    title: str,
    ylabel: str,
    reference: Sequence[float] | None = None,
    ymax: float = 1.0,
    limit: float | None = None,
) -> str:
    """Per window (left to right): the median with a 10-90% band (`bands` hold the five
    quantiles 10/25/50/75/90, or one value), the reference's median and 10-90% as dashed
    lines, and an alert limit as a red line."""
    n = len(labels)
    if n == 0:
        return empty_svg(title, "no scored images in this range")
    body = []
    if reference:
        for q in (reference[0], reference[len(reference) // 2], reference[-1]):
            body.append(_path([_xy(0, q, ymax), _xy(1, q, ymax)], GREY, "4 3", 1))
    if limit is not None:
        body.append(_path([_xy(0, limit, ymax), _xy(1, limit, ymax)], RED, "2 2", 1))
    xs = [(k + 0.5) / n for k in range(n)]
    mids = []
    for x, band in zip(xs, bands, strict=True):
        if not band:
            continue
        lo, mid, hi = band[0], band[len(band) // 2], band[-1]
        (x0, y_lo), (_, y_hi) = _xy(x, lo, ymax), _xy(x, hi, ymax)
        body.append(f'<line x1="{x0:.1f}" y1="{y_lo:.1f}" x2="{x0:.1f}" y2="{y_hi:.1f}" '
                    f'stroke="{BLUE}" stroke-opacity="0.4" stroke-width="6"/>')  # fmt: skip
        mids.append(_xy(x, mid, ymax))
    if mids:
        body.append(_path(mids, BLUE))
        for cx, cy in mids:
            body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{BLUE}"/>')
    step = max(1, n // 6)
    for k in range(0, n, step):
        x, _ = _xy(xs[k], 0)
        body.append(f'<text x="{x:.1f}" y="{H - M + 14}" text-anchor="middle">'
                    f"{escape(labels[k])}</text>")  # fmt: skip
    return _frame(title, "", ylabel, body, ymax)
