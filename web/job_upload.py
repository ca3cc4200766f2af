"""A bulk job written while its files are still arriving.

The job is opened ("receiving") at its first usable scan; every full batch is committed
and queued at once, so workers score the first images while later ones are still on
the wire, and the job can only finish once the upload closes it. Queueing happens after
each commit: a worker never sees a batch that SQL does not have, and a batch whose send
failed is re-queued by the reconciler, not lost. A job cancelled while its files arrive
takes no more of them: the batch being written when the upload notices is rolled back,
and what was committed before keeps its results.
"""

from __future__ import annotations

from db.jobs import (
    IncomingScan,
    abort_upload,
    add_scans,
    close_upload,
    open_inference_job,
    upload_cancelled,
)
from db.models import Job
from db.session import session_scope
from web.extensions import get_celery
from worker.sending import send_batches


class UploadCancelled(Exception):
    """The job was cancelled while its files were arriving."""

    def __init__(self, job_id: str, stored: int):
        super().__init__(
            f"job {job_id} was cancelled while its files were arriving: the {stored} files "
            "received before keep their results, the rest of the upload was not stored"
        )
        self.job_id, self.stored = job_id, stored


class JobUpload:
    """Feed it stored scans with `add`, then `close` (or `abort` on failure)."""

    def __init__(
        self,
        database_url: str,
        modality: str,
        version_id: int,
        batch_size: int,
        owner: str | None,
        options: dict,
    ):
        self.database_url, self.batch_size = database_url, batch_size
        self._job_args = (modality, version_id, owner, options)
        self.job_id: str | None = None
        self.rejected: list[IncomingScan] = []  # files refused at upload, for the error text
        self.total = 0
        self.committed = 0  # files (accepted or refused) written to SQL
        self._held: list[tuple[int, IncomingScan]] = []  # waiting for a full batch
        self._seq = 0
        self._broker_down = False

    def add(self, scans: list[IncomingScan]) -> None:
        for scan in scans:
            self._held.append((self.total, scan))
            self.total += 1
            if scan.error is not None:
                self.rejected.append(scan)
        good = sum(1 for _pos, s in self._held if s.error is None)
        if good >= self.batch_size:
            self._write(good - good % self.batch_size)

    def close(self) -> Job | None:
        """Write what is held, let the job finish; None if no usable scan ever came."""
        if self.job_id is None and len(self.rejected) == self.total:
            return None
        self._write(None)
        with session_scope(self.database_url) as session:
            job = close_upload(session, self.job_id)
            session.expunge(job)
        return job

    def abort(self, error: str) -> None:
        if self.job_id is not None:
            with session_scope(self.database_url) as session:
                abort_upload(session, self.job_id, error)

    def _write(self, good_count: int | None) -> None:
        """Commit held scans up to the `good_count`-th usable one (all if None), then
        queue their batches."""
        cut, seen = len(self._held), 0
        if good_count is not None:
            for i, (_pos, scan) in enumerate(self._held):
                seen += scan.error is None
                if seen == good_count:
                    cut = i + 1
                    break
        items, self._held = self._held[:cut], self._held[cut:]
        with session_scope(self.database_url) as session:
            if self.job_id is None:
                self.job_id = open_inference_job(session, *self._job_args).id
            batch_ids = add_scans(session, self.job_id, items, self.batch_size, self._seq)
            if upload_cancelled(session, self.job_id):  # raising rolls these rows back
                raise UploadCancelled(self.job_id, self.committed)
        self._seq += len(batch_ids)
        self.committed += len(items)
        if not self._broker_down:  # after one failure, leave the rest to the reconciler
            self._broker_down = not send_batches(
                self.database_url, get_celery().send_task, batch_ids
            )
