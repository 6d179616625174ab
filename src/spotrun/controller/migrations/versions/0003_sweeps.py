"""jobs.sweep, and the indexes that keep `spotrun jobs` fast at 10 000 jobs

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
    op.add_column("jobs", sa.Column("sweep", sa.String(220), nullable=True))
    op.create_index("ix_jobs_name", "jobs", ["name"])
    op.create_index("ix_jobs_created_id", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_status_created_id", "jobs", ["status", "created_at", "id"])
    op.create_index("ix_jobs_sweep_created_id", "jobs", ["sweep", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep_created_id", "jobs")
    op.drop_index("ix_jobs_status_created_id", "jobs")
    op.drop_index("ix_jobs_created_id", "jobs")
    op.drop_index("ix_jobs_name", "jobs")
    op.drop_column("jobs", "sweep")
