"""What lets several replicas share one PostgreSQL: one housekeeper at a time, distinct node names."""

from __future__ import annotations

from pathlib import Path

from runcache.config import Settings
from runcache.store.metadata import MetadataStore
from s3server import SeaweedFS


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


def test_with_blobs_in_s3_any_replica_takes_any_chunk_block_and_commit(
    tmp_path: Path, pg_url: str, seaweed: SeaweedFS
) -> None:
    """Uploads live in the bucket too (--uploads auto): no stickiness, and a replica that dies mid-upload
    takes nothing with it but the request it was serving."""
    import os

    import httpx

    from helpers import Server
    from wire import (
        block_id,
        put_block_list,
        v1_commit,
        v1_patch,
        v1_reserve,
        v1_restore,
        v2_create,
        v2_finalize,
        v2_restore,
    )

    prefix = f"replicas-{os.getpid()}"
    env = {**seaweed.env, "RUNCACHE_SECRET": "replica-test-secret"}
    args = ["--database-url", pg_url, "--blobs", f"s3://{seaweed.bucket}/{prefix}"]
    a = Server(tmp_path / "a", extra_args=args, env=env).start()
    b = Server(tmp_path / "b", extra_args=args, env=env).start()
    try:
        tok = a.token()
        data = os.urandom(3 * 1024 * 1024 + 5)
        cut = 1024 * 1024 + 7
        cid = v1_reserve(a, tok, "k", len(data)).json()["cacheId"]
        assert v1_patch(b, tok, cid, cut, data[cut:]).status_code == 204  # the later chunk, elsewhere
        # The reserving replica dies: its chunk had not been sent; the upload lives on in the bucket.
        a.kill()
        assert v1_patch(b, tok, cid, 0, data[:cut]).status_code == 204
        a.start()
        assert v1_commit(a, tok, cid, len(data)).status_code == 204
        assert v1_restore(b, tok, "k") == data and v1_restore(a, tok, "k") == data

        # v2: blocks through either replica (the signed URL's path and query work on both).
        created = v2_create(a, tok, "k2")
        url_a = created["signed_upload_url"]
        url_b = b.url + url_a[len(a.url) :]
        blocks = [os.urandom(300_000), os.urandom(200_000)]
        ids = [block_id(0), block_id(1)]
        for url, bid, body in [(url_a, ids[0], blocks[0]), (url_b, ids[1], blocks[1])]:
            assert httpx.put(f"{url}&comp=block&blockid={bid}", content=body).status_code == 201
        assert put_block_list(url_b, ids).status_code == 201
        assert v2_finalize(b, tok, "k2", sum(map(len, blocks)))["ok"]
        assert v2_restore(a, tok, "k2") == b"".join(blocks)
        # Nothing of the finished uploads is left in the bucket's upload area.
        assert not seaweed.keys(f"{prefix}/uploads/")
    finally:
        a.stop()
        b.stop()
