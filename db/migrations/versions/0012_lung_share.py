"""result.lung_heat_share: the share of a scored X-ray's heat map inside its segmented
lungs (#22), so a reader can tell whether the score came from the lungs

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("result") as batch_op:
        batch_op.add_column(sa.Column("lung_heat_share", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("result") as batch_op:
        batch_op.drop_column("lung_heat_share")
