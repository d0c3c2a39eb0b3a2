"""Alembic's environment: runs on the connection :func:`routecast.storage.migrate.upgrade`
passes in ``config.attributes`` (there is no ``alembic.ini`` and no URL here)."""

from __future__ import annotations

from alembic import context

from routecast.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("routecast's migrations run through routecast.storage.migrate.upgrade()")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
