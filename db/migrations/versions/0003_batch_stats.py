"""batch.stats (where a batch's time went) and batch.probing_scan_id (poison files)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch") as batch_op:
        batch_op.add_column(sa.Column("stats", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("probing_scan_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch") as batch_op:
        batch_op.drop_column("probing_scan_id")
        batch_op.drop_column("stats")
