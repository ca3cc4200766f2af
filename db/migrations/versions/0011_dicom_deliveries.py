"""dicom_delivery (issue #19: results sent back to a PACS as DICOM, per study job)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dicom_delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("study.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("job.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("peer_id", sa.Integer(), sa.ForeignKey("dicom_peer.id", ondelete="SET NULL")),
        sa.Column("dicomweb_source_id", sa.Integer(),
                  sa.ForeignKey("dicomweb_source.id", ondelete="SET NULL")),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("model_version", sa.String(64)),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uids", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(64)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("sent_at", TZ),
        sa.UniqueConstraint("study_id", "job_id"),
    )  # fmt: skip
    op.create_index("ix_dicom_delivery_study_id", "dicom_delivery", ["study_id"])
    op.create_index("ix_dicom_delivery_job_id", "dicom_delivery", ["job_id"])
    op.create_index("ix_dicom_delivery_status", "dicom_delivery", ["status"])


def downgrade() -> None:
    op.drop_table("dicom_delivery")
