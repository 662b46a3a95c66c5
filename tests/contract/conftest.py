"""Fixtures for the metadata contract: `pg_url`, a fresh PostgreSQL database, and `db_url`, which runs a
test once on SQLite and once on PostgreSQL (the cluster and the S3 server are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def pg_url(new_pg_database: Callable[[], str]) -> str:
    return new_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty metadata database: a SQLite file, or a PostgreSQL database of the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.db'}"
    return request.getfixturevalue("pg_url")
