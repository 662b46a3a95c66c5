"""What lets several replicas share one PostgreSQL: one housekeeper at a time, distinct node names."""

from __future__ import annotations

from pathlib import Path

from runcache.config import Settings
from runcache.store.metadata import MetadataStore


def test_one_replica_at_a_time_runs_a_global_housekeeping_pass(pg_url: str) -> None:
    first, second = MetadataStore(pg_url), MetadataStore(pg_url)
    try:
        with first.housekeeping_turn("retention") as mine:
            assert mine
            with second.housekeeping_turn("retention") as theirs:
                assert not theirs  # skipped, not blocked
            with second.housekeeping_turn("orphan-blobs") as other_pass:
                assert other_pass  # passes are locked apart
        with second.housekeeping_turn("retention") as theirs:
            assert theirs  # released after the pass
    finally:
        first.close()
        second.close()


def test_sqlite_always_runs_housekeeping(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.housekeeping_turn("retention") as mine, store.housekeeping_turn("retention") as again:
            assert mine and again
        assert not store.shared
    finally:
        store.close()


def test_two_data_directories_on_one_host_are_two_nodes(tmp_path: Path) -> None:
    a = Settings.from_env({}, data_dir=tmp_path / "a")
    b = Settings.from_env({}, data_dir=tmp_path / "b")
    assert a.node != b.node and a.node.split(":")[0] == b.node.split(":")[0]
    assert Settings.from_env({"RUNCACHE_NODE_ID": "replica-1"}, data_dir=tmp_path / "a").node == "replica-1"


def test_bytes_sent_to_the_wrong_replica_get_a_clear_answer(tmp_path: Path, pg_url: str) -> None:
    from helpers import Server
    from wire import v1_commit, v1_patch, v1_reserve, v2_create

    env = {"RUNCACHE_SECRET": "replica-test-secret"}
    a = Server(tmp_path / "a", extra_args=["--database-url", pg_url], env=env).start()
    b = Server(tmp_path / "b", extra_args=["--database-url", pg_url], env=env).start()
    try:
        tok = a.token()
        cid = v1_reserve(a, tok, "k", 4).json()["cacheId"]
        wrong = v1_patch(b, tok, cid, 0, b"data")
        assert wrong.status_code == 409 and "is staged on replica" in wrong.json()["message"]
        assert v1_patch(a, tok, cid, 0, b"data").status_code == 204
        assert v1_commit(b, tok, cid, 4).status_code == 409
        assert v1_commit(a, tok, cid, 4).status_code == 204
        # v2: the signed upload URL names the reserving replica, so the bytes land where they belong.
        created = v2_create(b, tok, "k2")
        assert created["ok"] and created["signed_upload_url"].startswith(b.url)
    finally:
        a.stop()
        b.stop()


def test_the_postgresql_pool_is_sized_for_concurrent_requests(pg_url: str) -> None:
    store = MetadataStore(pg_url, pool_size=7)
    try:
        assert store.engine.pool.size() == 7  # type: ignore[attr-defined]
    finally:
        store.close()
    default = MetadataStore(pg_url)
    try:
        assert default.engine.pool.size() == 20  # type: ignore[attr-defined]
    finally:
        default.close()
    import pytest

    with pytest.raises(ValueError, match="at least 1"):
        MetadataStore(pg_url, pool_size=0)
