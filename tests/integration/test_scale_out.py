"""Two replicas behind a round-robin nginx, with no stickiness (issue 10, scale-out).

Both replicas share one PostgreSQL database and one SeaweedFS bucket (`--blobs s3://bucket/prefix`), and
with that, uploads in flight: any v1 chunk, Azure block or Put Blob, and any commit, may reach any replica.
The balancer sends consecutive requests to alternate replicas (one shared round-robin for all nginx
workers), so a save crosses replicas between its reserve, its chunks and its commit as a matter of course.

What is checked, through the balancer only (tests/cluster.py):
- the real @actions/cache 6.3.0 saves and restores byte-identical archives on v1 (chunks of one upload on
  both replicas, as both replicas' logs show) and v2, and raw Azure blocks of one upload on both replicas;
- 20 concurrent saves of one key, v1 and v2 mixed, leave exactly one entry, the winner's bytes;
- a chunk sent twice (a retry whose first attempt was stored) still commits;
- a replica killed with SIGKILL in the middle of a multi-chunk v1 upload by the real client: the client's
  own retry of the lost chunks goes to the surviving replica and the save succeeds; entries saved before
  keep their bytes, and a second upload left open across the kill and the restart still commits. Two
  scenarios: the killed replica stays down until the save finished (restarted afterwards), and it is
  restarted at once, so its start-up recovery runs while the uploads go on;
- a replica started (with a one-second janitor) while another one commits a large entry, and while a
  second upload is half sent, deletes nothing of either: both commit and restore;
- a slow chunk still arriving on one replica is not expired by another replica's idle janitor, and a chunk
  that finishes after its upload was given up on another replica is refused, not acknowledged.

Needs PostgreSQL, SeaweedFS and nginx (scripts/setup --dev); a missing one fails the module, never skips it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from cluster import Gate, Replicas, replicas_on
from helpers import ClientRun, Server, run_client
from pg import Cluster
from s3server import SeaweedFS
from wire import (
    TWIRP,
    V1,
    auth,
    put_block_list,
    put_blocks,
    v1_commit,
    v1_patch,
    v1_reserve,
    v1_restore,
    v2_create,
    v2_finalize,
    v2_restore,
    v2_save,
)

MIB = 1024 * 1024


# --- fixtures: the session's PostgreSQL and SeaweedFS (tests/conftest.py), one pair of replicas for the module
@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster, seaweed: SeaweedFS) -> Iterator[Replicas]:
    blobs = f"s3://{seaweed.bucket}/scale-{uuid.uuid4().hex[:12]}"  # a prefix of its own in the shared bucket
    with replicas_on(tmp_path_factory.mktemp("scale-out"), pg_cluster, blobs, seaweed.env) as cluster:
        yield cluster


@pytest.fixture
def front(replicas: Replicas) -> Server:
    """The balancer as a Server handle, for the wire helpers and the real client."""
    return replicas.front


# --- helpers --------------------------------------------------------------------------------------------
def random_file(path: Path, size: int) -> str:
    """Incompressible bytes (the client's zstd cannot shrink the archive below `size`); returns the SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, MIB))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    return digest.hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def client(
    front: Server, protocol: str, command: str, ws: Path, key: str, *, token: str, env: dict[str, str] | None = None
) -> ClientRun:
    """The real @actions/cache saving or restoring `ws/deps` through the balancer."""
    run = run_client(front, protocol, command, workspace=ws, token=token, paths=["deps"], key=key, extra_env=env)
    assert isinstance(run, ClientRun)
    return run


def saved_ok(output: str, protocol: str = "v1") -> None:
    """The client's save succeeded. Its result alone does not say so: saveCache catches upload and commit
    failures, logs `Failed to save: …` as a warning and still returns the reserved cache id (v1)."""
    assert "Failed to save" not in output and "::warning::" not in output, output[-5000:]
    if protocol == "v1":
        assert "Cache saved successfully" in output, output[-5000:]
    else:
        assert '"cacheId":-1' not in output, output[-5000:]


def served_by(replicas: Replicas, method: str, uri: str | re.Pattern[str], status: int | None = None) -> list[int]:
    """Which replica answered each matching request, from the balancer's access log."""
    out = []
    for line in replicas.balancer.lines() if replicas.balancer else []:
        matches = line.uri == uri if isinstance(uri, str) else uri.fullmatch(line.uri)
        if line.method == method and matches and (status is None or line.status == status) and line.upstreams:
            out.append(replicas.index_of(line.upstreams[-1]))
    return out


def replica_access_count(replicas: Replicas, index: int, method: str, path: str, status: int) -> int:
    """uvicorn's own access lines in one replica's log: what that replica says it answered."""
    return replicas.replica_log(index).count(f'"{method} {path} HTTP/1.1" {status}')


def entry_state(replicas: Replicas, entry_id: int) -> str | None:
    """The row's state, read straight from PostgreSQL (uploading, committing, committed, or gone)."""
    with psycopg.connect(replicas.database_url) as conn:
        row = conn.execute("SELECT state FROM cache_entries WHERE id = %s", (entry_id,)).fetchone()
    return row[0] if row else None


def committed_entries(replicas: Replicas, key: str) -> list[dict]:
    """Committed entries of `key` (the management API lists committed entries only)."""
    r = httpx.get(
        f"{replicas.url}/repos/octo/app/actions/caches",
        params={"key": key},
        headers=auth(replicas.admin_token()),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [c for c in r.json()["actions_caches"] if c["key"] == key]


# --- the real client -------------------------------------------------------------------------------------
def test_real_client_v1_chunks_of_one_upload_land_on_both_replicas(
    replicas: Replicas, front: Server, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    want = random_file(ws / "deps" / "blob.bin", 12 * MIB)
    token = replicas.token()
    # 1 MiB chunks, four at a time (CACHE_UPLOAD_CHUNK_SIZE is in MiB): about a dozen PATCHes, in parallel.
    env = {"CACHE_UPLOAD_CHUNK_SIZE": "1", "CACHE_UPLOAD_CONCURRENCY": "4"}
    saved = client(front, "v1", "save", ws, "scale-v1-chunks", token=token, env=env)
    saved_ok(saved.output)
    cache_id = saved.result["cacheId"]
    path = f"{V1}caches/{cache_id}"
    chunks = served_by(replicas, "PATCH", path, 204)
    assert len(chunks) >= 12 and set(chunks) == {0, 1}, chunks
    # Each replica's own log agrees that it stored chunks of this one upload.
    assert all(replica_access_count(replicas, i, "PATCH", path, 204) > 0 for i in (0, 1))
    assert served_by(replicas, "POST", path, 204), "the commit went through the balancer"

    shutil.rmtree(ws / "deps")
    got = client(front, "v1", "restore", ws, "scale-v1-chunks", token=token)
    assert got.result["matchedKey"] == "scale-v1-chunks", got.output
    assert file_sha(ws / "deps" / "blob.bin") == want


def test_real_client_v2_saves_across_replicas(replicas: Replicas, front: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    want = random_file(ws / "deps" / "blob.bin", 6 * MIB)
    token = replicas.token()
    before = len(replicas.balancer.lines()) if replicas.balancer else 0
    saved = client(front, "v2", "save", ws, "scale-v2", token=token)
    saved_ok(saved.output, "v2")
    # CreateCacheEntry, the Put Blob on the signed URL (which names the balancer), FinalizeCacheEntryUpload.
    lines = replicas.balancer.lines()[before:] if replicas.balancer else []
    upload = [ln for ln in lines if ln.uri.startswith(("/runcache/uploads/", TWIRP))]
    assert [ln.method for ln in upload] == ["POST", "PUT", "POST"], upload
    assert all(ln.status in (200, 201) for ln in upload), upload
    assert len({replicas.index_of(ln.upstreams[-1]) for ln in upload}) == 2, upload  # the save crossed replicas

    shutil.rmtree(ws / "deps")
    got = client(front, "v2", "restore", ws, "scale-v2", token=token)
    assert got.result["matchedKey"] == "scale-v2", got.output
    assert file_sha(ws / "deps" / "blob.bin") == want


def test_azure_blocks_of_one_upload_on_both_replicas(replicas: Replicas, front: Server) -> None:
    """What the Azure SDK does past 128 MiB, in small: blocks of one upload reach both replicas, then the
    block list and the finalize may reach either."""
    token = replicas.token()
    created = v2_create(front, token, "scale-v2-blocks")
    assert created["ok"], created
    url = created["signed_upload_url"]
    assert url.startswith(replicas.url), url
    blocks = [os.urandom(MIB + i) for i in range(6)]
    ids = put_blocks(url, blocks)
    upload_path = httpx.URL(url).path
    assert set(served_by(replicas, "PUT", upload_path, 201)) == {0, 1}
    assert put_block_list(url, ids).status_code == 201
    data = b"".join(blocks)
    fin = v2_finalize(front, token, "scale-v2-blocks", len(data))
    assert fin["ok"], fin
    assert v2_restore(front, token, "scale-v2-blocks") == data


def test_a_chunk_stored_twice_still_commits(replicas: Replicas, front: Server) -> None:
    """A client retries a chunk whose first attempt was stored but never answered (its replica died after
    storing it, or the answer was lost): the upload then holds two copies of one range, on two replicas."""
    token = replicas.token()
    data = os.urandom(3 * MIB)
    cid = v1_reserve(front, token, "scale-twice", len(data)).json()["cacheId"]
    for start in (0, MIB, MIB, 2 * MIB, 2 * MIB):  # round-robin: each repeat lands on the other replica
        assert v1_patch(front, token, cid, start, data[start : start + MIB]).status_code == 204
    done = v1_commit(front, token, cid, len(data))
    assert done.status_code == 204, done.text
    assert v1_restore(front, token, "scale-twice") == data


def test_a_slow_chunk_on_one_replica_is_not_expired_by_another(replicas: Replicas, front: Server) -> None:
    """The idle timeout frees the key of an upload nobody sends to. A chunk still arriving, slowly, on one
    replica is activity, whichever replica's janitor looks: here a third replica (not in the balancer) with a
    2 s idle timeout and a janitor every second, while a 1 MiB chunk takes about 6 s to reach replica 0 (the
    same ratio as 300 s and a 28 KB/s link for a body below one 8 MiB part)."""
    token = replicas.token()
    watcher = len(replicas.servers)
    replicas.add(join=False, env={"RUNCACHE_JANITOR_INTERVAL": "1"}, args=["--upload-idle-timeout", "2"])
    try:
        data = os.urandom(MIB)
        cid = v1_reserve(front, token, "scale-slow-chunk", len(data)).json()["cacheId"]

        def trickle() -> Iterator[bytes]:
            for i in range(0, len(data), 64 * 1024):
                time.sleep(0.4)
                yield data[i : i + 64 * 1024]

        direct = replicas.servers[0]
        patched = v1_patch(direct, token, cid, 0, trickle(), length=len(data))
        assert patched.status_code == 204, patched.text
        done = v1_commit(front, token, cid, len(data))
        assert done.status_code == 204, (done.text, replicas.replica_log(watcher)[-2000:])
        assert v1_restore(front, token, "scale-slow-chunk") == data
    finally:
        replicas.retire(watcher)


def test_a_chunk_finishing_after_its_upload_was_abandoned_elsewhere_is_refused(
    replicas: Replicas, front: Server
) -> None:
    """The job gives its upload up on one replica (v1 DELETE) while a chunk still arrives on the other: the
    chunk must not be acknowledged for an upload that no longer exists, and nothing of it may commit."""
    token = replicas.token()
    data = os.urandom(MIB)
    cid = v1_reserve(front, token, "scale-abandoned", len(data)).json()["cacheId"]
    sent = threading.Event()

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            if i == 4 * 64 * 1024:
                sent.set()  # well under way on replica 0
            time.sleep(0.2)
            yield data[i : i + 64 * 1024]

    answer: dict[str, httpx.Response] = {}
    sender = threading.Thread(
        target=lambda: answer.setdefault("r", v1_patch(replicas.servers[0], token, cid, 0, trickle(), length=MIB))
    )
    sender.start()
    assert sent.wait(30)
    gone = httpx.delete(f"{replicas.servers[1].url}{V1}caches/{cid}", headers=auth(token), timeout=30)
    assert gone.status_code == 204, gone.text
    sender.join(60)
    assert answer["r"].status_code == 404, answer["r"].text
    assert v1_commit(front, token, cid, len(data)).status_code == 404
    # The key is free at once: a new save of it goes through.
    assert _save_v1(front, token, "scale-abandoned", data)
    assert v1_restore(front, token, "scale-abandoned") == data


# --- one key, many writers ---------------------------------------------------------------------------------
def _save_v1(front: Server, token: str, key: str, data: bytes) -> bool:
    r = v1_reserve(front, token, key, len(data))
    if r.status_code != 201:
        assert r.status_code == 409, r.text  # another save holds or made the key
        return False
    cid = r.json()["cacheId"]
    third = len(data) // 3
    for start, end in ((0, third), (third, 2 * third), (2 * third, len(data))):
        patched = v1_patch(front, token, cid, start, data[start:end])
        assert patched.status_code == 204, patched.text
    done = v1_commit(front, token, cid, len(data))
    assert done.status_code == 204, done.text
    return True


def _save_v2(front: Server, token: str, key: str, data: bytes) -> bool:
    created = v2_create(front, token, key)
    if not created.get("ok"):
        return False
    url = created["signed_upload_url"]
    half = len(data) // 2
    ids = put_blocks(url, [data[:half], data[half:]])
    assert put_block_list(url, ids).status_code == 201
    fin = v2_finalize(front, token, key, len(data))
    assert fin["ok"], fin
    return True


def test_twenty_concurrent_saves_of_one_key_leave_exactly_one_entry(replicas: Replicas, front: Server) -> None:
    key = "scale-race"
    token = replicas.token()
    payloads = [os.urandom(3 * 256 * 1024 + i) for i in range(20)]
    barrier = threading.Barrier(len(payloads))
    won: dict[int, bool] = {}
    errors: list[BaseException] = []

    def save(i: int) -> None:
        try:
            barrier.wait()
            won[i] = (_save_v1 if i % 2 else _save_v2)(front, token, key, payloads[i])
        except BaseException as exc:  # reported below, with the thread's index
            errors.append(AssertionError(f"save {i}: {exc!r}"))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    winners = [i for i, ok in won.items() if ok]
    assert len(won) == len(payloads) and len(winners) == 1, won
    entries = committed_entries(replicas, key)
    assert len(entries) == 1, entries
    want = payloads[winners[0]]
    # Both protocols, through the balancer: the downloads reach both replicas between them.
    assert v1_restore(front, token, key) == want
    assert v2_restore(front, token, key) == want
    assert v1_restore(front, token, key) == want


# --- a replica dies mid-upload ---------------------------------------------------------------------------------
def _entries_before(front: Server, token: str, tag: str) -> dict[str, bytes]:
    """A few entries of both protocols and both S3 write paths (one PUT, and multipart past 8 MiB)."""
    kept = {f"{tag}-small-v1": os.urandom(100_000), f"{tag}-big-v2": os.urandom(9 * MIB + 7)}
    kept[f"{tag}-small-v2"] = os.urandom(50_000)
    for key, data in kept.items():
        if key.endswith("v1"):
            assert _save_v1(front, token, key, data)
        else:
            v2_save(front, token, key, data)
    return kept


def _check_entries(front: Server, token: str, kept: dict[str, bytes]) -> None:
    for key, data in kept.items():
        # Twice each: round-robin puts the two downloads on different replicas.
        for _ in range(2):
            got = v1_restore(front, token, key) if key.endswith("v1") else v2_restore(front, token, key)
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), key


def _kill_mid_upload(replicas: Replicas, front: Server, ws: Path, key: str, *, restart_at_once: bool) -> None:
    token = replicas.token()
    kept = _entries_before(front, token, key)
    # A second upload, open across the kill and the restart whatever the client's pace: two of its three
    # chunks now (one on each replica), the last one and the commit once the victim is back.
    open_key, open_data = f"{key}-open-v1", os.urandom(3 * MIB)
    open_id = v1_reserve(front, token, open_key, len(open_data)).json()["cacheId"]
    for start in (0, MIB):
        assert v1_patch(front, token, open_id, start, open_data[start : start + MIB]).status_code == 204
    want = random_file(ws / "deps" / "blob.bin", 48 * MIB)
    env = {"CACHE_UPLOAD_CHUNK_SIZE": "1", "CACHE_UPLOAD_CONCURRENCY": "4"}
    mark = len(replicas.balancer.lines()) if replicas.balancer else 0
    proc = run_client(
        front, "v1", "save", workspace=ws, token=token, paths=["deps"], key=key, extra_env=env, background=True
    )
    assert isinstance(proc, subprocess.Popen)
    victim = 1
    patch = re.compile(re.escape(V1) + r"caches/\d+")
    try:
        # Wait until the upload is well under way and the victim has stored some of its chunks.
        deadline = time.monotonic() + 120
        while True:
            lines = replicas.balancer.lines()[mark:] if replicas.balancer else []
            done = [ln for ln in lines if ln.method == "PATCH" and patch.fullmatch(ln.uri) and ln.status == 204]
            on_victim = [ln for ln in done if replicas.index_of(ln.upstreams[-1]) == victim]
            if len(done) >= 6 and on_victim:
                break
            assert proc.poll() is None, "the save ended before the kill: make the archive bigger"
            assert time.monotonic() < deadline, "the upload did not start"
            time.sleep(0.01)
        replicas.kill(victim)
        killed_at = time.time()
        assert proc.poll() is None, "the save ended before the kill"
        if restart_at_once:
            replicas.restart(victim)  # its start-up recovery runs while the upload goes on
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.decode(errors="replace")
    saved_ok(output)
    lines = replicas.balancer.lines()[mark:] if replicas.balancer else []
    patches = [ln for ln in lines if ln.method == "PATCH" and patch.fullmatch(ln.uri)]
    # The kill really was mid-upload: chunks were still answered after it (a chunk in flight on the victim,
    # if any, got a 502 and was sent again by the client; later ones nginx moved on at connect time).
    assert any(ln.at > killed_at and ln.status == 204 for ln in patches), patches
    assert len({ln.uri for ln in patches}) == 1
    if not restart_at_once:
        replicas.restart(victim)  # back for the next tests; its recovery must not touch anything either
    # The victim's start-up recovery ran while this upload was open: it goes on, on either replica.
    assert v1_patch(front, token, open_id, 2 * MIB, open_data[2 * MIB :]).status_code == 204
    assert v1_commit(front, token, open_id, len(open_data)).status_code == 204
    kept[open_key] = open_data
    shutil.rmtree(ws / "deps")
    got = client(front, "v1", "restore", ws, key, token=token)
    assert got.result["matchedKey"] == key, got.output
    assert file_sha(ws / "deps" / "blob.bin") == want
    _check_entries(front, token, kept)
    assert len(committed_entries(replicas, key)) == 1


@pytest.mark.slow  # a crash test
def test_kill_9_of_a_replica_mid_upload_then_restart_after_the_save(
    replicas: Replicas, front: Server, tmp_path: Path
) -> None:
    _kill_mid_upload(replicas, front, tmp_path / "ws", "scale-kill-later", restart_at_once=False)


@pytest.mark.slow  # a crash test
def test_kill_9_of_a_replica_mid_upload_and_restart_at_once(replicas: Replicas, front: Server, tmp_path: Path) -> None:
    _kill_mid_upload(replicas, front, tmp_path / "ws", "scale-kill-restart", restart_at_once=True)


# --- a replica joins while another commits ------------------------------------------------------------------------
def _startup_complete_at(log: str) -> float:
    """When a replica finished its start-up (recovery included), from its log's local timestamps."""
    found = re.search(r"^(\S+ \S+) INFO uvicorn.error: Application startup complete", log, re.M)
    assert found, log[-3000:]
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.slow  # 160 MiB through the balancer and back, three times
def test_a_replica_started_during_a_commit_deletes_nothing_in_flight(
    replicas: Replicas, front: Server, seaweed: SeaweedFS
) -> None:
    token = replicas.token()
    big = os.urandom(160 * MIB)
    step = 8 * MIB
    cid = v1_reserve(front, token, "scale-join-big", len(big)).json()["cacheId"]
    for start in range(0, len(big), step):
        assert v1_patch(front, token, cid, start, big[start : start + step]).status_code == 204
    # A second upload, half sent when the new replica starts, finished after it joined.
    half = os.urandom(4 * MIB)
    other = v1_reserve(front, token, "scale-join-half", len(half)).json()["cacheId"]
    assert v1_patch(front, token, other, 0, half[: 2 * MIB]).status_code == 204

    # The new replica reaches the object store through a gate: its process starts now (seconds of imports on
    # a busy machine), but its start-up (the bucket check, then recovery) waits until the commit is under way.
    gate = Gate(seaweed.endpoint)
    third = len(replicas.servers)
    joined: dict[str, BaseException | None] = {}

    def join() -> None:
        try:
            replicas.add(env={"AWS_ENDPOINT_URL_S3": gate.url, "RUNCACHE_JANITOR_INTERVAL": "1"})
            joined["error"] = None
        except BaseException as exc:  # reported below
            joined["error"] = exc

    joiner = threading.Thread(target=join)
    joiner.start()
    result: dict[str, object] = {}

    def commit() -> None:
        result["response"] = v1_commit(front, token, cid, len(big))
        result["at"] = time.time()

    try:
        deadline = time.monotonic() + 60
        while not gate.held:  # the new replica is at its bucket check
            assert joiner.is_alive() and time.monotonic() < deadline, joined
            time.sleep(0.01)
        committer = threading.Thread(target=commit)
        committer.start()
        while entry_state(replicas, cid) != "committing":  # the commit has claimed the upload
            assert committer.is_alive() and time.monotonic() < deadline, "the commit ended before it was seen"
            time.sleep(0.005)
        gate.open()
        joiner.join(60)
        assert joined.get("error") is None, joined
        time.sleep(2.5)  # a few passes of the new replica's janitor, every second
        committer.join(300)
    finally:
        gate.open()
    response = result["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 204, response
    started = _startup_complete_at(replicas.replica_log(third))
    ended = float(result["at"])  # type: ignore[arg-type]
    assert started < ended, f"the commit ended {started - ended:.1f} s before the new replica's recovery ran"

    assert v1_patch(front, token, other, 2 * MIB, half[2 * MIB :]).status_code == 204
    assert v1_commit(front, token, other, len(half)).status_code == 204
    want = hashlib.sha256(big).digest()
    for _ in range(3):  # round-robin over three replicas
        assert hashlib.sha256(v1_restore(front, token, "scale-join-big")).digest() == want
        assert v1_restore(front, token, "scale-join-half") == half
    assert replica_access_count(replicas, third, "GET", "/healthz", 200) >= 1
    assert "Traceback" not in replicas.replica_log(third), replicas.replica_log(third)[-3000:]
    replicas.retire(third)  # the module's other tests expect two replicas
    gate.close()
