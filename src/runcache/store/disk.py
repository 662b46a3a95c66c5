"""Local-disk blob store under `<root>/<shard>/`: a blob is one file `<name>`, or, when it arrived as
Azure blocks, a folder `<name>.parts/` of its blocks in order. Both become visible by one atomic rename."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import anyio

from runcache.store.blobs import BlobMissing, BlobStats

_READ = 1024 * 1024
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


def _read_cached(fd: int, n: int, pos: int) -> bytes | None:
    """Up to n bytes at pos if the page cache has them (never blocks on the disk); None if it has none."""
    if not _NOWAIT:
        return None
    buf = bytearray(n)
    try:
        got = os.preadv(fd, [buf], pos, _NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:  # EOPNOTSUPP: a filesystem without RWF_NOWAIT; the thread read tells the rest
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    if got == 0:
        return None  # nothing cached here, or the end of the file: the blocking read tells which
    return bytes(memoryview(buf)[:got]) if got < n else bytes(buf)


_PARTS = ".parts"
# A half-built blob older than this is a crash's leftover, not a commit in progress.
_STALE_BUILD_SECONDS = 3600


def _drop_if_stale(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if time.time() - path.lstat().st_mtime < _STALE_BUILD_SECONDS:
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def fsync_dir(path: Path) -> None:
    """Make a rename or new name in `path` durable (the file's own fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or name.endswith(_PARTS):
            raise ValueError(f"invalid blob name {name!r}")
        return self.root / name[-2:].rjust(2, "0") / name

    def _parts_dir(self, name: str) -> Path:
        p = self._path(name)
        return p.with_name(p.name + _PARTS)

    def put_file(self, name: str, path: Path, *, size: int, sha256: str) -> None:
        if path.stat().st_size != size:
            raise ValueError(f"blob {name}: file has {path.stat().st_size} bytes, expected {size}")
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o400)  # committed bytes are never written again, by this process or anyone
        # A link is atomic on one file system (a reader sees the whole blob or none) and, unlike a
        # rename, refuses to replace a blob that already has this name.
        os.link(path, target)
        os.unlink(path)
        fsync_dir(target.parent)

    def put_parts(self, name: str, paths: list[Path], *, size: int, sha256: str) -> None:
        """Keep staged blocks as they are, in order: no second copy of the archive on commit."""
        if sum(p.stat().st_size for p in paths) != size:
            raise ValueError(f"blob {name}: parts do not add up to {size} bytes")
        target = self._parts_dir(name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A unique name per call: two commits of one upload must never build in the same folder.
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            for index, p in enumerate(paths):
                os.chmod(p, 0o400)
                os.replace(p, tmp / f"{index:06d}")
            fsync_dir(tmp)
            os.rename(tmp, target)  # not replace: an existing blob of that name is never swapped out
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(target.parent)

    def put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        """Write the bytes to a private temporary file beside the blob, hash them, flush, then link it."""
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    if written > size:
                        break
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            actual = digest.hexdigest()
            if written != size or (sha256 is not None and actual != sha256):
                raise ValueError(f"blob {name}: {written} bytes streamed, expected {size} with SHA-256 {sha256}")
            self.put_file(name, tmp, size=size, sha256=actual)
            return actual
        finally:
            tmp.unlink(missing_ok=True)

    def local_path(self, name: str) -> Path | None:
        p = self._path(name)
        return p if p.is_file() else None

    def parts(self, name: str) -> list[Path] | None:
        """The blob's files in order: one for a single-file blob; None when there is no such blob."""
        single = self.local_path(name)
        if single is not None:
            return [single]
        folder = self._parts_dir(name)
        if not folder.is_dir():
            return None
        return sorted(folder.iterdir())

    def download_url(self, name: str, ttl: int) -> str | None:
        return None  # a local folder has no URL of its own: the server streams it

    def contains(self, name: str) -> bool:
        return self._path(name).is_file() or self._parts_dir(name).is_dir()

    def contains_many(self, names: Iterable[str]) -> set[str]:
        return {n for n in names if self.contains(n)}

    def size(self, name: str) -> int | None:
        parts = self.parts(name)
        return None if parts is None else sum(p.stat().st_size for p in parts)

    def open_range(self, name: str, start: int, end: int) -> DiskRange:
        return DiskRange(self, name, start, end)

    def names_with_age(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for name in self.names():
            p = self._path(name)
            target = p if p.is_file() else self._parts_dir(name)
            with contextlib.suppress(FileNotFoundError):
                yield name, now - target.stat().st_mtime

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()
        shutil.rmtree(self._parts_dir(name), ignore_errors=True)

    def names(self) -> list[str]:
        out = []
        for shard in self.root.iterdir():
            if not shard.is_dir():
                continue
            for p in shard.iterdir():
                if p.name.startswith("."):
                    # A blob being built (put_parts, put_stream) is never visible; one left by a crash is
                    # dropped once it is surely not a commit in flight.
                    _drop_if_stale(p)
                elif p.is_file():
                    out.append(p.name)
                elif p.name.endswith(_PARTS):
                    out.append(p.name[: -len(_PARTS)])
        return out

    def stats(self) -> BlobStats:
        count = total = 0
        for name in self.names():
            parts = self.parts(name) or []
            count += 1
            total += sum(p.stat().st_size for p in parts)
        return BlobStats(count, total)


class DiskRange:
    """Bytes [start, end) of a disk blob (its parts laid end to end): iterated, the bytes as they are read;
    through `spans`, the open files that hold them, for a server that sends files without copying them."""

    def __init__(self, store: DiskBlobStore, name: str, start: int, end: int) -> None:
        self._store, self._name, self._start, self._end = store, name, start, end
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> DiskRange:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._read()
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def spans(self) -> AsyncGenerator[tuple[BinaryIO, int, int], None]:
        parts = await anyio.to_thread.run_sync(self._store.parts, self._name)
        if parts is None:
            raise BlobMissing(self._name)
        start, end = self._start, self._end
        offset = 0
        for path in parts:
            fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
            with io.FileIO(fd, "r") as file:
                size = os.fstat(fd).st_size
                lo, hi = max(start, offset), min(end, offset + size)
                if hi > lo:
                    yield file, lo - offset, hi - lo
            offset += size
            if offset >= end:
                return
        if offset < end:
            raise BlobMissing(f"{self._name}: its files hold {offset} bytes, fewer than recorded")

    async def _read(self) -> AsyncGenerator[bytes, None]:
        """What the page cache already holds (a recent upload, a popular entry) is read right on the event
        loop with RWF_NOWAIT, which never waits for the disk; only what must come from the disk is read on a
        worker thread. A thread hop per chunk cost more CPU than the read itself, and with several
        downloads at once that CPU is what the downloads share."""
        spans = self.spans()
        try:
            async for file, pos, remaining in spans:
                fd = file.fileno()
                while remaining:
                    want = min(_READ, remaining)
                    chunk = _read_cached(fd, want, pos)
                    if chunk is None:
                        chunk = await anyio.to_thread.run_sync(os.pread, fd, want, pos)
                    if not chunk:
                        raise BlobMissing(f"{self._name}: a file is shorter than recorded")
                    pos += len(chunk)
                    remaining -= len(chunk)
                    yield chunk
        finally:
            await spans.aclose()
