"""Who may see what. A user sees only their own jobs and what hangs off them (results,
images, heat maps, reviews, exports); anyone else's gets the same 404 as a missing id,
so ids cannot be probed. Admins see everything and alone manage models, training,
schedules, the label pool and the audit trail."""

from __future__ import annotations

from sqlalchemy import Select

from db.models import Job, Scan
from web.auth import current_user
from web.http import ApiError


def owner_name() -> str:
    return current_user().name


def require_admin() -> None:
    if not current_user().is_admin:
        raise ApiError(403, "forbidden", "this needs the admin role")


def may_see(job: Job | None) -> bool:
    user = current_user()
    return job is not None and (user.is_admin or job.owner == user.name)


def visible(query: Select) -> Select:
    """Restrict a query over Job to the jobs this user may see."""
    user = current_user()
    return query if user.is_admin else query.where(Job.owner == user.name)


def visible_scan(session, scan_id: int) -> Scan | None:
    """The scan, if this user may see the job it belongs to."""
    scan = session.get(Scan, scan_id)
    return scan if scan is not None and may_see(session.get(Job, scan.job_id)) else None
