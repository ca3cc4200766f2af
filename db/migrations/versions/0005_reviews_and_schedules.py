"""review, schedule and schedule_run (issue 5: reviewer loop and scheduled retraining)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "scan_id", sa.Integer(), sa.ForeignKey("scan.id", ondelete="CASCADE"), nullable=False
        ),  # fmt: skip
        sa.Column("modality", sa.String(8), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(128)),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("model_label", sa.String(16)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_review_scan_id", "review", ["scan_id"], unique=True)
    op.create_index("ix_review_modality", "review", ["modality"])
    op.create_index("ix_review_updated_at", "review", ["updated_at"])
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("modality", sa.String(8), nullable=False),
        sa.Column("cron", sa.String(64)),
        sa.Column("interval_seconds", sa.Integer()),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("base_data_path", sa.String(1024)),
        sa.Column("min_new_labels", sa.Integer(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("last_fired_at", TZ),
        sa.Column("labels_until", TZ),
    )
    op.create_table(
        "schedule_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "schedule_id",
            sa.Integer(),
            sa.ForeignKey("schedule.id", ondelete="CASCADE"),
            nullable=False,
        ),  # fmt: skip
        sa.Column("fired_at", TZ, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("new_labels", sa.Integer(), nullable=False),
        sa.Column("training_job_id", sa.String(32)),
        sa.Column("champion_version_id", sa.Integer()),
        sa.Column("challenger_version_id", sa.Integer()),
        sa.Column("report", sa.JSON()),
    )
    op.create_index("ix_schedule_run_schedule_id", "schedule_run", ["schedule_id"])


def downgrade() -> None:
    op.drop_table("schedule_run")
    op.drop_table("schedule")
    op.drop_table("review")
