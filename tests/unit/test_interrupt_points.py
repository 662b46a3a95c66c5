"""Ctrl-C at every bytecode of the threaded hand-overs: the restore stops, and nothing hangs or leaks.

SIGINT/SIGTERM become KeyboardInterrupt in the main thread between two bytecodes, wherever it is. A
real interrupted `runcache restore` once hung because that happened inside threading.Condition.__enter__
just after it took its lock: the lock stayed taken, a writer thread blocked on it, and the restore's
cleanup waited for that writer forever. Random signals find such a window once in hundreds of runs;
these tests raise KeyboardInterrupt at *every* bytecode the main thread runs in the hand-over code
(extract.py's `_Writers`, pipeline.py's `background`), the way the interpreter delivers a signal
(a trace function raising at an `opcode` event), except where the code holds signals itself.

After each interruption: the call raised KeyboardInterrupt (or finished, when the point was after the
last hand-over), no writer or stage thread is left, no descriptor leaked, the destination is untouched
or complete, and no staging directory remains.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from interrupts import WHERE, hang_guarded, interrupt_at, open_fds, rearm, threads_left
from runcache.client import extract, pipeline
from runcache.client.extract import extract_tar_stream


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    with hang_guarded():
        yield


def small_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(10):
            data = bytes([i]) * (100 + 1000 * (i % 3))
            info = tarfile.TarInfo(f"dest/d{i % 4}/f{i}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def in_writers(frame: FrameType) -> bool:
    code = frame.f_code
    return code.co_filename == extract.__file__ and (
        code.co_qualname.startswith("_Writers.") or code.co_name == "_close_all"
    )


def test_an_interrupt_at_any_point_of_the_writer_hand_over_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches and a tight in-flight bound, so a small archive takes every path: batching, waiting
    # for the writers to catch up, starting threads, settling, and closing with work still queued.
    monkeypatch.setattr(extract, "_BATCH_FILES", 2)
    monkeypatch.setattr(extract, "_INFLIGHT_FILES", 3)
    data = small_archive()
    ws = tmp_path / "ws"
    dest = ws / "dest"
    ws.mkdir()
    (dest / "d0").mkdir(parents=True)
    (dest / "d0" / "f0").write_bytes(b"before")
    before = tree(dest)

    def run(n: int) -> tuple[str, int]:
        count = interrupt_at(n, in_writers)
        try:
            extract_tar_stream(io.BytesIO(data), workspace=ws, allowed_roots=[dest], writers=3)
            outcome = "complete"
        except KeyboardInterrupt:
            outcome = "interrupted"
        finally:
            seen = count()
        return outcome, seen

    fds = open_fds()
    outcome, points = run(0)
    assert outcome == "complete"
    complete = tree(dest)
    assert complete != before and points > 100  # the hand-over really ran, many times

    interrupted = 0
    for n in range(1, points + 1):
        for p in dest.rglob("*"):
            if p.is_file():
                p.unlink()
        (dest / "d0" / "f0").write_bytes(b"before")
        rearm()
        outcome, _ = run(n)
        interrupted += outcome == "interrupted"
        assert not threads_left("extract-writer"), f"writer threads left after an interrupt at opcode {n}"
        leaked = open_fds() - fds
        if WHERE and ":_Writers.add:" in WHERE[0] and len(leaked) == 1:
            # Interrupted on the way into add(), before it took the descriptor: the one file being handed
            # over is left open (one descriptor in a process that is stopping; nothing waits on it).
            os.close(leaked.pop())
        assert not leaked, f"descriptors leaked by an interrupt at {WHERE}"
        assert tree(dest) == (before if outcome == "interrupted" else complete), n
        assert not [d for d in ws.iterdir() if d.name.startswith(".runcache-restore-")], n
    assert interrupted == points  # every point is before the last settle: each one stops the restore


def test_an_interrupt_at_any_point_of_a_background_stage_ends_its_thread() -> None:
    closed: list[int] = []
    started: list[int] = []

    def source() -> Iterator[bytes]:
        started.append(1)
        for i in range(40):
            yield bytes([i]) * 10

    def consume(n: int) -> tuple[str, int]:
        count = interrupt_at(n, lambda f: f.f_code.co_filename == pipeline.__file__)
        got = 0
        try:
            for _ in pipeline.background(source(), depth=3, name="stage-under-test", on_exit=lambda: closed.append(n)):
                got += 1
            return "complete", count()
        except KeyboardInterrupt:
            return "interrupted", count()

    outcome, points = consume(0)
    assert outcome == "complete" and points > 100
    assert not threads_left("stage-under-test")
    for n in range(1, points + 1):
        started.clear()
        rearm()
        outcome, _ = consume(n)
        assert outcome == "interrupted", n
        assert not threads_left("stage-under-test"), f"the producer thread did not end after an interrupt at {WHERE}"
        if started:  # an interrupt before the thread started leaves nothing to close
            assert closed[-1] == n, f"on_exit did not run after an interrupt at opcode {n}"
