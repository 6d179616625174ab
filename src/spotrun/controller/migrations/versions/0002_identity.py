"""the database's identity, stamped on every instance it launches

Revision ID: 0002
Revises: 0001
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table("identity", sa.Column("id", sa.String(32), primary_key=True))
    # Made once, with the schema: every controller on this database shares it (a cluster), and
    # a controller on another database (or a recreated one) never has it.
    op.bulk_insert(table, [{"id": secrets.token_hex(8)}])


def downgrade() -> None:
    op.drop_table("identity")
