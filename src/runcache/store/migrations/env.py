"""Alembic environment: runs on the connection runcache hands it (see migrations/__init__.py).

runcache opens the connection itself, takes the lock (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE)
and owns the transaction, so every migration of one upgrade commits or rolls back together."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from runcache.store import sessions  # noqa: F401 - registers web_sessions on Base.metadata
from runcache.store.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the plain `alembic` command (developers generating a revision): sqlalchemy.url from its config
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
