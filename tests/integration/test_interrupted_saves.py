"""Interrupted saves free their key at once: the CLI cancels its own upload on SIGINT/SIGTERM (v1 DELETE
with the reserving token, v2 Azure Delete Blob on the signed URL), the server expires uploads that stop
receiving bytes, and management lists and removes uploads in progress."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import RUNCACHE, Server, cli_env
from mgmt_helpers import bearer
from mgmt_helpers import save as mgmt_save
from wire import (
    V1,
    VERSION,
    auth,
    v1_commit,
    v1_patch,
    v1_reserve,
    v1_restore,
    v1_save,
    v2_create,
    v2_finalize,
    v2_restore,
)

MB = 1024 * 1024
BIG_FILES = 10  # 10 x 50 MiB of random bytes, which zstd cannot shrink: the save takes a few seconds
STUCK = "another job may be creating this cache"


# --- helpers ---------------------------------------------------------------------------------------
def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def tree_bytes(root: Path, marker: str = "") -> int:
    """Bytes in the files below `root` (only in folders whose path contains `marker`); tolerates files
    vanishing while it walks, as staging does."""
    total = 0
    for folder, _, files in os.walk(root):
        if marker not in folder:
            continue
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def staging_empty(server: Server) -> bool:
    return not any((server.data_dir / "uploads").iterdir())


def start_cli(server: Server, protocol: str, *args: str, ws: Path, token: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RUNCACHE, *args],
        cwd=ws,
        env=cli_env(server, protocol, token, ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(server: Server, protocol: str, *args: str, ws: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNCACHE, *args],
        cwd=ws,
        env=cli_env(server, protocol, token, ws),
        capture_output=True,
        text=True,
        timeout=300,
    )


def interrupt(proc: subprocess.Popen[str], sig: int) -> tuple[str, float]:
    """Send `sig`; returns stderr and the seconds the process took to exit."""
    assert proc.poll() is None, "the command finished before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err, time.monotonic() - sent


def assert_one_line(err: str) -> str:
    lines = err.splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def reserve_id(server: Server, token: str, key: str) -> int:
    r = v1_reserve(server, token, key, None)
    assert r.status_code == 201, r.text
    return int(r.json()["cacheId"])


def v1_delete(server: Server, token: str, cache_id: int) -> httpx.Response:
    return httpx.delete(f"{server.url}{V1}caches/{cache_id}", headers=auth(token))


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big")
    for i in range(BIG_FILES):
        (root / f"blob{i}.bin").write_bytes(os.urandom(50 * MB))
    return root


def workspace_with(tmp_path: Path, big_tree: Path) -> Path:
    """A workspace whose `big/` holds the shared random files (hard links: no copy per test)."""
    ws = tmp_path / "ws"
    (ws / "big").mkdir(parents=True)
    for f in big_tree.iterdir():
        os.link(f, ws / "big" / f.name)
    return ws


# --- the CLI cancels its own upload ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["v2", "v1"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_save_cancels_its_upload_and_frees_the_key(
    server: Server, big_tree: Path, tmp_path: Path, protocol: str, sig: int
) -> None:
    ws = workspace_with(tmp_path, big_tree)
    token = server.token()
    proc = start_cli(server, protocol, "save", "--path", "big", "--key", "big-1", ws=ws, token=token)
    wait_for(
        lambda: tree_bytes(server.data_dir / "uploads") > MB or proc.poll() is not None, 120, "bytes on the server"
    )
    err, seconds = interrupt(proc, sig)
    assert proc.returncode == 130, err
    line = assert_one_line(err)
    assert "interrupted" in line and "big-1" in line and "cancelled" in line, line
    assert seconds < 10, f"the upload threads took {seconds:.1f} s to stop"
    # The server discarded the staged bytes before it answered the cancel.
    wait_for(lambda: staging_empty(server), 5, "the staging folder to be emptied")
    # Same paths (so the same version), far fewer bytes: the key saves at once, not after an hour.
    for f in sorted((ws / "big").iterdir())[1:]:
        f.unlink()
    again = run_cli(server, protocol, "save", "--path", "big", "--key", "big-1", ws=ws, token=token)
    assert again.returncode == 0, again.stderr
    assert STUCK not in again.stderr and "Cache saved with key: big-1" in again.stdout, again.stdout + again.stderr


@pytest.mark.slow
def test_interrupted_restore_exits_130_and_leaves_the_destination_alone(
    server: Server, big_tree: Path, tmp_path: Path
) -> None:
    ws = workspace_with(tmp_path, big_tree)
    token = server.token()
    saved = run_cli(server, "v2", "save", "--path", "big", "--key", "big-r", ws=ws, token=token)
    assert saved.returncode == 0 and "Cache saved" in saved.stdout, saved.stderr
    dest = tmp_path / "dest"
    (dest / "big").mkdir(parents=True)
    (dest / "big" / "old.txt").write_text("what was here before\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = start_cli(server, "v2", "restore", "--path", "big", "--key", "big-r", ws=dest, token=token)
        started = lambda p=proc: tree_bytes(dest, ".runcache-restore-") > MB or p.poll() is not None  # noqa: E731
        wait_for(started, 120, "restore staging")
        err, _ = interrupt(proc, sig)
        assert proc.returncode == 130, err
        line = assert_one_line(err)
        assert "interrupted" in line and "nothing was changed" in line, line
        assert sorted(p.name for p in (dest / "big").iterdir()) == ["old.txt"]
        assert (dest / "big" / "old.txt").read_text() == "what was here before\n"


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_library_save_interrupted_mid_stream_cancels_the_reservation(server: Server, protocol: str) -> None:
    """`runcache run`'s cache steps call the same CacheClient.save: a cancelled run abandons its upload too."""
    from runcache.client.transfer import CacheClient

    def stream() -> Iterator[bytes]:
        yield os.urandom(40 * MB)  # more than one 32 MiB chunk: v1 has sent one while the next is produced
        time.sleep(0.2)
        raise KeyboardInterrupt

    token = server.token()
    with CacheClient(server.url, token, protocol) as client, pytest.raises(KeyboardInterrupt):
        client.save("lib-1", VERSION, stream())
    assert staging_empty(server)
    assert v1_reserve(server, server.token(), "lib-1", None).status_code == 201


# --- idle expiry --------------------------------------------------------------------------------------
def test_idle_upload_expires_but_a_slow_active_stream_does_not(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", env={"RUNCACHE_UPLOAD_IDLE_TIMEOUT": "2", "RUNCACHE_JANITOR_INTERVAL": "1"}).start()
    try:
        token = srv.token()
        idle = reserve_id(srv, token, "idle-key")
        assert v1_patch(srv, token, idle, 0, b"x" * 1000).status_code == 204
        slow = reserve_id(srv, token, "slow-key")
        pieces = [os.urandom(100) for _ in range(20)]

        def trickle() -> Iterator[bytes]:
            for piece in pieces:  # 6 s in all, three times the idle limit, never silent for long
                time.sleep(0.3)
                yield piece

        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(
            target=lambda: result.setdefault("r", v1_patch(srv, token, slow, 0, trickle(), length=2000))
        )
        sender.start()
        # The idle one frees its key within a few janitor passes after the limit.
        wait_for(lambda: v1_reserve(srv, token, "idle-key", None).status_code == 201, 15, "the idle key to be free")
        assert not (srv.data_dir / "uploads" / str(idle)).exists()
        sender.join(30)
        assert result["r"].status_code == 204, result["r"].text
        data = b"".join(pieces)
        assert v1_commit(srv, token, slow, len(data)).status_code == 204
        assert v1_restore(srv, token, "slow-key") == data
    finally:
        srv.stop()


# --- the abandon calls --------------------------------------------------------------------------------
def test_v1_delete_abandons_only_for_the_reserving_token(server: Server) -> None:
    owner, other = server.token(), server.token()  # same repository and ref, different tokens
    uid = reserve_id(server, owner, "ab-1")
    assert v1_patch(server, owner, uid, 0, b"y" * 5000).status_code == 204
    assert v1_delete(server, other, uid).status_code == 404
    assert (server.data_dir / "uploads" / str(uid)).is_dir()
    assert v1_reserve(server, other, "ab-1", None).status_code == 409
    assert v1_delete(server, owner, uid).status_code == 204
    assert staging_empty(server)
    assert v1_reserve(server, other, "ab-1", None).status_code == 201
    assert v1_delete(server, owner, uid).status_code == 404


def test_v2_delete_on_the_signed_upload_url_abandons(server: Server) -> None:
    token = server.token()
    created = v2_create(server, token, "ab-2")
    assert created["ok"], created
    url = created["signed_upload_url"]
    assert httpx.put(url, content=b"z" * 4096, headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
    forged = url.replace("sig=", "sig=0")
    assert httpx.delete(forged).status_code == 401
    assert not staging_empty(server)
    r = httpx.delete(url)
    assert r.status_code == 202, r.text
    assert r.headers.get("x-ms-request-id")
    assert staging_empty(server)
    assert v2_create(server, server.token(), "ab-2")["ok"]


def test_abandon_never_touches_a_committed_entry(server: Server) -> None:
    token = server.token()
    data1 = os.urandom(3000)
    cid = v1_save(server, token, "done-1", data1)
    assert v1_delete(server, token, cid).status_code == 404
    assert v1_restore(server, token, "done-1") == data1
    data2 = os.urandom(3000)
    created = v2_create(server, token, "done-2")
    assert httpx.put(created["signed_upload_url"], content=data2, headers={"x-ms-blob-type": "BlockBlob"}).is_success
    assert v2_finalize(server, token, "done-2", len(data2))["ok"]
    assert httpx.delete(created["signed_upload_url"]).status_code == 404
    assert hashlib.sha256(v2_restore(server, token, "done-2")).digest() == hashlib.sha256(data2).digest()


def test_abandon_refuses_an_upload_being_committed(tmp_path: Path) -> None:
    from runcache.core.entries import COMMITTED, COMMITTING
    from runcache.core.errors import NotFound, UploadBusy
    from runcache.core.scopes import Identity, build_scopes
    from runcache.services.cache import CacheService
    from runcache.store.disk import DiskBlobStore
    from runcache.store.metadata import MetadataStore
    from runcache.store.staging import Staging

    svc = CacheService(
        MetadataStore(f"sqlite:///{tmp_path / 'm.db'}"),
        DiskBlobStore(tmp_path / "blobs"),
        Staging(tmp_path / "uploads"),
        node_id="n1",
        reservation_ttl=3600,
    )
    who = Identity("o/r", build_scopes("refs/heads/main", default_branch="main"))
    entry = svc.reserve(who, "k", VERSION, 3)
    w = svc.chunk_writer(entry, 0, 3)
    w.write(b"abc")
    w.finish()
    assert svc.metadata.claim_commit(entry.id, size=3, sha256="0" * 64)  # a commit on another replica
    with pytest.raises(UploadBusy):
        svc.abandon_upload(entry)
    current = svc.metadata.get(entry.id)
    assert current is not None and current.state == COMMITTING and svc.staging.exists(entry.id)

    other = svc.reserve(who, "k2", VERSION, 3)
    w = svc.chunk_writer(other, 0, 3)
    w.write(b"def")
    w.finish()
    svc.commit(other, 3)
    with pytest.raises(NotFound):
        svc.abandon_upload(other)
    kept = svc.metadata.get(other.id)
    assert kept is not None and kept.state == COMMITTED and svc.blobs.contains(str(other.id))


# --- management ---------------------------------------------------------------------------------------
def test_rest_lists_and_removes_uploads_in_progress(server: Server) -> None:
    job = server.token()
    uid = reserve_id(server, job, "mg-1")
    assert v1_patch(server, job, uid, 0, b"q" * 1234).status_code == 204
    mgmt_save(server, "mg-done", b"committed")  # committed entries are not uploads in progress
    reader = bearer(server.admin_token(permission="read"))
    for base in ("", "/api/v3"):
        r = httpx.get(f"{server.url}{base}/repos/octo/app/actions/cache/uploads", headers=reader)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total_count"] == 1
        [up] = body["uploads"]
        assert (up["id"], up["key"], up["ref"], up["version"]) == (uid, "mg-1", "refs/heads/main", VERSION)
        assert up["received_bytes"] == 1234 and up["reserved_at"].endswith("Z")
    url = f"{server.url}/repos/octo/app/actions/cache/uploads/{uid}"
    assert httpx.delete(url, headers=reader).status_code == 403
    assert httpx.delete(url, headers=bearer(server.token(ref="refs/heads/feature"))).status_code == 403
    assert httpx.delete(url, headers=bearer(server.admin_token("octo/other"))).status_code == 404
    assert httpx.delete(url, headers=bearer(server.admin_token(permission="write"))).status_code == 204
    assert staging_empty(server)
    assert v1_reserve(server, job, "mg-1", None).status_code == 201
    assert httpx.delete(url, headers=bearer(server.admin_token())).status_code == 404


def test_cli_ls_in_progress_and_rm_cancel_uploads(server: Server) -> None:
    job = server.token()
    first = reserve_id(server, job, "cli-up")
    assert v1_patch(server, job, first, 0, b"w" * 777).status_code == 204
    second = reserve_id(server, job, "cli-up-2")
    env = {
        **os.environ,
        "RUNCACHE_URL": server.url,
        "RUNCACHE_ADMIN_TOKEN": server.admin_token(),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RUNCACHE, *args], capture_output=True, text=True, env=env, timeout=60)

    ls = run("ls", "--in-progress")
    assert ls.returncode == 0, ls.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in ls.stdout.splitlines()}
    assert rows[str(first)][1:3] == ["cli-up", "777"] and rows[str(second)][1:3] == ["cli-up-2", "0"]
    assert run("ls").stdout == ""  # the cache list itself stays committed caches only
    by_key = run("rm", "cli-up")  # a key names its in-progress upload too: that is what blocks a new save
    assert by_key.returncode == 0, by_key.stderr
    assert v1_reserve(server, job, "cli-up", None).status_code == 201
    by_id = run("rm", str(second))
    assert by_id.returncode == 0, by_id.stderr
    assert v1_reserve(server, job, "cli-up-2", None).status_code == 201
    missing = run("rm", "never-saved")
    assert missing.returncode == 1 and "Could not find" in missing.stderr
