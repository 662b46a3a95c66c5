"""Schema migrations (Alembic), shipped inside the package so `runcache db upgrade` and the server find them.

One schema for SQLite and PostgreSQL. `prepare` is what the server runs at start and `upgrade` what
`runcache db upgrade` runs; both hold a lock for the whole check-and-migrate, so replicas (or a server
and the CLI) starting at once migrate once and the others find the schema at head:

- PostgreSQL: a session advisory lock (`pg_advisory_lock`), released when the connection ends, even
  if the process dies; the migrations then run in one transaction (PostgreSQL has transactional DDL).
- SQLite: `BEGIN IMMEDIATE`, the database's write lock, around the same single transaction.

Databases created before migrations existed (`create_all` plus hand-written column additions) have the
tables but no `alembic_version`: `adopt` brings them to the initial revision's shape and stamps it, then
the normal upgrade runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

log = logging.getLogger("runcache.migrations")

HERE = Path(__file__).resolve().parent
INITIAL = "0001"
# One fixed key for "migrating runcache's schema" ('runcach' as a big-endian integer); other applications
# sharing the database are unlikely to pick it.
ADVISORY_LOCK_KEY = int.from_bytes(b"runcach", "big")


class SchemaNotReady(ValueError):
    """The database is not at the schema this runcache needs and will not be migrated by it."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    rev = script().get_current_head()
    assert rev is not None
    return rev


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def is_legacy(conn: Connection) -> bool:
    """Made by `create_all` before migrations: runcache's tables but no version table."""
    tables = set(inspect(conn).get_table_names())
    return "cache_entries" in tables and "alembic_version" not in tables


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection holding the migration lock, inside a transaction that commits when the block ends."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                with conn.begin():
                    yield conn
            finally:
                # Also after a failed migration: the next replica must not wait for a dead lock holder.
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()
        elif engine.dialect.name == "sqlite":
            # pysqlite starts transactions itself, deferred and only before DML, so DDL would run outside
            # any transaction; take control of BEGIN for this connection and restore it for the pool.
            raw = conn.connection.driver_connection
            saved = raw.isolation_level
            raw.isolation_level = None
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits (busy_timeout) for another migrator
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            finally:
                raw.isolation_level = saved
        else:
            raise SchemaNotReady(f"runcache stores metadata in SQLite or PostgreSQL, not {engine.dialect.name}")


def upgrade(conn: Connection) -> str | None:
    """Adopt a pre-migration database if needed, then run every migration up to head (under `locked`).
    Returns the revision the database was at (None: empty or pre-migration)."""
    before = current(conn)
    if before is None and is_legacy(conn):
        adopt(conn)
    command.upgrade(config(conn), "head")
    return before


def adopt(conn: Connection) -> None:
    """Bring a database made by `create_all` (+ the old hand-written upgrades) to the initial revision's
    shape, then stamp that revision so later migrations apply to it like to any other."""
    initial = script().get_revision(INITIAL).module
    insp = inspect(conn)
    tables = set(insp.get_table_names())
    with Operations.context(MigrationContext.configure(conn)):
        for name, create in initial.TABLES.items():
            if name not in tables:
                create()
        # What `_upgrade_schema` used to do at every start: columns and indexes added after a database
        # was created (create_all only ever made missing tables).
        if "owner" not in {c["name"] for c in insp.get_columns(initial.ENTRIES)}:
            initial.add_entry_owner()
        for index in initial.ENTRY_INDEXES:
            try:
                with conn.begin_nested():  # on PostgreSQL a failed CREATE INDEX aborts the transaction
                    initial.create_entry_index(index, if_not_exists=True)
            except IntegrityError:  # rows saved before names were folded collide: keep serving, say so
                log.warning("index %s not created: existing entries differ only in repository case", index)
    command.stamp(config(conn), INITIAL)
    log.info("adopted a database created before migrations: stamped revision %s", INITIAL)


def prepare(engine: Engine, *, auto_migrate: bool) -> None:
    """At server start: the schema at head, migrated here if allowed, else a clear refusal."""
    want = head()
    with locked(engine) as conn:
        have = current(conn)
        if have == want:
            return
        if have is not None and have not in {r.revision for r in script().walk_revisions()}:
            raise SchemaNotReady(
                f"the metadata database is at schema revision {have}, which this runcache does not know "
                f"(its newest is {want}): a newer runcache migrated it; run that version"
            )
        if not auto_migrate:
            where = f"revision {have}" if have else ("a pre-migration schema" if is_legacy(conn) else "empty")
            raise SchemaNotReady(
                f"the metadata database needs schema migrations (it is {where}, runcache needs {want}) and "
                "automatic migration is off (RUNCACHE_AUTO_MIGRATE=0): run `runcache db upgrade` first"
            )
        before = upgrade(conn)
        log.info("metadata schema migrated from %s to %s", before or "nothing", want)
