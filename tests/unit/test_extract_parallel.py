"""The extractor with writer threads behaves exactly as the single-threaded one, and stays all-or-nothing.

Writer threads only write bodies of files the calling thread created (extract.py's module doc); these
tests hold that to account: random archives (duplicates, hardlinks, symlinks, large and small bodies,
refused members) give the same tree or the same refusal with and without writers, an interruption at any
point leaves the destination untouched, and a writer's I/O error surfaces with nothing changed and no
descriptor, thread or staging directory left behind.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from runcache.client import extract
from runcache.client.extract import ExtractReport, extract_tar_stream

MTIME = 1_700_000_000


def snapshot(root: Path, dir_mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything observable under root: types, modes, mtimes, contents, link targets. Without `dir_mtimes`
    a directory's mtime is left out: staging lives (and is removed) inside the nearest existing directory."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns if dir_mtimes else None)
            else:
                digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest, st.st_nlink)
    return out


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("extract-writer")]


def random_archive(rng: random.Random) -> bytes:
    """A tar of `dest/...` members built to hit the interesting orders: duplicates of every kind, hardlinks to
    earlier files, relative symlinks (and members written through them), bodies on both sides of the
    hand-over size, and now and then a member that is refused."""
    names = [f"dest/d{rng.randrange(4)}/f{i}" for i in range(12)] + [f"dest/f{i}" for i in range(4)]
    dirs = ["dest/d0", "dest/d1", "dest/d2", "dest/d3", "dest/d1/sub"]
    files: list[str] = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(rng.randrange(5, 60)):
            ti = tarfile.TarInfo(rng.choice(names + dirs))
            ti.mtime = MTIME + rng.randrange(1000)
            ti.mode = rng.choice([0o644, 0o755, 0o600, 0o4755])
            kind = rng.random()
            if kind < 0.6:
                size = rng.choice([0, 1, 700, 5000, 200_000, extract._HANDOFF_MAX + rng.randrange(3) - 1])
                ti.size = size
                tar.addfile(ti, io.BytesIO(rng.randbytes(size)))
                files.append(ti.name)
            elif kind < 0.75:
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif kind < 0.87 and files:
                ti.type, ti.linkname = tarfile.LNKTYPE, rng.choice(files)
                tar.addfile(ti)
            else:
                ti.type = tarfile.SYMTYPE
                ti.linkname = rng.choice(["f0", "../f1", "d1", "../d2", "sub", "/usr/bin/env"])
                tar.addfile(ti)
    return buf.getvalue()


def run(tmp: Path, data: bytes, writers: int, **kw: object) -> tuple[str, dict[str, tuple[object, ...]]]:
    """Extract into a fresh copy of the same destination; the outcome in words and the tree afterwards."""
    ws = tmp / f"ws{writers}"
    dest = ws / "dest"
    (dest / "d1").mkdir(parents=True)
    (dest / "d1" / "old.txt").write_bytes(b"old")
    (dest / "keep.txt").write_bytes(b"keep")
    try:
        report = extract_tar_stream(io.BytesIO(data), workspace=ws, allowed_roots=[dest], writers=writers, **kw)
        outcome = f"ok {report}"
    except (extract.UnsafeArchiveError, extract.CorruptArchiveError) as exc:
        outcome = f"{type(exc).__name__}: {exc}".replace(str(ws), "<ws>")
    # Archive mtimes are at most MTIME + 1000 s; anything newer is the clock's (what existed before, a merged
    # directory changed by the commit's renames, a parent no directory member described): pinned, so two
    # runs compare.
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            if os.lstat(p).st_mtime_ns > (MTIME + 1000) * 10**9:
                os.utime(p, ns=(0, 0), follow_symlinks=False)
    return outcome, snapshot(ws)


@pytest.mark.parametrize("seed", range(60))
def test_writers_change_nothing_but_speed(tmp_path: Path, seed: int) -> None:
    data = random_archive(random.Random(seed))
    fds = open_fds()
    serial = run(tmp_path, data, writers=0)
    parallel = run(tmp_path, data, writers=3)
    assert parallel[0] == serial[0]
    assert parallel[1] == serial[1]
    assert open_fds() == fds
    assert not writer_threads()


class Interrupting(io.RawIOBase):
    """A stream that raises KeyboardInterrupt (as Ctrl-C does in the main thread) after `after` bytes."""

    def __init__(self, data: bytes, after: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._after = after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._after:
            raise KeyboardInterrupt
        n = min(n if n >= 0 else len(self._data), self._after - self._pos, 64 * 1024)
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(out)
        return out


def big_tree_archive(rng: random.Random) -> tuple[bytes, int]:
    """Many small files in a few directories plus some large ones; returns (tar, member count)."""
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(8):
            ti = tarfile.TarInfo(f"dest/pkg{d}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(ti)
            for f in range(60):
                size = rng.choice([10, 300, 4000, 40_000]) if f % 20 else 3 * 2**20
                ti = tarfile.TarInfo(f"dest/pkg{d}/m{f}.py")
                ti.size, ti.mode, ti.mtime = size, 0o644, MTIME
                tar.addfile(ti, io.BytesIO(rng.randbytes(size)))
                count += 1
    return buf.getvalue(), count


@pytest.mark.parametrize("seed", range(25))
def test_an_interrupted_threaded_extraction_leaves_the_destination_untouched(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data, _ = big_tree_archive(rng)
    ws = tmp_path / "ws"
    dest = ws / "dest"
    (dest / "pkg3").mkdir(parents=True)
    (dest / "pkg3" / "m1.py").write_bytes(b"mine")
    before = snapshot(ws, dir_mtimes=False)
    fds = open_fds()
    # Anywhere in the stream, or in the caller's last check just before the commit.
    after = rng.randrange(len(data) + len(data) // 10)
    stream = Interrupting(data, after) if after < len(data) else io.BytesIO(data)

    def interrupt_before_commit() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_tar_stream(
            stream,  # type: ignore[arg-type]
            workspace=ws,
            allowed_roots=[dest],
            before_commit=interrupt_before_commit,
            writers=3,
        )
    assert snapshot(ws, dir_mtimes=False) == before
    assert open_fds() == fds
    assert not writer_threads()


def test_a_complete_threaded_extraction_matches_the_archive(tmp_path: Path) -> None:
    data, count = big_tree_archive(random.Random(7))
    ws = tmp_path / "ws"
    (ws / "dest").mkdir(parents=True)
    report = extract_tar_stream(io.BytesIO(data), workspace=ws, allowed_roots=[ws / "dest"], writers=3)
    assert isinstance(report, ExtractReport) and report.files == count
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            p = ws / m.name
            if m.isfile():
                src = tar.extractfile(m)
                assert src is not None
                assert p.read_bytes() == src.read(), m.name
                assert p.stat().st_mtime == MTIME and stat.S_IMODE(p.stat().st_mode) == 0o644


def test_a_writer_error_is_raised_with_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = big_tree_archive(random.Random(3))
    ws = tmp_path / "ws"
    dest = ws / "dest"
    dest.mkdir(parents=True)
    before = snapshot(ws, dir_mtimes=False)
    fds = open_fds()
    real = extract._write_all
    calls = 0
    lock = threading.Lock()

    def full_disk(fd: int, buf: bytes | memoryview) -> None:
        nonlocal calls
        if threading.current_thread().name.startswith("extract-writer"):
            with lock:
                calls += 1
                if calls == 50:
                    raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, buf)

    monkeypatch.setattr(extract, "_write_all", full_disk)
    with pytest.raises(OSError) as info:
        extract_tar_stream(io.BytesIO(data), workspace=ws, allowed_roots=[dest], writers=3)
    assert info.value.errno == errno.ENOSPC
    assert snapshot(ws, dir_mtimes=False) == before
    assert open_fds() == fds
    assert not writer_threads()
