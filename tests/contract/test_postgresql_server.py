"""End to end on PostgreSQL: a real server process keeps its metadata there and serves the v1 protocol."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from helpers import RUNCACHE, Server
from wire import v1_lookup, v1_reserve, v1_restore, v1_save

# Replicas share one signing secret; a server on PostgreSQL refuses to start without it.
REPLICA_ENV = {"RUNCACHE_SECRET": "contract-tests-shared-secret"}


def test_save_and_restore_through_v1_with_postgresql_metadata(tmp_path: Path, pg_url: str) -> None:
    # A plain postgresql:// URL as operators write it; the server migrates the empty database at start.
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    server = Server(tmp_path / "data", extra_args=["--database-url", url], env=REPLICA_ENV).start()
    try:
        tok = server.token()
        data = b"cached bytes " * 1000
        v1_save(server, tok, "Linux-pip-abc", data)
        assert v1_restore(server, tok, "linux-PIP-abc") == data
        conflict = v1_reserve(server, tok, "Linux-pip-abc", len(data))
        assert conflict.status_code == 409, conflict.text
        # Over the column limits: a 400 with a message, never a database error.
        too_long = v1_reserve(server, tok, "k" * 300 + "İ" * 200, 1)  # 700 characters once lower-cased
        assert too_long.status_code == 400, too_long.text
        assert v1_lookup(server, tok, "Linux-pip-").status_code == 200  # the restore-key path
        assert v1_lookup(server, tok, "İ" * 400).status_code == 400  # a lookup key too long once lower-cased
        admin = {"Authorization": f"Bearer {server.admin_token()}"}
        caches = f"{server.url}/repos/octo/app/actions/caches"
        assert httpx.get(caches, params={"key": "linux-"}, headers=admin).json()["total_count"] == 1
        # Management filters no entry can match: the API answers an empty list or a 4xx (its choice), and
        # the database never sees the value.
        for params in ({"key": "İ" * 400}, {"ref": "refs/heads/" + "b" * 600}, {"key": "k\x00"}):
            listed = httpx.get(caches, params=params, headers=admin)
            assert listed.status_code < 500 and listed.json().get("total_count", 0) == 0, listed.text
        for params in ({"key": "İ" * 400}, {"key": "x", "ref": "refs/heads/" + "b" * 600}):
            gone = httpx.delete(caches, params=params, headers=admin)
            assert 400 <= gone.status_code < 500, gone.text
        assert not (tmp_path / "data" / "metadata.db").exists()  # nothing went to SQLite
    finally:
        server.stop()
    # A second start (another replica, a restart) finds the schema at head and the entry still there.
    again = Server(tmp_path / "data", extra_args=["--database-url", url], env=REPLICA_ENV).start()
    try:
        assert v1_restore(again, again.token(), "Linux-pip-abc") == data
        assert httpx.get(f"{again.url}/healthz").status_code == 200
    finally:
        again.stop()


def test_a_shared_database_without_the_signing_secret_is_refused(tmp_path: Path, pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RUNCACHE_SECRET"}
    result = subprocess.run(
        [*RUNCACHE, "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--database-url", pg_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "set RUNCACHE_SECRET" in result.stderr and "Traceback" not in result.stderr


def test_a_server_without_auto_migrate_refuses_an_empty_database_in_one_line(tmp_path: Path, pg_url: str) -> None:
    result = subprocess.run(
        [*RUNCACHE, "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--database-url", pg_url],
        env={**os.environ, **REPLICA_ENV, "RUNCACHE_AUTO_MIGRATE": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "run `runcache db upgrade` first" in result.stderr and "Traceback" not in result.stderr
