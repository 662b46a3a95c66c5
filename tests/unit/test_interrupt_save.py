"""Ctrl-C at every bytecode of a save's threaded hand-overs: the save stops, and nothing hangs or leaks.

The restore's version of this (test_interrupt_points.py) explains the technique: SIGINT/SIGTERM become
KeyboardInterrupt in the main thread between any two bytecodes, also inside a Python-level lock's
__enter__ right after it took the lock (threading.Condition, so Future, Event, Semaphore and
queue.Queue; httpcore's pool locks). The lock then stays taken, a worker blocks on it for good, and the
save's cleanup waits for that worker forever. These tests raise KeyboardInterrupt at *every* bytecode
the main thread runs in the save's own code and in the thread machinery it calls (threading,
concurrent.futures), the way the interpreter delivers a signal, except where the code holds signals.

The save path's hand-overs: the archive (tar in a child process, zstd on its own C threads) is read on
the main thread; the chunks of a v1 upload or of Azure blocks go to upload threads; every request to
the service or the blob URL (reserve, streamed Put Blob, commit or finalize, block list, the abandon
that gives the key back) runs on a thread of its own, so the main thread never holds httpcore's locks.

After each interruption: the call raised KeyboardInterrupt (or finished, when the point was after the
last hand-over), it did so promptly, no upload thread is left, no descriptor leaked, no temporary
file or child process remains, an entry is committed only with every byte of the archive, and a
reservation that was not committed was given back.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import pytest

from interrupts import WHERE, hang_guarded, interrupt_at, open_fds, rearm, threads_left
from runcache.client import archive, operations, transfer
from runcache.client.transfer import CacheClient

PROMPT_SECONDS = 10  # an interrupted call returns within this (generous for a loaded 2-core CI machine)
THREAD_PREFIXES = ("upload", "runcache-")


# The save's own code and the thread machinery the main thread runs: the code under test and the code
# that owns the locks an interrupt could leave taken.
_MACHINERY = (os.path.dirname(concurrent.futures.__file__), threading.__file__)


def in_save(frame: FrameType) -> bool:
    name = frame.f_code.co_filename
    return name in (transfer.__file__, archive.__file__, operations.__file__) or name.startswith(_MACHINERY)


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    global EARLIER_THREADS
    EARLIER_THREADS = frozenset(threading.enumerate())  # e.g. a local package index another test left running
    with hang_guarded():
        yield


EARLIER_THREADS: frozenset[threading.Thread] = frozenset()


def children() -> list[int]:
    """Child processes of this one that are still there (also zombies nobody waited for)."""
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:  # kernels without CONFIG_PROC_CHILDREN
        return []


@dataclass
class Outcome:
    kind: str  # "complete" or "interrupted"
    seconds: float
    points: int
    value: object = None


def run_interrupted(n: int, call: Callable[[], object]) -> Outcome:
    count = interrupt_at(n, in_save)
    started = time.monotonic()
    try:
        value = call()
        kind = "complete"
    except KeyboardInterrupt:
        value, kind = None, "interrupted"
    finally:
        points = count()
    return Outcome(kind, time.monotonic() - started, points, value)


def check_clean(outcome: Outcome, fds: set[int], n: int) -> None:
    assert outcome.seconds < PROMPT_SECONDS, f"{outcome.seconds:.1f} s to stop after an interrupt at {WHERE}"
    assert not (left := threads_left(*THREAD_PREFIXES, ignore=EARLIER_THREADS)), (
        f"threads {left} left after an interrupt at {WHERE} (opcode {n})"
    )
    leaked = open_fds() - fds
    assert not leaked, f"descriptors {leaked} leaked by an interrupt at {WHERE}"


# --------------------------------------------------------------------------------------- the chunk upload


def test_an_interrupt_at_any_point_of_the_parallel_upload_stops_it_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks sent in several slices by two threads: every path runs (starting threads, waiting for
    # one to be free, collecting completions, stopping mid-chunk).
    monkeypatch.setattr(transfer, "UPLOAD_CONCURRENCY", 2)
    monkeypatch.setattr(transfer, "SEND_SLICE", 100)
    chunks = [bytes([i]) * 300 for i in range(4)]
    total = sum(map(len, chunks))

    def upload() -> tuple[int, dict[int, bytes], list[int]]:
        got: dict[int, bytes] = {}
        progressed: list[int] = []

        def put(offset: int, body: object) -> None:
            got[offset] = b"".join(body)  # type: ignore[call-overload]

        size = transfer._parallel_upload(iter(chunks), put, progressed.append)
        return size, got, progressed

    fds = open_fds()
    first = run_interrupted(0, upload)
    assert first.kind == "complete" and first.points > 100
    assert first.value == (total, {300 * i: c for i, c in enumerate(chunks)}, [300] * 4)
    interrupted = 0
    for n in range(1, first.points + 1):
        rearm()
        outcome = run_interrupted(n, upload)
        check_clean(outcome, fds, n)
        if outcome.kind == "complete":  # reported finished: then every chunk went out whole
            size, got, progressed = outcome.value  # type: ignore[misc]
            assert size == total and b"".join(got[k] for k in sorted(got)) == b"".join(chunks), WHERE
            assert sum(progressed) == total
        interrupted += outcome.kind == "interrupted"
    assert interrupted > first.points // 2


# ----------------------------------------------------------------------------- a whole save on a fake service


@dataclass
class FakeService:
    """The cache service and its blob URLs in-process (v1 REST, v2 twirp with runcache or Azure blob URLs)."""

    azure: bool = False
    reserved: int = 0
    released: int = 0
    committed: bytes | None = None
    parts: dict[str, bytes] = field(default_factory=dict)
    blob: bytes | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url, method = request.url, request.method
        body = request.read()
        path = url.path
        if path.endswith("/_apis/artifactcache/caches") and method == "POST":
            self.reserved += 1
            return httpx.Response(201, json={"cacheId": 7})
        if path.endswith("/caches/7"):
            if method == "PATCH":
                start = int(request.headers["Content-Range"].split()[1].split("-")[0])
                self.parts[f"{start:012d}"] = body
                return httpx.Response(204)
            if method == "POST":
                return self._commit(json.loads(body)["size"], b"".join(self.parts[k] for k in sorted(self.parts)))
            if method == "DELETE":
                return self._release()
        if path.endswith("CreateCacheEntry"):
            self.reserved += 1
            sig = "sv=2024-01-01&sig=x" if self.azure else "sig=x"
            return httpx.Response(200, json={"ok": True, "signed_upload_url": f"http://fake/blob/1?{sig}"})
        if path == "/blob/1":
            if method == "DELETE":
                return self._release()
            comp = url.params.get("comp")
            if comp == "block":
                self.parts[url.params["blockid"]] = body
            elif comp == "blocklist":
                self.blob = b"".join(self.parts[k] for k in sorted(self.parts))
            else:
                self.blob = body
            return httpx.Response(201)
        if path.endswith("FinalizeCacheEntryUpload"):
            return self._commit(int(json.loads(body)["size_bytes"]), self.blob or b"")
        return httpx.Response(500, json={"msg": f"unexpected {method} {path}"})

    def _commit(self, size: int, data: bytes) -> httpx.Response:
        if self.released or len(data) != size:
            return httpx.Response(409, json={"ok": False, "message": "not committable"})
        self.committed = data
        return httpx.Response(200, json={"ok": True})

    def _release(self) -> httpx.Response:
        if self.committed is not None:
            return httpx.Response(404)
        self.released += 1
        return httpx.Response(204)


def fake_client(handler: Callable[[httpx.Request], httpx.Response], protocol: str) -> CacheClient:
    client = CacheClient("http://fake/", "token", protocol)
    client._http.close()
    client._http = client._blob = httpx.Client(transport=httpx.MockTransport(handler))
    return client


@pytest.mark.parametrize(("protocol", "azure"), [("v1", False), ("v2", False), ("v2", True)], ids=["v1", "v2", "azure"])
def test_an_interrupt_at_any_point_of_a_save_never_commits_part_of_it_and_gives_the_key_back(
    protocol: str, azure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_SIZE", 1000)
    monkeypatch.setattr(transfer, "UPLOAD_CONCURRENCY", 2)
    monkeypatch.setattr(transfer, "SEND_SLICE", 400)
    pieces = [bytes([i]) * 700 for i in range(3)]  # 2100 bytes: two full chunks and a short one
    archive_bytes = b"".join(pieces)
    services = [FakeService(azure=azure)]  # the last one is the service of the current run
    client = fake_client(lambda request: services[-1](request), protocol)

    def save() -> object:
        return client.save("k", "v" * 64, iter(pieces))

    try:
        fds = open_fds()
        first = run_interrupted(0, save)
        assert first.kind == "complete" and first.value == len(archive_bytes)
        assert services[-1].committed == archive_bytes and first.points > 100
        outcomes = {"complete": 0, "interrupted": 0}
        for n in range(1, first.points + 1):
            rearm()
            services[-1] = service = FakeService(azure=azure)
            outcome = run_interrupted(n, save)
            check_clean(outcome, fds, n)
            outcomes[outcome.kind] += 1
            if service.committed is not None:
                assert service.committed == archive_bytes, f"part of the archive committed by an interrupt at {WHERE}"
            if outcome.kind == "complete":
                assert service.committed == archive_bytes, WHERE
            elif service.reserved and service.committed is None:
                assert service.released, f"the reservation was kept after an interrupt at {WHERE}"
        assert outcomes["interrupted"] > first.points // 2, outcomes
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------ the archive


def test_an_interrupt_at_any_point_of_the_archive_leaves_no_process_descriptor_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    for i in range(20):
        (ws / "deps" / f"f{i}").write_bytes(os.urandom(3000))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(archive, "READ_SIZE", 4096)  # many pieces, so the interrupt can land between them

    def make(compression: str) -> Callable[[], object]:
        def call() -> object:
            stream = archive.create_archive(ws, ["deps"], compression)
            try:
                return b"".join(stream)
            finally:
                stream.close()

        return call

    before = set(children())  # another test's leftovers are not this one's
    for compression in ("zstd", "gzip"):
        fds = open_fds()
        first = run_interrupted(0, make(compression))
        assert first.kind == "complete" and len(first.value) > 20_000  # type: ignore[arg-type]
        assert first.points > 50
        for n in range(1, first.points + 1):
            rearm()
            outcome = run_interrupted(n, make(compression))
            check_clean(outcome, fds, n)
            assert set(children()) <= before, f"tar left running or unreaped after an interrupt at {WHERE}"
            assert not list(scratch.iterdir()), f"temporary files left after an interrupt at {WHERE}"


def test_a_save_interrupted_while_tar_still_runs_kills_it_promptly(tmp_path: Path) -> None:
    """Stopping early must not wait for tar to finish archiving a large tree."""
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    for i in range(8):
        (ws / "deps" / f"big{i}").write_bytes(os.urandom(4 << 20))
    before = set(children())
    stream = archive.create_archive(ws, ["deps"], "gzip")
    next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < PROMPT_SECONDS
    assert set(children()) <= before
