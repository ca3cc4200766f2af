"""Per-process hooks: forked children drop the parent's database connections (pooled
sockets must not be shared across processes)."""

from celery.signals import worker_process_init

from db.session import dispose_engines


@worker_process_init.connect
def _reset_after_fork(**_kwargs) -> None:
    dispose_engines()
