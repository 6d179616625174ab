"""Alembic environment: always run programmatically by `spotrun.controller.db.open_db`,
which hands over an open connection (no alembic.ini, no URL in a config file)."""

from alembic import context

from spotrun.controller.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
