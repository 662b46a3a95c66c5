from __future__ import annotations

import secrets
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from azurite import Azurite, AzuriteMissing
from helpers import Server
from pg import Cluster, PostgresMissing
from s3server import S3Missing, SeaweedFS

EMBEDDED, SCALE_OUT = "embedded", "scale-out"

# A suite started in the background of a non-interactive shell (`cmd &` without job control) inherits SIGINT
# ignored, and every CLI it starts would ignore it too (an ignored signal survives exec, a handler does not):
# the interrupt tests would then find Ctrl-C doing nothing. Ctrl-C here means what it means at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that set `BOTH_BACKENDS = True` (the protocol suites) run each test that takes `server`
    twice: on the embedded default (SQLite, local disk) and on scale-out (PostgreSQL, S3 blobs and
    uploads in the bucket)."""
    if "server" in metafunc.fixturenames and getattr(metafunc.module, "BOTH_BACKENDS", False):
        metafunc.parametrize("server", [EMBEDDED, SCALE_OUT], indirect=True)


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if getattr(request, "param", EMBEDDED) == SCALE_OUT:
        database = request.getfixturevalue("new_pg_database")()
        seaweed: SeaweedFS = request.getfixturevalue("seaweed")
        blobs = f"s3://{seaweed.bucket}/t-{uuid.uuid4().hex[:12]}"  # a prefix of its own per test
        env = {**seaweed.env, "RUNCACHE_SECRET": secrets.token_hex(16)}
        srv = Server(tmp_path / "data", extra_args=["--database-url", database, "--blobs", blobs], env=env)
    else:
        srv = Server(tmp_path / "data")
    srv.start()
    yield srv
    srv.stop()


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


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite Blob service for the Azure tests (tests/azurite.py)."""
    try:
        server = Azurite().start()
    except AzuriteMissing as exc:
        pytest.fail(str(exc), pytrace=False)  # a missing Azurite is a broken setup, never a skip
    try:
        yield server
    finally:
        server.stop()
