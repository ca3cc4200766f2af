"""Reserved for #23 structure point 5 (a column per meaning of Job.heartbeat_at); a no-op until that change fills it.

Revision ID: 0009
Revises: 0008
"""

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
