"""Fixtures for the metadata contract: one PostgreSQL cluster per session, a database per test, and
`db_url`, which runs a test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg import Cluster, PostgresMissing
from s3server import S3Missing, SeaweedFS


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster().start()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def new_pg_database(pg_cluster: Cluster) -> Iterator[Callable[[], str]]:
    """Make fresh, empty databases (as many as a test needs); all dropped afterwards. Returns URLs."""
    made: list[str] = []

    def make() -> str:
        name = pg_cluster.create_database()
        made.append(name)
        return pg_cluster.url(name)

    yield make
    for name in made:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(new_pg_database: Callable[[], str]) -> str:
    return new_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty metadata database: a SQLite file, or a PostgreSQL database of the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the contract tests (tests/s3server.py)."""
    try:
        server = SeaweedFS().start()
    except S3Missing as exc:
        pytest.fail(str(exc), pytrace=False)  # a missing S3 server is a broken setup, never a skip
    try:
        yield server
    finally:
        server.stop()
