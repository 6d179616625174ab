"""controllers sharing one database: their heartbeats, and each job's shard and fencing token

Revision ID: 0004
Revises: 0003
"""

import zlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SHARDS = 1024  # as spotrun.controller.models.SHARDS; a migration never imports code that may change


def upgrade() -> None:
    op.create_table(
        "controllers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("pass_s", sa.Float(), nullable=False),
        sa.Column("lag_s", sa.Float(), nullable=False),
    )
    # Plain ALTER ... ADD COLUMN on both backends: no batch table rebuild, which on SQLite would
    # drop and recreate `jobs` under the attempts' and events' cascading foreign keys.
    op.add_column("jobs", sa.Column("shard", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("lease_token", sa.Integer(), nullable=False, server_default="0"))
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("shard", sa.Integer))
    conn = op.get_bind()
    for (job_id,) in conn.execute(sa.select(jobs.c.id)).all():
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(shard=zlib.crc32(job_id.encode()) % SHARDS))
    op.create_index("ix_jobs_lease_owner", "jobs", ["lease_owner"])


def downgrade() -> None:
    op.drop_index("ix_jobs_lease_owner", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_token")
        batch.drop_column("shard")
    op.drop_table("controllers")
