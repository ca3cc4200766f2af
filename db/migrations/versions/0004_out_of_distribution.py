"""result.ood_score / out_of_distribution / ood_reason and job.flagged (issue 9)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("result") as batch_op:
        batch_op.add_column(sa.Column("ood_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("out_of_distribution", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("ood_reason", sa.String(length=200), nullable=True))
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("flagged", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("flagged")
    with op.batch_alter_table("result") as batch_op:
        batch_op.drop_column("ood_reason")
        batch_op.drop_column("out_of_distribution")
        batch_op.drop_column("ood_score")
