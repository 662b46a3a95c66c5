"""Indexes that keep lookups and management list pages independent of the database's size.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Partial indexes over committed entries (`WHERE state = 'committed'`, which SQLite and PostgreSQL both
support): one for lookups (folded repository, version, scope, folded key, created_at: a lookup reads
only its own repository, version, scopes and key prefixes) and one per management sort key (folded repository, sort
column, id: a list page walks index entries in order, however deep its OFFSET, instead of sorting every
row of the repository). `ix_entry_lookup` goes: it was on the unfolded repository, which no query
compares since names fold, so it only cost writes.

Written out rather than taken from the models (a migration keeps its shape when the models move on).
IF [NOT] EXISTS: a database made by `create_all` before migrations is stamped 0001 by `adopt` and then
runs this revision, and `create_all` of today's models already made these indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ENTRIES = "cache_entries"
COMMITTED_ONLY = "state = 'committed'"
LOWER_REPOSITORY = sa.text("lower(repository)")

# name -> (columns or SQL expressions, PostgreSQL operator classes, PostgreSQL INCLUDE columns), in the
# order the models declare them.
INDEXES: dict[str, tuple[list, dict[str, str], list[str]]] = {
    # text_pattern_ops: bytewise order on PostgreSQL whatever the collation, so a key prefix is one range;
    # created_at ranks prefix matches without reading their rows.
    "ix_entry_committed_lookup": (
        [LOWER_REPOSITORY, "version", "scope", "key_folded", "created_at"],
        {"key_folded": "text_pattern_ops"},
        [],
    ),
    # INCLUDE (repository): PostgreSQL's index-only scan of a page's ids needs the column, not lower() of it.
    "ix_entry_committed_created": ([LOWER_REPOSITORY, "created_at", "id"], {}, ["repository"]),
    "ix_entry_committed_accessed": ([LOWER_REPOSITORY, "last_accessed_at", "id"], {}, ["repository"]),
    "ix_entry_committed_size": ([LOWER_REPOSITORY, "size", "id"], {}, ["repository"]),
}


def upgrade() -> None:
    op.drop_index("ix_entry_lookup", table_name=ENTRIES, if_exists=True)
    for name, (columns, ops, include) in INDEXES.items():
        op.create_index(
            name,
            ENTRIES,
            columns,
            if_not_exists=True,
            sqlite_where=sa.text(COMMITTED_ONLY),
            postgresql_where=sa.text(COMMITTED_ONLY),
            postgresql_ops=ops,
            postgresql_include=include,
        )


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name=ENTRIES, if_exists=True)
    op.create_index("ix_entry_lookup", ENTRIES, ["repository", "version", "key_folded"])
