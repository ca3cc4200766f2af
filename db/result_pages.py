"""A job's results in the order and subset a reader triages by: upload order or
probability, all or only the positive, flagged or failed ones, one page at a time.

Pages are keyset-paginated, like the upload-order pages before them: a cursor names the
last row shown (its probability and position), so a page costs the same deep in a job of
thousands and rows scored meanwhile neither repeat nor vanish. Sorted by probability,
rows without one (pending, failed, skipped) come last, in upload order, either way.
The page, the API and the histogram read this one module."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from db.models import Result, Scan

SORTS = ("position", "probability")
ORDERS = ("asc", "desc")
# Which results a filter keeps: "positive" is the label given at the version's threshold
# when the image was scored.
FILTERS = {
    "all": None,
    "positive": Result.label == "covid",
    "flagged": Result.out_of_distribution.is_(True),
    "failed": Result.error.is_not(None),
}
HISTOGRAM_BINS = 20


class BadView(ValueError):
    """A sort, order, filter or cursor that this module does not know; its message
    says what is accepted."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ResultView:
    """How a reader looks at a job's results (the query string of the page and API)."""

    sort: str = "position"
    order: str = "asc"  # without one: asc in upload order, desc (highest first) by probability
    filter: str = "all"

    @classmethod
    def parse(cls, args) -> ResultView:
        sort = (args.get("sort") or "position").strip().lower()
        view = cls(
            sort=sort,
            order=(args.get("order") or "").strip().lower() or _default_order(sort),
            filter=(args.get("filter") or "all").strip().lower(),
        )
        for field, allowed in (("sort", SORTS), ("order", ORDERS), ("filter", tuple(FILTERS))):
            if getattr(view, field) not in allowed:
                raise BadView(field, f"{field} must be one of {', '.join(allowed)}")
        return view

    def query_args(self) -> dict[str, str]:
        """The view as query parameters, leaving out the defaults."""
        defaults = {"sort": "position", "order": _default_order(self.sort), "filter": "all"}
        return {k: v for k, v in vars(self).items() if v != defaults[k]}


def _default_order(sort: str) -> str:
    return "desc" if sort == "probability" else "asc"


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: its position, and its probability when sorted by it
    (None for the rows without one, which come last)."""

    position: int
    probability: float | None = None

    def text(self, view: ResultView) -> str:
        if view.sort == "position":
            return str(self.position)  # the plain position, as the API has always sent
        p = "none" if self.probability is None else repr(self.probability)
        return f"{p}_{self.position}"

    @classmethod
    def parse(cls, text: str | None, view: ResultView) -> Cursor | None:
        if text is None or text == "" or text == "-1":
            return None
        try:
            if view.sort == "position":
                return cls(int(text))
            p, position = text.rsplit("_", 1)
            return cls(int(position), None if p == "none" else float(p))
        except ValueError:
            raise BadView("cursor", "cursor must be a `next` link's cursor") from None


def result_page(
    session: Session, job_id: str, view: ResultView, limit: int, cursor: Cursor | None = None
) -> tuple[list[tuple[Scan, Result | None]], Cursor | None]:
    """One page of (scan, result or None) in the view's order, and the cursor of the
    next page (None on the last)."""
    query = (
        select(Scan, Result)
        .outerjoin(Result, Result.scan_id == Scan.id)
        .where(Scan.job_id == job_id)
    )
    if FILTERS[view.filter] is not None:
        query = query.where(FILTERS[view.filter])
    desc = view.order == "desc"
    position = Scan.position.desc() if desc and view.sort == "position" else Scan.position
    if view.sort == "position":
        if cursor is not None:
            query = query.where(Scan.position < cursor.position if desc else
                                Scan.position > cursor.position)  # fmt: skip
        query = query.order_by(position)
    else:
        p = Result.probability
        if cursor is not None:
            query = query.where(_after(p, cursor, desc))
        query = query.order_by(p.is_(None), p.desc() if desc else p.asc(), Scan.position)
    rows = [(scan, result) for scan, result in session.execute(query.limit(limit + 1)).all()]
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last_scan, last_result = rows[-1]
    return rows, Cursor(last_scan.position, last_result.probability if last_result else None)


def _after(p, cursor: Cursor, desc: bool):
    """Rows after the cursor in (probability, position) order, rows without a
    probability last."""
    if cursor.probability is None:
        return and_(p.is_(None), Scan.position > cursor.position)
    beyond = p < cursor.probability if desc else p > cursor.probability
    tie = and_(p == cursor.probability, Scan.position > cursor.position)
    return or_(beyond, tie, p.is_(None))


def probability_histogram(session: Session, job_id: str, bins: int = HISTOGRAM_BINS) -> list[int]:
    """How many of the job's scored images fall in each of `bins` equal parts of
    [0, 1] (1.0 counts in the last), counted by the database. The bin is a CASE over
    the edges: casting p * bins to an integer truncates in SQLite but rounds in
    PostgreSQL."""
    p = Result.probability
    index = case(*((p * bins < i + 1, i) for i in range(bins - 1)), else_=bins - 1)
    counts = [0] * bins
    rows = session.execute(
        select(index, func.count()).where(Result.job_id == job_id, p.is_not(None)).group_by(index)
    ).all()
    for i, n in rows:
        counts[int(i)] += n
    return counts


def filter_counts(session: Session, job_id: str) -> dict[str, int]:
    """How many of the job's images each filter keeps, in one query."""
    columns = [
        func.count(Scan.id) if cond is None else func.count(case((cond, 1)))
        for cond in FILTERS.values()
    ]
    query = (
        select(*columns).outerjoin(Result, Result.scan_id == Scan.id).where(Scan.job_id == job_id)
    )
    return dict(zip(FILTERS, session.execute(query).one(), strict=True))
