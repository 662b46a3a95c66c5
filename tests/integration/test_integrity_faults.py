"""Integrity and availability under abuse and faults: full disks, writes racing commits, racing
finalizes, limits on what one token may make the server hold, uploads bound to their token.

Every case ends with the committed entries restorable byte-identical and no staging left behind.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from helpers import Server
from wire import (
    VERSION,
    auth,
    put_block_list,
    put_blocks,
    sha256,
    twirp,
    v1_commit,
    v1_lookup,
    v1_patch,
    v1_reserve,
    v1_restore,
    v1_save,
    v2_create,
    v2_finalize,
    v2_restore,
    v2_save,
)

MiB = 1024 * 1024


def staged(data_dir: Path) -> list[Path]:
    root = data_dir / "uploads"
    return sorted(root.iterdir()) if root.exists() else []


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- a small file system for the disk-full cases -----------------------------------------------------
@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "volume"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(
            "disk-full cases need a 64 MiB tmpfs and this machine cannot mount one "
            f"({done.stderr.decode().strip() or 'mount failed'}); run as root to cover them"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(volume: Path) -> Path:
    """Take every free byte of the volume, as another program filling the disk would."""
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (MiB, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(volume).f_bavail == 0
    return filler


def slow_body(total: int, chunk: int = MiB, pause: float = 0.0) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield os.urandom(n)
        sent += n
        if pause:
            time.sleep(pause)


def small_volume_server(volume: Path, **env: str) -> Server:
    # The floor is at most a tenth of the volume: 6.4 MiB here, writes stop at half of it.
    return Server(volume / "data", env={"RUNCACHE_MIN_FREE_MB": "64", "RUNCACHE_JANITOR_INTERVAL": "1", **env}).start()


def test_an_upload_past_the_free_space_floor_is_dropped_and_everything_keeps_working(small_volume: Path) -> None:
    srv = small_volume_server(small_volume)
    try:
        tok = srv.token()
        kept = os.urandom(2 * MiB)
        v1_save(srv, tok, "kept", kept)
        v2_save(srv, tok, "kept-v2", kept)

        # v1 without a declared size: chunks until the floor stops it with a clear 507.
        cid = v1_reserve(srv, tok, "huge-v1", None).json()["cacheId"]
        statuses = []
        for i in range(20):
            r = v1_patch(srv, tok, cid, i * 8 * MiB, os.urandom(8 * MiB))
            statuses.append(r.status_code)
            if r.status_code != 204:
                assert r.status_code == 507 and "cache storage full" in r.json()["message"], r.text
                break
        assert statuses[-1] == 507
        assert wait_for(lambda: staged(srv.data_dir) == []), "the dropped upload's bytes stay on disk"
        assert v1_patch(srv, tok, cid, 0, b"more").status_code == 404  # gone, not resumable

        # v2 Put Blob streaming past the floor: refused, staging removed.
        created = v2_create(srv, tok, "huge-v2")
        put = httpx.put(
            created["signed_upload_url"],
            content=slow_body(80 * MiB),
            headers={"x-ms-blob-type": "BlockBlob"},
            timeout=60,
        )
        assert put.status_code == 507 and b"cache storage full" in put.content
        assert wait_for(lambda: staged(srv.data_dir) == [])

        # The server answers, the committed entries are intact, and a normal save still fits.
        assert v1_restore(srv, tok, "kept") == kept
        assert v2_restore(srv, tok, "kept-v2") == kept
        small = os.urandom(MiB)
        v2_save(srv, tok, "after", small)
        assert v2_restore(srv, tok, "after") == small
        assert "Traceback" not in srv.log_path.read_text()  # type: ignore[union-attr]
    finally:
        srv.stop()


def test_a_full_disk_keeps_restores_working_refuses_saves_clearly_and_survives_a_restart(small_volume: Path) -> None:
    srv = small_volume_server(small_volume)
    try:
        tok = srv.token()
        kept = os.urandom(MiB)
        v1_save(srv, tok, "kept", kept)
        # An upload in flight when the disk fills: the janitor must free it although the database is full.
        pending = v1_reserve(srv, tok, "pending", None).json()["cacheId"]
        assert v1_patch(srv, tok, pending, 0, os.urandom(MiB)).status_code == 204
        # Blocks staged while there was room, small enough to be joined into one file at Put Block List.
        listing = v2_create(srv, tok, "listed")
        block_ids = put_blocks(listing["signed_upload_url"], [os.urandom(4096) for _ in range(300)])
        filler = fill(small_volume)

        # The block list finds no room: a 507 in Azure's shape, and the upload is dropped at once (its
        # blocks are what fills the disk, and the same list would be refused again).
        listed = put_block_list(listing["signed_upload_url"], block_ids)
        assert listed.status_code == 507 and "cache storage full" in listed.text, listed.text
        assert listed.headers["x-ms-error-code"] == "InsufficientStorage"
        assert (
            httpx.put(listing["signed_upload_url"] + "&comp=block&blockid=" + block_ids[0], content=b"x").status_code
            == 404
        )

        # Restores keep working although their access time cannot be written.
        assert v1_restore(srv, tok, "kept") == kept
        assert v2_restore(srv, tok, "kept") == kept
        # New saves get the answers the client turns into a warning, not a 500.
        created = v2_create(srv, tok, "new")
        assert created["ok"] is False and created["message"].startswith("cache storage full"), created
        r = v1_reserve(srv, tok, "new", 10)
        assert r.status_code == 400 and "cache storage full" in r.json()["message"], r.text

        # A restart on the full disk succeeds and serves the entry.
        srv.stop()
        srv.start()
        assert v1_restore(srv, tok, "kept") == kept
        assert staged(srv.data_dir) == []

        # Space comes back: saving works again, and the old upload's key is free.
        filler.unlink()
        v1_save(srv, tok, "pending", b"now it fits")
        # The dropped block upload's key is free (its row goes with the drop, or with the janitor once the
        # database can be written again).
        assert wait_for(lambda: v2_create(srv, tok, "listed")["ok"]), "the dropped upload still holds its key"
        assert v1_restore(srv, tok, "pending") == b"now it fits"
        assert v1_restore(srv, tok, "kept") == kept
        assert "Traceback" not in srv.log_path.read_text()  # type: ignore[union-attr]
    finally:
        srv.stop()


# --- commits racing writes and other commits ----------------------------------------------------------
def test_a_patch_still_streaming_cannot_change_a_committed_entry(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        tok = srv.token()
        size = 4 * MiB
        first = os.urandom(size)
        cid = v1_reserve(srv, tok, "sealed", size).json()["cacheId"]
        assert v1_patch(srv, tok, cid, 0, first).status_code == 204

        # A retry of the same chunk with other bytes is still sending when the commit arrives.
        release = threading.Event()

        def late_body() -> Iterator[bytes]:
            yield b"X" * MiB
            release.wait(20)
            yield b"X" * (size - MiB)

        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(v1_patch, srv, tok, cid, 0, late_body(), None, size)
            time.sleep(0.5)
            started = time.time()
            busy = v1_commit(srv, tok, cid, size)
            # The commit waited for the writer, then refused rather than commit under it.
            assert busy.status_code == 409, busy.text
            assert time.time() - started >= 4
            release.set()
            assert late.result().status_code == 204
        assert v1_commit(srv, tok, cid, size).status_code == 204
        committed = v1_restore(srv, tok, "sealed")
        assert committed == b"X" * size

        # From now on nothing reaches the entry: writes fail and the bytes match the recorded hash.
        assert v1_patch(srv, tok, cid, 0, b"evil").status_code == 404
        hit = v1_lookup(srv, tok, "sealed").json()
        got = httpx.get(hit["archiveLocation"])
        assert got.content == committed and got.headers["x-ms-meta-sha256"] == sha256(committed)
    finally:
        srv.stop()


def test_a_commit_never_lets_a_writer_that_started_before_it_finish_into_the_blob(tmp_path: Path) -> None:
    """No declared size: the old code let a late PATCH grow the committed blob past its recorded size."""
    srv = Server(tmp_path / "data").start()
    try:
        tok = srv.token()
        cid = v1_reserve(srv, tok, "grow", None).json()["cacheId"]
        body = os.urandom(MiB)
        assert v1_patch(srv, tok, cid, 0, body).status_code == 204
        release = threading.Event()

        def tail() -> Iterator[bytes]:
            yield b"T" * 1000
            release.wait(20)
            yield b"T" * 1000

        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(v1_patch, srv, tok, cid, MiB, tail(), None, 2000)
            time.sleep(0.5)
            assert v1_commit(srv, tok, cid, MiB).status_code == 409
            release.set()
            late.result()
        # The late range is part of the upload now; a commit of the first MiB alone is refused as too long.
        assert v1_commit(srv, tok, cid, MiB).status_code == 400
        assert v1_commit(srv, tok, cid, MiB + 2000).status_code == 204
        data = v1_restore(srv, tok, "grow")
        assert data == body + b"T" * 2000
    finally:
        srv.stop()


def test_concurrent_finalizes_commit_one_whole_entry(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        tok = srv.token()
        for round_ in range(8):
            key = f"race-{round_}"
            # Blocks over 1 MiB stay as parts: the path where two commits once shared a folder name.
            blocks = [os.urandom(MiB + 17) for _ in range(6)]
            created = v2_create(srv, tok, key)
            ids = put_blocks(created["signed_upload_url"], blocks)
            assert put_block_list(created["signed_upload_url"], ids).status_code == 201
            total = sum(len(b) for b in blocks)
            with ThreadPoolExecutor(3) as pool:
                results = list(pool.map(lambda k: v2_finalize(srv, tok, k, total), [key] * 3))  # noqa: B023
            winners = {r["entry_id"] for r in results if r["ok"]}
            assert len(winners) == 1, results  # a retry gets the first one's entry, never a second one
            assert all(r["ok"] or "being committed" in r["message"] for r in results), results
            assert v2_restore(srv, tok, key) == b"".join(blocks)
        # v1: the same for commits by id.
        data = os.urandom(300_000)
        cid = v1_reserve(srv, tok, "race-v1", len(data)).json()["cacheId"]
        assert v1_patch(srv, tok, cid, 0, data).status_code == 204
        with ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(lambda _: v1_commit(srv, tok, cid, len(data)).status_code, range(3)))
        assert 204 in codes and set(codes) <= {204, 409}, codes
        assert v1_restore(srv, tok, "race-v1") == data
        assert staged(srv.data_dir) == []
    finally:
        srv.stop()


# --- limits -------------------------------------------------------------------------------------------
def test_entry_size_is_capped_at_reserve_and_while_bytes_arrive(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", env={"RUNCACHE_MAX_ENTRY_SIZE_MB": "2"}).start()
    try:
        tok = srv.token()
        r = v1_reserve(srv, tok, "declared", 3 * MiB)
        assert r.status_code == 400 and "over the 2 MB limit" in r.json()["message"]
        r = v1_reserve(srv, tok, "absurd", 10**30)
        assert r.status_code == 400
        r = v1_reserve(srv, tok, "tb", 2**40)
        assert r.status_code == 400 and "limit" in r.json()["message"]

        # No declared size: a chunk far past the cap is refused before a sparse file appears.
        cid = v1_reserve(srv, tok, "sparse", None).json()["cacheId"]
        far = v1_patch(srv, tok, cid, 2**40, b"x")
        assert far.status_code == 413
        assert all(p.stat().st_size < MiB for p in (srv.data_dir / "uploads").rglob("*") if p.is_file())

        # Put Blob past the cap is cut off while streaming, and its staging goes.
        created = v2_create(srv, tok, "stream")
        put = httpx.put(
            created["signed_upload_url"], content=slow_body(5 * MiB), headers={"x-ms-blob-type": "BlockBlob"}
        )
        assert put.status_code == 413
        # Blocks count together against the cap.
        created = v2_create(srv, tok, "blocks")
        put_blocks(created["signed_upload_url"], [b"b" * MiB])
        over = httpx.put(created["signed_upload_url"] + "&comp=block&blockid=" + "YWFh", content=b"c" * (MiB + 10))
        assert over.status_code == 413
        fine = os.urandom(MiB)
        v2_save(srv, tok, "fits", fine)
        assert v2_restore(srv, tok, "fits") == fine
    finally:
        srv.stop()


def test_uploads_per_repository_and_blocks_per_upload_are_bounded(tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "data", env={"RUNCACHE_MAX_UPLOADS_PER_REPO": "3", "RUNCACHE_MAX_BLOCKS_PER_UPLOAD": "10"}
    ).start()
    try:
        tok = srv.token()
        for i in range(3):
            assert v1_reserve(srv, tok, f"open-{i}", 10).status_code == 201
        r = v1_reserve(srv, tok, "one-too-many", 10)
        assert r.status_code == 400 and "uploads in progress" in r.json()["message"]
        created = v2_create(srv, tok, "v2-too-many")
        assert created["ok"] is False and "uploads in progress" in created["message"]
        # Another repository has its own allowance.
        other = srv.token(repo="octo/other")
        created = v2_create(srv, other, "blocks")
        assert created["ok"]
        ids = put_blocks(created["signed_upload_url"], [b"x"] * 10)
        eleventh = httpx.put(created["signed_upload_url"] + "&comp=block&blockid=" + "ZXh0cmE=", content=b"y")
        assert eleventh.status_code == 400 and b"at most 10 blocks" in eleventh.content
        assert put_block_list(created["signed_upload_url"], ids).status_code == 201
        assert v2_finalize(srv, other, "blocks", 10)["ok"]
        assert v2_restore(srv, other, "blocks") == b"x" * 10
    finally:
        srv.stop()


def test_many_tiny_blocks_become_one_file(server: Server) -> None:
    tok = server.token()
    blocks = [bytes([i % 256]) for i in range(300)]
    created = v2_create(server, tok, "tiny")
    ids = put_blocks(created["signed_upload_url"], blocks)
    assert put_block_list(created["signed_upload_url"], ids).status_code == 201
    fin = v2_finalize(server, tok, "tiny", 300)
    assert fin["ok"]
    files = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].stat().st_size == 300
    assert v2_restore(server, tok, "tiny") == b"".join(blocks)


def test_entries_per_repository_are_bounded_least_recently_used_first(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", env={"RUNCACHE_MAX_ENTRIES_PER_REPO": "5"}).start()
    try:
        tok = srv.token()
        for i in range(5):
            v1_save(srv, tok, f"e{i}", b"")
            time.sleep(0.01)
        assert v1_lookup(srv, tok, "e0").status_code == 200  # e0 is now the most recently used
        v1_save(srv, tok, "e5", b"")
        v1_save(srv, tok, "e6", b"")
        present = {f"e{i}" for i in range(7) if v1_lookup(srv, tok, f"e{i}").status_code == 200}
        assert present == {"e0", "e3", "e4", "e5", "e6"}
    finally:
        srv.stop()


# --- who may write an upload ----------------------------------------------------------------------------
def test_another_token_of_the_same_ref_cannot_write_or_commit_a_pending_upload(server: Server) -> None:
    mine, theirs = server.token(), server.token()
    cid = v1_reserve(server, mine, "owned", 4).json()["cacheId"]
    assert v1_patch(server, theirs, cid, 0, b"evil").status_code == 404
    assert v1_patch(server, mine, cid, 0, b"good").status_code == 204
    assert v1_commit(server, theirs, cid, 4).status_code == 404
    assert v1_commit(server, mine, cid, 4).status_code == 204
    assert v1_restore(server, theirs, "owned") == b"good"  # reading is for every token of the scope
    created = v2_create(server, mine, "owned-v2")
    assert httpx.put(created["signed_upload_url"], content=b"data", headers={"x-ms-blob-type": "BlockBlob"})
    assert v2_finalize(server, theirs, "owned-v2", 4)["ok"] is False
    assert v2_finalize(server, mine, "owned-v2", 4)["ok"] is True


def test_repository_names_are_one_repository_whatever_their_case(server: Server) -> None:
    upper, lower = server.token(repo="Octo/App"), server.token(repo="octo/app")
    v1_save(server, upper, "shared", b"one repository")
    assert v1_restore(server, lower, "shared") == b"one repository"
    again = v1_reserve(server, lower, "shared", 3)
    assert again.status_code == 409 and "Cache already exists" in again.json()["message"]
    got = twirp(server, "GetCacheEntryDownloadURL", {"key": "shared", "version": VERSION}, lower).json()
    assert got["ok"] and got["matched_key"] == "shared"
    usage = httpx.get(
        server.url + "/repos/OCTO/APP/actions/cache/usage", headers=auth(server.admin_token("octo/app"))
    ).json()
    assert usage["active_caches_count"] == 1


def test_data_directory_and_blobs_are_private(server: Server) -> None:
    tok = server.token()
    v1_save(server, tok, "private", b"secret")
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    assert blobs and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in blobs)
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o222 == 0 for p in blobs)  # never written again
