"""The schema runcache had before migrations: cache entries, repository policies, web sessions.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

Written out by hand rather than from the models, because a migration must keep creating this shape
after the models move on. Databases created by `create_all` before migrations existed are brought to
exactly this shape and stamped with this revision (`adopt` in migrations/__init__.py), which calls the
functions below one by one for what is missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ENTRIES = "cache_entries"


def create_cache_entries() -> None:
    op.create_table(
        ENTRIES,
        # SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("repository", sa.String(256), nullable=False),
        sa.Column("scope", sa.String(512), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("key_folded", sa.String(512), nullable=False),
        sa.Column("version", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("declared_size", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("reserved_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_accessed_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("repository", "scope", "key_folded", "version", name="uq_entry_identity"),
        # Ids are never reused: a stale signed URL or upload id must not reach a newer entry.
        sqlite_autoincrement=True,
    )


# name -> (columns or SQL expressions, unique), in the order the models declare them.
ENTRY_INDEXES: dict[str, tuple[list, bool]] = {
    "ix_entry_lookup": (["repository", "version", "key_folded"], False),
    "ix_entry_state_reserved": (["state", "reserved_at"], False),
    "ix_entry_repository_folded": ([sa.text("lower(repository)"), "state"], False),
    # Immutability across spellings of one repository (`Octo/App` and `octo/app` are one repository).
    "uq_entry_identity_folded": ([sa.text("lower(repository)"), "scope", "key_folded", "version"], True),
    "ix_entry_state_accessed": (["state", "last_accessed_at"], False),
}


def create_entry_index(name: str, *, if_not_exists: bool = False) -> None:
    columns, unique = ENTRY_INDEXES[name]
    op.create_index(name, ENTRIES, columns, unique=unique, if_not_exists=if_not_exists or None)


def add_entry_owner() -> None:
    """Databases from before uploads had owners lack this column."""
    op.add_column(ENTRIES, sa.Column("owner", sa.String(64), nullable=True))


def create_repository_policies() -> None:
    op.create_table(
        "repository_policies",
        sa.Column("repository_folded", sa.String(256), primary_key=True),
        sa.Column("repository", sa.String(256), nullable=False),
        sa.Column("max_cache_size_gb", sa.Integer(), nullable=True),
        sa.Column("max_cache_retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def create_web_sessions() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])


# What `adopt` creates when a pre-migration database lacks a whole table.
TABLES = {
    ENTRIES: create_cache_entries,
    "repository_policies": create_repository_policies,
    "web_sessions": create_web_sessions,
}


def upgrade() -> None:
    create_cache_entries()
    for name in ENTRY_INDEXES:
        create_entry_index(name)
    create_repository_policies()
    create_web_sessions()


def downgrade() -> None:
    op.drop_table("web_sessions")
    op.drop_table("repository_policies")
    op.drop_table(ENTRIES)
