"""Metadata schema (SQLAlchemy 2 typed models), the same on SQLite and PostgreSQL.

The database's tables come from the migrations in store/migrations/versions, not from these models:
a change here needs a new revision there (tests/contract checks that a migrated database matches
these models, indexes included). Column lengths are enforced in core/keys.py before any query."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runcache.core.entries import COMMITTED


class Base(DeclarativeBase):
    pass


class Entry(Base):
    """One cache entry. Invisible to lookups until `state` is committed."""

    __tablename__ = "cache_entries"

    # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    repository: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(String(512))
    key: Mapped[str] = mapped_column(String(512))
    key_folded: Mapped[str] = mapped_column(String(512))
    version: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16))
    declared_size: Mapped[int | None] = mapped_column(BigInteger)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(128))
    # Which token reserved the upload: only it may send bytes or commit (ids are sequential, guessable).
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reserved_at: Mapped[datetime]
    created_at: Mapped[datetime]
    last_accessed_at: Mapped[datetime]

    __table_args__ = (
        # Immutability: one entry (finished or in flight) per repository, scope, folded key and version.
        UniqueConstraint("repository", "scope", "key_folded", "version", name="uq_entry_identity"),
        Index("ix_entry_state_reserved", "state", "reserved_at"),
        # Ids are never reused: a stale signed URL or upload id must not reach a newer entry.
        {"sqlite_autoincrement": True},
    )


# Management queries: per repository (names compare case-insensitively, as on GitHub) and by last access.
Index("ix_entry_repository_folded", func.lower(Entry.repository), Entry.state)
# Immutability across spellings of one repository (`Octo/App` and `octo/app` are one repository).
Index(
    "uq_entry_identity_folded",
    func.lower(Entry.repository),
    Entry.scope,
    Entry.key_folded,
    Entry.version,
    unique=True,
)
Index("ix_entry_state_accessed", Entry.state, Entry.last_accessed_at)

# Lookups and the management list see committed entries only, so their indexes are partial (both engines
# have them): in-flight uploads cost them nothing. Queries must repeat the predicate as a literal
# (`_COMMITTED_ONLY` in store/metadata.py): neither SQLite nor a generic PostgreSQL plan matches a
# partial index's predicate against a bound parameter.
COMMITTED_ONLY_SQL = f"state = '{COMMITTED}'"
_committed = {"sqlite_where": text(COMMITTED_ONLY_SQL), "postgresql_where": text(COMMITTED_ONLY_SQL)}
# A lookup touches only its repository, version, scopes and key prefixes: equality down to the scope,
# then the folded key, exact or as a range. text_pattern_ops (PostgreSQL) orders keys bytewise whatever
# the database's collation, so a prefix is one contiguous range, as in SQLite's default BINARY order.
# created_at (with the id, implicit in SQLite, included on PostgreSQL with the repository column that an
# index-only scan needs beside lower() of it) ranks prefix matches without reading their rows.
Index(
    "ix_entry_committed_lookup",
    func.lower(Entry.repository),
    Entry.version,
    Entry.scope,
    Entry.key_folded,
    Entry.created_at,
    postgresql_ops={"key_folded": "text_pattern_ops"},
    postgresql_include=["id", "repository"],
    **_committed,
)
# The management list, one index per sort key: a page (however deep its OFFSET) walks index entries in
# order instead of sorting the repository's rows; the id breaks ties as the query does. PostgreSQL also
# stores the repository column (INCLUDE): it reads a page's ids by index-only scan only when every column
# the query names is in the index, and lower(repository) alone does not count as `repository`.
for _name, _column in (
    ("ix_entry_committed_created", Entry.created_at),
    ("ix_entry_committed_accessed", Entry.last_accessed_at),
    ("ix_entry_committed_size", Entry.size),
):
    Index(_name, func.lower(Entry.repository), _column, Entry.id, postgresql_include=["repository"], **_committed)


class RepositoryPolicy(Base):
    """A repository's own storage and retention limits; NULL means the server default."""

    __tablename__ = "repository_policies"

    repository_folded: Mapped[str] = mapped_column(String(256), primary_key=True)
    repository: Mapped[str] = mapped_column(String(256))
    max_cache_size_gb: Mapped[int | None] = mapped_column(Integer)
    max_cache_retention_days: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime]
