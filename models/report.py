"""The pictures of a model version's evaluation report: the test ROC curve with the
chosen operating point, and the test confusion matrix at the stored threshold.

Drawn with Pillow so workers need no plotting library; both come from the figures in
the card, so a picture can never disagree with the numbers beside it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROC_FILE = "roc.png"
CONFUSION_FILE = "confusion.png"
REPORT_FILES = (ROC_FILE, CONFUSION_FILE)
_SIZE = 360
_MARGIN = 48


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def draw_roc(fpr: list[float], tpr: list[float], point: list[float] | None, title: str):
    im = Image.new("RGB", (_SIZE, _SIZE), "white")
    d = ImageDraw.Draw(im)
    side = _SIZE - 2 * _MARGIN

    def xy(x: float, y: float) -> tuple[float, float]:
        return _MARGIN + x * side, _SIZE - _MARGIN - y * side

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(180, 180, 180), width=1)
    for t in (0.25, 0.5, 0.75):
        d.line([xy(t, 0), xy(t, -0.02)], fill="black")
        d.line([xy(0, t), xy(-0.02, t)], fill="black")
    pts = sorted(zip(fpr, tpr, strict=True))
    steps = [xy(0, 0)]
    for x, y in pts:
        steps.append(xy(x, y))
    steps.append(xy(1, 1))
    d.line(steps, fill=(16, 94, 196), width=2)
    if point:
        cx, cy = xy(*point)
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=(200, 30, 30), width=2)
    f = _font()
    d.text((_MARGIN, 12), title, fill="black", font=f)
    d.text((_SIZE / 2 - 40, _SIZE - _MARGIN + 12), "1 - specificity", fill="black", font=f)
    d.text((6, _MARGIN - 16), "sensitivity", fill="black", font=f)
    d.text((_MARGIN - 10, _SIZE - _MARGIN + 4), "0", fill="black", font=f)
    d.text((_SIZE - _MARGIN - 4, _SIZE - _MARGIN + 4), "1", fill="black", font=f)
    d.text((_MARGIN - 14, _MARGIN - 6), "1", fill="black", font=f)
    return im


def draw_confusion(c: dict[str, int], title: str):
    im = Image.new("RGB", (_SIZE, _SIZE), "white")
    d = ImageDraw.Draw(im)
    f = _font()
    cell = (_SIZE - 2 * _MARGIN) / 2
    cells = [[("tp", c["tp"]), ("fn", c["fn"])], [("fp", c["fp"]), ("tn", c["tn"])]]
    biggest = max(1, *(v for row in cells for _, v in row))
    for r, row in enumerate(cells):
        for k, (name, value) in enumerate(row):
            x0, y0 = _MARGIN + k * cell, _MARGIN + r * cell
            shade = int(235 - 150 * value / biggest)
            d.rectangle([x0, y0, x0 + cell, y0 + cell], fill=(shade, shade, 255), outline="black")
            d.text((x0 + cell / 2 - 12, y0 + cell / 2 - 6), f"{name} {value}", fill="black", font=f)
    d.text((_MARGIN, 12), title, fill="black", font=f)
    d.text((_MARGIN, _MARGIN - 16), "predicted covid", fill="black", font=f)
    d.text((_MARGIN + cell, _MARGIN - 16), "predicted non_covid", fill="black", font=f)
    d.text((_MARGIN, _SIZE - _MARGIN + 8), "rows: true covid, true non_covid", fill="black",
           font=f)  # fmt: skip
    return im


def write_report_images(card: dict, out: Path) -> list[Path]:
    """Write the ROC and confusion pictures of a card's test split into `out`."""
    test = card.get("test") or {}
    roc = card.get("roc_test")
    written = []
    if roc:
        title = f"Test ROC, AUC {test.get('auc')} (n={test.get('n')})"
        draw_roc(roc["fpr"], roc["tpr"], roc.get("operating_point"), title).save(out / ROC_FILE)
        written.append(out / ROC_FILE)
    if test.get("confusion"):
        title = f"Test confusion at threshold {card['threshold']:.3f}"
        draw_confusion(test["confusion"], title).save(out / CONFUSION_FILE)
        written.append(out / CONFUSION_FILE)
    return written
