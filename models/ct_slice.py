"""A scanner CT slice, in Hounsfield units, made to look like the slices the CT model
learnt from, or set aside when it shows no lung.

The training slices (../shared/data/ct) are figure crops from papers: the chest (or the
lungs) fills the frame. A scanner slice shows the whole field of view: air around the
body, the table under it, and in a full volume many slices above or below the lungs.
Fed as it is, the model sees mostly air and table, and a slice of the abdomen gets a
probability like any other. So, before the lung window:

1. the body: the largest region denser than BODY_HU (fat, muscle, bone; not air), found
   on a coarse copy of the slice (at most ANALYSIS_SIDE px) after an opening that cuts
   thin bridges, so the table and the cushion, which touch the body at most along a
   line, fall away; its holes (the lungs, the airways) are filled;
2. the lungs: the regions inside the body at air density (below LUNG_HU), each larger
   than MIN_REGION of the body (bowel gas and the oesophagus are smaller);
3. a slice whose lungs cover less than MIN_LUNG_FRACTION of the body's cross-section
   shows no lung worth screening: it is reported as NO_LUNG and left out of the study
   score (pacs.verdict);
4. otherwise the slice is cropped to the body's box (CROP_TO; or to the lungs' box)
   widened by MARGIN on each side. Measured on dev crops put back into simulated
   scanner slices (bench/study_aggregate.py; README), the body's box came closest to
   the crops themselves: closer than the lungs' box, and closer than the body's box
   with the air around the body made black like the figures' surround.

A slice that is already a tight crop (what is denser than air spans TIGHT of the frame
both ways: no field of air around the body to remove) passes unchanged, lung check
included: someone chose that crop, and many figure crops cut through the lungs, whose
shape then says nothing. So the DICOM that the tests write from the dev crops, and an
upload of a cropped slice, are read as before.

Only NumPy: DICOM decoding runs in the web process and the DICOM listener, which do
not install SciPy. Connected regions are found by label propagation on the coarse grid
(tens of milliseconds a 512 px slice). The thresholds are anatomical round numbers,
checked on the dev crops and simulated scanner slices (bench/study_aggregate.py,
README), not fitted: there is no scanner CT among the dev data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BODY_HU = -500.0  # denser than this: body (or table), not air or lung
LUNG_HU = -400.0  # inside the body and lighter than this: lung or airway
ANALYSIS_SIDE = 128  # masks are found on a copy at most this many pixels a side
CLOSING = 2  # radius (coarse pixels) of the closing that seals the chest wall
OPENING = 1  # radius (coarse pixels) of the opening that detaches the table
MIN_REGION = 0.01  # a lung region covers at least this share of the body
MIN_LUNG_FRACTION = 0.05  # below this share of the body in lung: no lung in the slice
# The crop: the body's box (or the lungs'), widened by this share of its size each side.
CROP_TO = "body"
MARGIN = {"body": 0.03, "lungs": 0.08}
OUTSIDE_HU = -2000.0  # outside the body, with blank_outside: black, as a figure's surround
MIN_SPAN = 0.4  # lungs narrower than this share of the body: crop to the body
TIGHT = 0.85  # the body's box spans this share of the frame both ways: already a crop

NO_LUNG = "not screened: no lung in this slice"
NO_BODY = "not screened: no body in this slice"
NOT_SCREENED = "not screened:"  # the prefix of every reason a slice is left out


def is_not_screened(error: str | None) -> bool:
    """Whether a result's error is a slice left out on purpose (no lung), not a failure."""
    return bool(error) and error.startswith(NOT_SCREENED)


@dataclass(frozen=True)
class PreparedSlice:
    hu: np.ndarray  # the slice to window: cropped, or as it came
    reason: str | None  # None: screen it; else why it is left out (NO_LUNG, NO_BODY)
    box: tuple[int, int, int, int]  # (top, bottom, left, right) of `hu` in the slice
    lung_fraction: float  # lung area / body area
    already_cropped: bool


def _coarse(hu: np.ndarray) -> tuple[np.ndarray, int]:
    step = max(1, int(np.ceil(max(hu.shape) / ANALYSIS_SIDE)))
    h, w = (hu.shape[0] // step) * step, (hu.shape[1] // step) * step
    if step == 1:
        return hu.astype(np.float32), 1
    blocks = hu[:h, :w].astype(np.float32).reshape(h // step, step, w // step, step)
    return blocks.mean(axis=(1, 3)), step


def _shift_min(a: np.ndarray, fill) -> np.ndarray:
    """Minimum of each cell and its four neighbours (cells outside count as `fill`)."""
    p = np.pad(a, 1, constant_values=fill)
    return np.minimum.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    for _ in range(r):
        mask = _shift_min(mask.astype(np.uint8), 0).astype(bool)
    return mask


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    for _ in range(r):
        mask = ~_shift_min((~mask).astype(np.uint8), 1).astype(bool)
    return mask


def label(mask: np.ndarray) -> np.ndarray:
    """4-connected regions of a boolean mask: 0 outside, else the smallest flat index
    (+1) of the region's cells. Label propagation: each pass spreads the minimum one
    cell (and, through a pointer jump, further along already-merged runs)."""
    big = np.iinfo(np.int64).max
    flat = np.arange(1, mask.size + 1, dtype=np.int64).reshape(mask.shape)
    labels = np.where(mask, flat, big)
    while True:
        spread = np.where(mask, _shift_min(labels, big), big)
        # Pointer jump: a label is a cell index; take that cell's own (smaller) label.
        jumped = np.where(mask, spread.reshape(-1)[np.minimum(spread, mask.size).reshape(-1) - 1]
                          .reshape(mask.shape), big)  # fmt: skip
        jumped = np.minimum(spread, jumped)
        if np.array_equal(jumped, labels):
            return np.where(mask, labels, 0)
        labels = jumped


def _largest(mask: np.ndarray) -> np.ndarray:
    labels = label(mask)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    if len(ids) == 0:
        return mask
    return labels == ids[np.argmax(counts)]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region of its complement that does not touch the border."""
    outside = label(np.pad(~mask, 1, constant_values=True))
    return ~(outside == outside[0, 0])[1:-1, 1:-1]


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass(frozen=True)
class Anatomy:
    """Body and lung masks on the coarse grid, with its step in slice pixels."""

    dense: np.ndarray  # everything denser than air (body, table, clothes)
    body: np.ndarray
    lungs: np.ndarray
    step: int

    @property
    def lung_fraction(self) -> float:
        area = int(self.body.sum())
        return float(self.lungs.sum()) / area if area else 0.0


def find_anatomy(hu: np.ndarray) -> Anatomy:
    """The body (table dropped, holes filled) and the lungs of a slice in HU."""
    coarse, step = _coarse(hu)
    dense = coarse > BODY_HU
    opened = _dilate(_erode(dense, OPENING), OPENING)
    if not opened.any():
        opened = dense
    if not opened.any():
        return Anatomy(dense, dense, dense, step)
    largest = _largest(opened) & dense
    # Closed before filling: a chest wall thinner than the grid (or cut by a crop) still
    # encloses its lungs.
    body = _fill_holes(_erode(_dilate(largest, CLOSING), CLOSING)) | largest
    air = body & (coarse < LUNG_HU)
    labels = label(air)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[counts >= MIN_REGION * body.sum()]
    return Anatomy(dense, body, np.isin(labels, keep) & air, step)


def prepare(
    hu: np.ndarray, to: str = CROP_TO, margin: float | None = None, blank_outside: bool = False
) -> PreparedSlice:
    """The slice cropped to its body (`to="lungs"`: to its lungs' box), widened by
    `margin` (with `blank_outside`, what lies outside the body made darker than any
    window shows, like the figures' black surround: measured worse, so off); or the
    slice as it came when already a crop; or the reason it is not screened."""
    if margin is None:
        margin = MARGIN[to]
    height, width = hu.shape
    whole = (0, height, 0, width)
    anatomy = find_anatomy(hu)
    if not anatomy.body.any():
        return PreparedSlice(hu, NO_BODY, whole, 0.0, False)
    s = anatomy.step
    fraction = anatomy.lung_fraction
    dt, db, dl, dr = (v * s for v in _box(anatomy.dense))
    if (db - dt) >= TIGHT * height and (dr - dl) >= TIGHT * width:
        return PreparedSlice(hu, None, whole, fraction, True)
    if fraction < MIN_LUNG_FRACTION:
        return PreparedSlice(hu, NO_LUNG, whole, fraction, False)
    top, bottom, left, right = (v * s for v in _box(anatomy.body))
    if (bottom - top) < MIN_SPAN * height and (right - left) < MIN_SPAN * width:
        # A body this small in the frame is not a body found: leave the slice whole
        # (the out-of-distribution check judges what the model then sees).
        return PreparedSlice(hu, None, whole, fraction, False)
    lt, lb, ll, lr = (v * s for v in _box(anatomy.lungs))
    if to == "body" or (lr - ll) < MIN_SPAN * (right - left):
        lt, lb, ll, lr = top, bottom, left, right  # not two lungs' width: the body's box
    dh, dw = margin * (lb - lt), margin * (lr - ll)
    inside = to == "lungs"  # a lung box stays within the body's; a body box may not
    box = (
        max(top if inside else 0, int(lt - dh)),
        min(bottom if inside else height, int(np.ceil(lb + dh))),
        max(left if inside else 0, int(ll - dw)),
        min(right if inside else width, int(np.ceil(lr + dw))),
    )
    out = hu[box[0] : box[1], box[2] : box[3]]
    if blank_outside:
        body = np.kron(anatomy.body, np.ones((s, s), dtype=bool))
        body = np.pad(
            body, ((0, max(0, height - body.shape[0])), (0, max(0, width - body.shape[1])))
        )
        out = np.where(body[box[0] : box[1], box[2] : box[3]], out, OUTSIDE_HU)
    return PreparedSlice(out, None, box, fraction, False)
