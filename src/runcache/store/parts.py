"""What the object-store blob backends (S3, Azure) share: a base class for the calls they answer alike
(puts from staged files, batched existence checks), a blob going up as fixed-size parts sent a few at a
time, from staged files or any byte stream, hashed on the way, and how a store's "I am full" answer
becomes StorageFull."""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from runcache.core.errors import StorageFull

_FILE_READ = 4 * 1024 * 1024
# Up to this many names are checked with parallel existence checks; more, with one listing.
HEAD_BATCH = 32

T = TypeVar("T")

# What a backend recognizes as its store being out of space: a few words naming the answer, else None.
OutOfSpace = Callable[[BaseException], str | None]


@contextlib.contextmanager
def full_store(out_of_space: OutOfSpace) -> Iterator[None]:
    """Writes to the store inside this block: an answer `out_of_space` recognizes becomes StorageFull, which
    every protocol reports as it does a full local disk (507, twirp resource_exhausted) rather than as an
    internal error; anything else passes through unchanged."""
    try:
        yield
    except StorageFull:
        raise
    except Exception as exc:
        answer = out_of_space(exc)
        if answer is None:
            raise
        raise StorageFull(f"cache storage full: the object store is out of space ({answer}); not saving cache") from exc


def file_chunks(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(_FILE_READ):
                yield chunk


def fixed_parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    """The chunks laid end to end, cut into parts of exactly `part_size` bytes (the last may be shorter):
    small pieces merge into one part and large ones split, whatever sizes the source delivered."""
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = view[: part_size - len(buf)]
            buf += take
            view = view[len(take) :]
            if len(buf) == part_size:
                yield bytes(buf)
                buf.clear()
    if buf:
        yield bytes(buf)


class ObjectBlobStore:
    """What the object-store blob backends share: `put_file` and `put_parts` as a stream of the files'
    bytes (`put_stream`; then the files are the store's to remove, the blob holds the bytes), every put
    reporting a full store as StorageFull, and `contains_many` from `contains` and a listing of the
    store's blobs."""

    @staticmethod
    def out_of_space(exc: BaseException) -> str | None:
        """The backend's rule for "the store is full" (full_store)."""
        raise NotImplementedError

    def _put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        raise NotImplementedError

    def put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        with full_store(self.out_of_space):
            return self._put_stream(name, chunks, size=size, sha256=sha256)

    def contains(self, name: str) -> bool:
        raise NotImplementedError

    def _listing(self) -> Iterator[tuple[str, Any]]:
        """Every blob's name (with what the listing says of it)."""
        raise NotImplementedError

    def put_file(self, name: str, path: Path, *, size: int, sha256: str) -> None:
        self.put_parts(name, [path], size=size, sha256=sha256)

    def put_parts(self, name: str, paths: list[Path], *, size: int, sha256: str) -> None:
        total = sum(p.stat().st_size for p in paths)
        if total != size:
            raise ValueError(f"blob {name}: files add up to {total}, expected {size}")
        self.put_stream(name, file_chunks(paths), size=size, sha256=sha256)
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def contains_many(self, names: Iterable[str]) -> set[str]:
        """A lookup's few candidates: parallel existence checks, one round trip of latency whatever the
        store holds. Many names: one listing, whose cost grows with the store (1,000 names a page) but not
        with the number of names asked about."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return set()
        if len(wanted) > HEAD_BATCH:
            present = {n for n, _ in self._listing()}
            return {n for n in wanted if n in present}
        if len(wanted) == 1:
            return {n for n in wanted if self.contains(n)}
        with ThreadPoolExecutor(max_workers=min(len(wanted), 16)) as pool:
            found = pool.map(self.contains, wanted)
            return {n for n, ok in zip(wanted, found, strict=True) if ok}


@dataclass(frozen=True)
class Sent(Generic[T]):
    results: list[T]  # what `send` returned for each part, in order
    size: int
    sha256: str


def send_parts(chunks: Iterable[bytes], part_size: int, send: Callable[[int, bytes], T], concurrency: int) -> Sent[T]:
    """Each part (numbered from 0) to `send`, `concurrency` at a time: one connection each is what object
    store throughput scales with, and reading waits for the oldest, so memory holds at most
    concurrency + 1 parts. On any failure no part is still being sent when this raises."""
    whole = hashlib.sha256()
    results: list[T] = []
    size = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: deque[Future[T]] = deque()
        try:
            for n, part in enumerate(fixed_parts(chunks, part_size)):
                whole.update(part)
                size += len(part)
                pending.append(pool.submit(send, n, part))
                if len(pending) >= concurrency:
                    results.append(pending.popleft().result())
            while pending:
                results.append(pending.popleft().result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # nothing may land after the caller cleans up
            raise
    return Sent(results, size, whole.hexdigest())
