"""scan.series / frame / note (issue 6: DICOM series, frames and modality warnings)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scan") as batch_op:
        batch_op.add_column(sa.Column("series", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("frame", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.String(300), nullable=True))
        batch_op.create_index("ix_scan_series", ["series"])


def downgrade() -> None:
    with op.batch_alter_table("scan") as batch_op:
        batch_op.drop_index("ix_scan_series")
        batch_op.drop_column("note")
        batch_op.drop_column("frame")
        batch_op.drop_column("series")
