"""job.heartbeat_at meant three things: a running training job's last report, a queued
training job's last send, and a receiving upload's last added files. Each gets its own
column (heartbeat_at keeps the first; sent_at and received_at), filled from it.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

job = sa.table(
    "job",
    sa.column("kind", sa.String),
    sa.column("status", sa.String),
    sa.column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.column("sent_at", sa.DateTime(timezone=True)),
    sa.column("received_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
    # Inference jobs only ever wrote it as their upload received files.
    op.execute(
        job.update()
        .where(job.c.kind != "training")
        .values(received_at=job.c.heartbeat_at, heartbeat_at=None)
    )
    # A training job still queued was last written when its message was sent.
    op.execute(
        job.update()
        .where(job.c.kind == "training", job.c.status == "queued")
        .values(sent_at=job.c.heartbeat_at, heartbeat_at=None)
    )


def downgrade() -> None:
    op.execute(job.update().where(job.c.kind != "training").values(heartbeat_at=job.c.received_at))
    op.execute(
        job.update()
        .where(job.c.kind == "training", job.c.status == "queued")
        .values(heartbeat_at=job.c.sent_at)
    )
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("received_at")
        batch_op.drop_column("sent_at")
