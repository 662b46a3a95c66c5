"""Upload write-behind in the disk staging: which ranges are handed to the kernel's writeback, and when."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from runcache.store import staging as staging_mod
from runcache.store.staging import Staging

MiB = 1024 * 1024
CAP = 1 << 40


class Recorder:
    """Stands in for sync_file_range: records (inode, offset, length, flags) from the writeback thread."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int, int, int]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.fail = fail

    def __call__(self, fd: int, offset: int, length: int, flags: int) -> int:
        with self._lock:
            self.calls.append((os.fstat(fd).st_ino, offset, length, flags))
            self._changed.notify_all()
        if self.fail:
            import ctypes

            ctypes.set_errno(errno.EIO)
            return -1
        return 0

    def wait_for(self, n: int) -> list[tuple[int, int, int, int]]:
        with self._lock:
            self._changed.wait_for(lambda: len(self.calls) >= n, timeout=30)
            return list(self.calls)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(staging_mod, "_sync_file_range", rec)
    return rec


def _quiesce(tmp_path: Path) -> None:
    """Waits until the writeback thread has taken every handover before this one (it takes them in order)."""
    done = threading.Event()
    original = staging_mod.start_writeback

    def marker(fd: int, offset: int, length: int) -> None:
        if length == 0:
            done.set()
        else:
            original(fd, offset, length)

    staging_mod.start_writeback = marker
    fd = os.open(tmp_path / "marker", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        staging_mod._writeback.submit(fd, 0, 0)
        assert done.wait(30)
    finally:
        os.close(fd)
        staging_mod.start_writeback = original


def _stage(tmp_path: Path, window: int) -> Staging:
    st = Staging(tmp_path / "uploads", write_behind=window)
    st.create(1)
    return st


def test_range_writer_hands_over_each_window_then_the_tail(tmp_path: Path, recorder: Recorder) -> None:
    st = _stage(tmp_path, 4 * MiB)
    w = st.whole_writer(1, cap=CAP)
    for _ in range(10):
        w.write(b"x" * MiB)
    calls = recorder.wait_for(2)
    inode = (st.folder(1) / "data").stat().st_ino
    assert [(c[1], c[2]) for c in calls] == [(0, 4 * MiB), (4 * MiB, 4 * MiB)]
    w.finish()
    calls = recorder.wait_for(3)
    assert [(c[1], c[2]) for c in calls] == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 2 * MiB)]
    assert {c[0] for c in calls} == {inode}  # the data file itself, through the writer's duplicate
    assert {c[3] for c in calls} == {staging_mod._SYNC_FILE_RANGE_WRITE}  # start writeback, never wait
    assert st._dirty.held == 0


def test_chunk_at_an_offset_hands_over_its_own_range(tmp_path: Path, recorder: Recorder) -> None:
    st = _stage(tmp_path, 2 * MiB)
    w = st.range_writer(1, 32 * MiB, 35 * MiB, cap=CAP, max_chunks=10)
    for _ in range(3):
        w.write(b"y" * MiB)
    w.finish()
    calls = recorder.wait_for(2)
    assert [(c[1], c[2]) for c in calls] == [(32 * MiB, 2 * MiB), (34 * MiB, MiB)]


def test_write_behind_off_hands_over_nothing(tmp_path: Path, recorder: Recorder) -> None:
    st = _stage(tmp_path, 0)
    w = st.whole_writer(1, cap=CAP)
    for _ in range(10):
        w.write(b"x" * MiB)
    w.finish()
    b = st.block_writer(1, "YmxvY2s=", cap=CAP, max_blocks=10)
    for _ in range(10):
        b.write(b"z" * MiB)
    b.finish()
    _quiesce(tmp_path)
    assert recorder.calls == []
    assert st._dirty.held == 0


def test_block_writer_hands_over_windows_of_the_block_file(tmp_path: Path, recorder: Recorder) -> None:
    st = _stage(tmp_path, 4 * MiB)
    b = st.block_writer(1, "YmxvY2s=", cap=CAP, max_blocks=10)
    for _ in range(9):
        b.write(b"z" * MiB)
    b.finish()
    calls = recorder.wait_for(3)
    assert [(c[1], c[2]) for c in calls] == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, MiB)]
    (block,) = (st.folder(1) / "blocks").iterdir()
    assert {c[0] for c in calls} == {block.stat().st_ino}


def test_aborted_writer_hands_over_no_tail_and_frees_its_budget(tmp_path: Path, recorder: Recorder) -> None:
    st = _stage(tmp_path, 4 * MiB)
    w = st.whole_writer(1, cap=CAP)
    for _ in range(6):
        w.write(b"x" * MiB)
    assert st._dirty.held == 2 * MiB
    w.abort()
    _quiesce(tmp_path)
    assert [(c[1], c[2]) for c in recorder.calls] == [(0, 4 * MiB)]
    assert st._dirty.held == 0


def test_many_uploads_below_a_window_are_bounded_together(tmp_path: Path, recorder: Recorder) -> None:
    window = 4 * MiB
    st = Staging(tmp_path / "uploads", write_behind=window)
    limit = staging_mod._SERVER_WINDOWS * window
    writers = []
    for upload_id in range(1, 13):
        st.create(upload_id)
        writers.append(st.whole_writer(upload_id, cap=CAP))
    # 12 uploads of 3.5 MiB: none reaches its window, together they hold 42 MiB, over the 32 MiB budget.
    for step in range(4):
        for w in writers:
            w.write(b"x" * (MiB if step < 3 else MiB // 2))
            # A writer over the budget hands over what it holds at once: the total never runs far past it.
            assert st._dirty.held <= limit + MiB
    _quiesce(tmp_path)
    early = len(recorder.calls)
    assert early > 0
    assert all(length >= staging_mod._MIN_HANDOVER and length < window for _, _, length, _ in recorder.calls)
    for w in writers:
        w.finish()
    _quiesce(tmp_path)
    assert st._dirty.held == 0
    handed: dict[int, int] = {}
    for inode, _, length, _ in recorder.calls:
        handed[inode] = handed.get(inode, 0) + length
    assert sorted(handed.values()) == [3 * MiB + MiB // 2] * 12  # every byte of every upload, once


def test_a_failing_writeback_changes_nothing_for_the_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(fail=True)
    monkeypatch.setattr(staging_mod, "_sync_file_range", rec)
    st = _stage(tmp_path, MiB)
    w = st.whole_writer(1, cap=CAP)
    for _ in range(3):
        w.write(b"x" * MiB)
    w.finish()
    rec.wait_for(3)  # the thread survived the first failure
    staged = st.finalize(1, 3 * MiB)
    assert staged.size == 3 * MiB and staged.sha256 is not None


def test_without_sync_file_range_fadvise_starts_the_writeback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging_mod, "_sync_file_range", None)
    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    st = _stage(tmp_path, 2 * MiB)
    w = st.whole_writer(1, cap=CAP)
    for _ in range(4):
        w.write(b"x" * MiB)
    w.finish()
    _quiesce(tmp_path)
    assert calls == [(0, 2 * MiB, os.POSIX_FADV_DONTNEED), (2 * MiB, 2 * MiB, os.POSIX_FADV_DONTNEED)]
    assert (st.folder(1) / "data").read_bytes() == b"x" * 4 * MiB


def test_window_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(staging_mod.WRITE_BEHIND_ENV, raising=False)
    assert staging_mod.write_behind_window() == 32 * MiB
    monkeypatch.setenv(staging_mod.WRITE_BEHIND_ENV, "0")
    assert staging_mod.write_behind_window() == 0
    monkeypatch.setenv(staging_mod.WRITE_BEHIND_ENV, "8")
    assert staging_mod.write_behind_window() == 8 * MiB
    monkeypatch.setenv(staging_mod.WRITE_BEHIND_ENV, "lots")
    with pytest.raises(ValueError, match=staging_mod.WRITE_BEHIND_ENV):
        staging_mod.write_behind_window()
