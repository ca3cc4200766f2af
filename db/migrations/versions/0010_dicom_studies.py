"""dicom_peer, dicomweb_source, study, study_instance, study_job (issue #19: DICOM in)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dicom_peer",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_dicom_peer_ae_title", "dicom_peer", ["ae_title"], unique=True)
    op.create_table(
        "dicomweb_source",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("username", sa.String(128)),
        sa.Column("password_env", sa.String(128)),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_dicomweb_source_name", "dicomweb_source", ["name"], unique=True)
    peer_fk = sa.ForeignKey("dicom_peer.id", ondelete="SET NULL")
    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("peer_id", sa.Integer(), peer_fk),
        sa.Column(
            "results_to_peer_id",
            sa.Integer(),
            sa.ForeignKey("dicom_peer.id", ondelete="SET NULL"),
        ),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("accession", sa.String(64)),
        sa.Column("study_date", sa.String(8)),
        sa.Column("modalities", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("not_screened", sa.Integer(), nullable=False),
        sa.Column("first_received_at", TZ, nullable=False),
        sa.Column("last_received_at", TZ, nullable=False),
        sa.Column("settled_at", TZ),
        sa.Column("score", sa.Float()),
        sa.Column("label", sa.String(16)),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.JSON()),
        sa.Column("verdict_at", TZ),
        sa.UniqueConstraint("owner", "study_uid"),
    )
    for column in ("study_uid", "owner", "peer_id", "status", "last_received_at", "score"):
        op.create_index(f"ix_study_{column}", "study", [column])
    op.create_table(
        "study_instance",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("study.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("series_uid", sa.String(64)),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64)),
        sa.Column("modality", sa.String(16)),
        sa.Column("route", sa.String(8)),
        sa.Column("reason", sa.String(200)),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("stored_path", sa.String(512), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("job.id", ondelete="SET NULL")),
        sa.Column("first_position", sa.Integer()),
        sa.Column("frames", sa.Integer()),
        sa.UniqueConstraint("study_id", "sop_instance_uid"),
    )
    op.create_index("ix_study_instance_study_id", "study_instance", ["study_id"])
    op.create_index("ix_study_instance_series_uid", "study_instance", ["series_uid"])
    op.create_table(
        "study_job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("study.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("job.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("modality", sa.String(8), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_study_job_study_id", "study_job", ["study_id"])


def downgrade() -> None:
    op.drop_table("study_job")
    op.drop_table("study_instance")
    op.drop_table("study")
    op.drop_table("dicomweb_source")
    op.drop_table("dicom_peer")
