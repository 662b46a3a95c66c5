"""Uploads in flight kept as objects in the blob store's own bucket or container, so every replica sees
every upload: the layout and the rules, shared by the S3 (store/s3uploads.py) and the Azure
(store/azureuploads.py) backends, which supply only how to list, put, read and delete objects.

An upload `<id>` is a few objects under `<prefix>/uploads/<id>/`:

- `created`: empty, written at reservation (its existence is the upload's);
- `r/<start>.<token>`: one received byte range (a v1 PATCH, or a v2 Put Blob at 0); its length is the
  object's size, so a listing is the record of what arrived. A range becomes an object only once its
  request body was complete and as long as announced (both stores show an object only when its
  multipart upload or block list is complete);
- `b/<block>`: an Azure Put Block body relayed by the server; `blocklist`: the names Put Block List ordered;
- `sha256`: `<size> <digest> <object>` of a whole body hashed as it arrived, which spares commit the hashing;
- `alive`: rewritten while a body arrives, so another replica's idle check sees the activity.

A store out of space (the backend's `out_of_space` rule) is StorageFull on every write here; an upload
whose body hit it is dropped at once (`dropped_for_space`), as on a full local disk: its staged objects
are what holds the space, and its key is free again for a later save.

A request body goes up as it arrives, in parts of the backend's part size (a replica holds at most one
part of each request in memory and nothing on disk). Commit (on any replica) lists the upload, proves the
ranges cover exactly `size` bytes, then streams the covering objects in order into the new blob, each read
pinned to the ETag listed (a body replaced during the commit fails it rather than mixing two versions).
The committed blob is a new object: a request still sending to the upload cannot change it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from runcache.core.blocks import block_list_names, block_name
from runcache.core.errors import IncompleteUpload, InvalidRequest, NotFound, StorageFull
from runcache.core.limits import check_block_count, check_chunk_count, check_upload_end
from runcache.core.ranges import check_complete
from runcache.store.parts import full_store
from runcache.store.uploads import Progress, SpaceGuard, StagedUpload, no_guard

# A body still arriving leaves no trace in the store until it completes; its writer rewrites the
# upload's `alive` object at most this often, so another replica's idle check sees it.
HEARTBEAT_SECONDS = 1.0
CHANGED_WHILE_COMMITTING = "staged bytes changed or vanished while committing; commit again"


@dataclass(frozen=True)
class StoredObject:
    """One object of an upload, as a listing reports it."""

    key: str  # the full name in the bucket or container
    size: int
    etag: str
    modified: datetime


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of one object, read at commit pinned to the ETag listed."""

    key: str
    etag: str
    start: int
    end: int


class BodySink(Protocol):
    """Where one request body goes in the store: parts as they fill, then the rest when it is whole."""

    def send(self, part: bytes) -> None: ...

    def complete(self, tail: bytes) -> None: ...

    def abort(self) -> None: ...


class _BodyWriter:
    """One request body into one object of the upload."""

    offload = True  # every call may wait on the object store

    def __init__(self, store: ObjectUploadStore, upload_id: int, rest: str, *, cap: int, base: int) -> None:
        self._store = store
        self._upload_id = upload_id
        self.key = store.key(upload_id, rest)
        self._sink = store._sink(self.key)
        self._cap = cap
        self._base = base  # bytes before this body that count against the cap (offset, or other blocks)
        self._buf = bytearray()
        self.size = 0
        self._beat = 0.0
        store._register(upload_id)

    def write(self, data: bytes) -> None:
        check_upload_end(self._base + self.size + len(data), None, self._cap)
        self._buf += data
        self.size += len(data)
        with self._store._writing(self._upload_id):
            if time.monotonic() - self._beat >= HEARTBEAT_SECONDS:
                self._beat = time.monotonic()
                self._store._put_small(self._upload_id, "alive", "")
            part = self._store.part_size
            while len(self._buf) >= part:
                self._sink.send(bytes(self._buf[:part]))
                del self._buf[:part]

    def _complete(self) -> None:
        if not self._store.exists(self._upload_id):
            # Expired, abandoned or committed while this body arrived: it belongs to no upload any more.
            raise NotFound(f"no upload in progress with id {self._upload_id}")
        with self._store._writing(self._upload_id):
            self._sink.complete(bytes(self._buf))
        self._buf.clear()

    def abort(self) -> None:
        try:
            self._buf.clear()
            self._sink.abort()
        finally:
            self._release()

    def _release(self) -> None:
        if self._upload_id >= 0:
            self._store._release(self._upload_id)
            self._upload_id = -1


class _RangeWriter(_BodyWriter):
    def __init__(
        self, store: ObjectUploadStore, upload_id: int, start: int, end: int | None, *, cap: int, digest: bool
    ) -> None:
        super().__init__(store, upload_id, f"r/{start:020d}.{uuid.uuid4().hex}", cap=cap, base=start)
        self._start = start
        self._expected_end = end
        self._digest = hashlib.sha256() if digest else None

    def write(self, data: bytes) -> None:
        if self._expected_end is not None and self._start + self.size + len(data) > self._expected_end:
            raise InvalidRequest("request body is longer than its Content-Range")
        if self._digest is not None:
            self._digest.update(data)
        super().write(data)

    def finish(self) -> tuple[int, int]:
        upload_id = self._upload_id
        try:
            end = self._start + self.size
            if self._expected_end is not None and end != self._expected_end:
                raise InvalidRequest(
                    f"request body has {self.size} bytes but Content-Range announced {self._expected_end - self._start}"
                )
            if self.size:  # an empty range adds nothing; no object for it
                self._complete()
            if self._digest is not None:
                # Which object the digest belongs to: a later PATCH adding ranges must not inherit it.
                with self._store._writing(upload_id):
                    self._store._put_small(upload_id, "sha256", f"{self.size} {self._digest.hexdigest()} {self.key}\n")
            return self._start, end
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()


class _BlockWriter(_BodyWriter):
    def __init__(self, store: ObjectUploadStore, upload_id: int, name: str, *, cap: int, others: int) -> None:
        super().__init__(store, upload_id, f"b/{name}", cap=cap, base=others)

    def finish(self) -> None:
        try:
            self._complete()
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()


class ObjectUploadStore(ABC):
    """The `UploadStore` of a shared object store; subclasses supply the object primitives below."""

    shared = True
    part_size: int

    def __init__(self, prefix: str) -> None:
        prefix = prefix.strip("/")
        self.root = f"{prefix}/uploads/" if prefix else "uploads/"
        # This process's writers per upload: an upload with a request still sending here is not idle.
        self._lock = threading.Lock()
        self._writers: dict[int, int] = {}
        # Uploads a body of which found the store full here: dropped by the request that saw it.
        self._full: set[int] = set()

    # --- what a backend supplies ------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def out_of_space(exc: BaseException) -> str | None:
        """The store's answer meaning "no space for these bytes" (parts.full_store), else None."""

    @abstractmethod
    def _list(self, prefix: str, *, in_flight: bool = False) -> Iterable[StoredObject]:
        """Every object whose name starts with `prefix`; `in_flight` adds bodies not yet complete where
        the store lists them (so that discard can remove them)."""

    @abstractmethod
    def _put_small(self, upload_id: int, name: str, text: str) -> None: ...

    @abstractmethod
    def _get_small(self, upload_id: int, name: str) -> str | None: ...

    @abstractmethod
    def _delete(self, keys: list[str]) -> None:
        """Delete these objects; one that is not there is no error."""

    @abstractmethod
    def exists(self, upload_id: int) -> bool: ...

    @abstractmethod
    def _sink(self, key: str) -> BodySink: ...

    @abstractmethod
    def _read_range(self, piece: Piece) -> Iterator[bytes]:
        """The piece's bytes, failing with InvalidRequest(CHANGED_WHILE_COMMITTING) when its object is
        gone or no longer has the ETag listed."""

    def _in_flight(self, upload_id: int) -> tuple[int, datetime | None]:
        """Bytes of bodies still arriving that the store already holds, and when the last landed."""
        return 0, None

    def _abort_in_flight(self, upload_id: int) -> None:  # noqa: B027 - a default, not an obligation
        """Drop what bodies still arriving left in the store outside the listing."""

    # --- layout -----------------------------------------------------------------------------------
    def key(self, upload_id: int, rest: str) -> str:
        return f"{self.root}{int(upload_id)}/{rest}"

    def _objects(self, upload_id: int, sub: str = "", *, in_flight: bool = False) -> dict[str, StoredObject]:
        """Name (below the upload's folder) -> object, for every object under `sub`."""
        base = len(self.key(upload_id, ""))
        return {o.key[base:]: o for o in self._list(self.key(upload_id, sub), in_flight=in_flight)}

    def _register(self, upload_id: int) -> None:
        with self._lock:
            self._writers[upload_id] = self._writers.get(upload_id, 0) + 1

    def _release(self, upload_id: int) -> None:
        with self._lock:
            left = self._writers.get(upload_id, 0) - 1
            if left > 0:
                self._writers[upload_id] = left
            else:
                self._writers.pop(upload_id, None)

    def _require(self, upload_id: int) -> None:
        if not self.exists(upload_id):
            raise NotFound(f"no upload in progress with id {upload_id}")

    @contextlib.contextmanager
    def _writing(self, upload_id: int) -> Iterator[None]:
        """A body's writes into the store: a full store is StorageFull, and marks the upload to be dropped."""
        try:
            with full_store(self.out_of_space):
                yield
        except StorageFull:
            with self._lock:
                self._full.add(upload_id)
            raise

    # --- the interface ----------------------------------------------------------------------------
    def create(self, upload_id: int) -> None:
        with full_store(self.out_of_space):  # a reservation refused for space: the service removes its row
            self._put_small(upload_id, "created", "")

    def range_writer(
        self,
        upload_id: int,
        start: int,
        end: int | None,
        *,
        cap: int,
        max_chunks: int,
        guard: SpaceGuard = no_guard,
    ) -> _RangeWriter:
        check_chunk_count(len(self._objects(upload_id, "r/")) + 1, max_chunks)
        # Ranges and a block list are two ways to say what the upload is: bytes at offsets win from now on.
        self._delete([self.key(upload_id, "blocklist")])
        return _RangeWriter(self, upload_id, start, end, cap=cap, digest=False)

    def whole_writer(self, upload_id: int, *, cap: int, guard: SpaceGuard = no_guard) -> _RangeWriter:
        """Put Blob replaces whatever was uploaded before."""
        self._delete([self.key(upload_id, n) for n in self._objects(upload_id) if n != "created"])
        return _RangeWriter(self, upload_id, 0, None, cap=cap, digest=True)

    def block_writer(
        self, upload_id: int, block_id: str, *, cap: int, max_blocks: int, guard: SpaceGuard = no_guard
    ) -> _BlockWriter:
        name = block_name(block_id)
        blocks = {n[2:]: o.size for n, o in self._objects(upload_id, "b/").items()}
        if name not in blocks:
            check_block_count(len(blocks) + 1, max_blocks)
        # A block after a block list reopens the upload: it must be listed again before commit.
        self._delete([self.key(upload_id, "blocklist"), self.key(upload_id, "sha256")])
        others = sum(size for n, size in blocks.items() if n != name)
        return _BlockWriter(self, upload_id, name, cap=cap, others=others)

    def commit_blocks(self, upload_id: int, block_ids: list[str], *, max_blocks: int) -> int:
        self._require(upload_id)
        objects = self._objects(upload_id)
        blocks = {n[2:]: o.size for n, o in objects.items() if n.startswith("b/")}
        names = block_list_names(block_ids, set(blocks), max_blocks=max_blocks)
        with full_store(self.out_of_space):
            self._put_small(upload_id, "blocklist", "".join(f"{n}\n" for n in names))
        listed = set(names)
        # Unlisted blocks and earlier ranges are no part of the upload any more.
        stale = [
            self.key(upload_id, n)
            for n in objects
            if (n.startswith("b/") and n[2:] not in listed) or n.startswith("r/") or n == "sha256"
        ]
        self._delete(stale)
        return sum(blocks[n] for n in names)

    def seal(self, upload_id: int) -> None:
        # Nothing to wait for: commit reads finished objects into a new blob, so a request still sending
        # (here or on another replica) cannot change what is committed; it only misses the commit.
        self._require(upload_id)

    def unseal(self, upload_id: int) -> None:
        return None

    def _pieces(self, upload_id: int, size: int) -> tuple[list[Piece], str | None]:
        objects = self._objects(upload_id)
        listing = self._get_small(upload_id, "blocklist") if "blocklist" in objects else None
        if listing is not None:
            pieces = []
            for name in listing.split():
                obj = objects.get(f"b/{name}")
                if obj is None:
                    raise InvalidRequest(f"block {name} of the block list is gone; upload it again")
                pieces.append(Piece(obj.key, obj.etag, 0, obj.size))
            total = sum(p.end for p in pieces)
            if total != size:
                raise InvalidRequest(f"staged upload has {total} bytes, expected {size}")
            return pieces, None
        ranges = sorted(
            ((int(name[2:].split(".", 1)[0]), obj) for name, obj in objects.items() if name.startswith("r/")),
            key=lambda r: r[0],
        )
        check_complete([(start, start + obj.size) for start, obj in ranges], size)
        # The fewest objects that cover [0, size): at each offset, the range reaching furthest.
        pieces, offset, i = [], 0, 0
        while offset < size:
            best: tuple[int, StoredObject] | None = None
            while i < len(ranges) and ranges[i][0] <= offset:
                if best is None or ranges[i][0] + ranges[i][1].size > best[0] + best[1].size:
                    best = ranges[i]
                i += 1
            if best is None or best[0] + best[1].size <= offset:
                raise IncompleteUpload(f"upload is missing bytes at offset {offset}")  # check_complete said whole
            start, obj = best
            end = min(size, start + obj.size)
            pieces.append(Piece(obj.key, obj.etag, offset - start, end - start))
            offset = end
        sha = self._get_small(upload_id, "sha256") if "sha256" in objects else None
        known = None
        if sha is not None:
            recorded_size, digest, key = [*sha.split(), "", "", ""][:3]
            whole = len(pieces) == 1 and pieces[0].key == key and pieces[0].start == 0
            known = digest if whole and recorded_size == str(size) else None
        return pieces, known

    def finalize(self, upload_id: int, size: int) -> StagedUpload:
        self._require(upload_id)
        pieces, known = self._pieces(upload_id, size)
        return StagedUpload(size, known, None, lambda: self._read(pieces))

    def _read(self, pieces: list[Piece]) -> Iterator[bytes]:
        for piece in pieces:
            if piece.end <= piece.start:
                continue
            remaining = piece.end - piece.start
            for chunk in self._read_range(piece):
                remaining -= len(chunk)
                yield chunk
            if remaining:
                raise InvalidRequest("a staged body is shorter than listed; commit again")

    def discard(self, upload_id: int) -> None:
        self._abort_in_flight(upload_id)
        # `created` last: while anything else remains, the upload is still listed for the janitor.
        keys = [self.key(upload_id, n) for n in self._objects(upload_id, in_flight=True)]
        marker = self.key(upload_id, "created")
        self._delete([k for k in keys if k != marker])
        self._delete([marker])
        with self._lock:
            self._full.discard(upload_id)

    def upload_ids(self) -> list[int]:
        # From the objects themselves, not a delimited listing: stores built on a file system (SeaweedFS)
        # keep listing an emptied "folder" as a common prefix.
        ids: set[int] = set()
        for obj in self._list(self.root):
            head = obj.key[len(self.root) :].split("/", 1)[0]
            if head.isdigit():
                ids.add(int(head))
        return sorted(ids)

    def after_restart(self) -> None:
        return None  # other replicas' uploads live on; nothing here belonged to this process alone

    def progress(self, upload_id: int) -> Progress | None:
        objects = self._objects(upload_id)
        if "created" not in objects:
            return None
        received = sum(o.size for n, o in objects.items() if n.startswith(("r/", "b/")))
        newest = max(o.modified for o in objects.values())
        # Bodies still arriving: what of them the store holds counts, and its landing is activity.
        arriving, landed = self._in_flight(upload_id)
        received += arriving
        if landed is not None:
            newest = max(newest, landed)
        with self._lock:
            if self._writers.get(upload_id):
                newest = datetime.now(UTC)
        return Progress(received, newest.astimezone(UTC).replace(tzinfo=None))

    def dropped_for_space(self, upload_id: int) -> bool:
        with self._lock:
            return upload_id in self._full

    def disk_usage(self) -> None:
        return None
