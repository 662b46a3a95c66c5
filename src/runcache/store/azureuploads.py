"""Uploads in flight kept in the Azure container beside the blobs, so every replica sees every upload.

With `--blobs azure://container/prefix` an upload `<id>` is a few blobs under `<prefix>/uploads/<id>/`:

- `created`: empty, written at reservation (its existence is the upload's);
- `r/<start>.<token>`: one received byte range (a v1 PATCH, or a v2 Put Blob at 0); its length is the
  blob's size, so a listing is the record of what arrived;
- `b/<block>`: an Azure Put Block body relayed by the server; `blocklist`: the names Put Block List ordered;
- `sha256`: `<size> <digest> <blob>` of a whole body hashed as it arrived, which spares commit the hashing;
- `alive`: rewritten while a body arrives, so another replica's idle check sees the activity.

A request body is staged as uncommitted blocks on its own blob as it arrives (a replica holds one block of
it in memory, nothing on disk) and becomes visible only when its last block is in and the block list is
committed: a body cut short leaves nothing that counts, whichever replica it reached. Commit (on any
replica) lists the upload, proves the ranges cover exactly `size` bytes, then streams the covering blobs in
order into the new blob, each read pinned to the ETag listed (a body replaced meanwhile fails the commit
rather than mixing two versions).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from runcache.core.blocks import block_list_names, block_name
from runcache.core.errors import IncompleteUpload, InvalidRequest, NotFound
from runcache.core.limits import check_block_count, check_chunk_count, check_upload_end
from runcache.core.ranges import check_complete
from runcache.store.azure import DEFAULT_BLOCK, MAX_BLOCK_SIZE, AzureBlobStore, block_id
from runcache.store.uploads import Progress, SpaceGuard, StagedUpload, no_guard

_READ = 4 * 1024 * 1024
# A body still arriving is invisible until its block list is committed; its writer rewrites the upload's
# `alive` blob at most this often, so another replica's idle check sees it.
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class _Piece:
    name: str
    etag: str
    start: int  # within the blob
    end: int


class _BodyWriter:
    """One request body into one blob: staged blocks of `block_size`, committed when the body is whole."""

    offload = True  # every call may wait on the storage service

    def __init__(self, store: AzureUploadStore, upload_id: int, rest: str, *, cap: int, base: int) -> None:
        self._store = store
        self._upload_id = upload_id
        self._blob = store.container.get_blob_client(store._name(upload_id, rest))
        self._cap = cap
        self._base = base  # bytes before this body that count against the cap (offset, or other blocks)
        self._buf = bytearray()
        self._blocks: list[str] = []
        self.size = 0
        self._beat = 0.0
        store._register(upload_id)

    @property
    def name(self) -> str:
        return str(self._blob.blob_name)

    def write(self, data: bytes) -> None:
        check_upload_end(self._base + self.size + len(data), None, self._cap)
        self._buf += data
        self.size += len(data)
        if time.monotonic() - self._beat >= HEARTBEAT_SECONDS:
            self._beat = time.monotonic()
            self._store._put_small(self._upload_id, "alive", "")
        block = self._store.block_size
        while len(self._buf) >= block:
            self._stage(bytes(self._buf[:block]))
            del self._buf[:block]

    def _stage(self, chunk: bytes) -> None:
        self._blocks.append(block_id(len(self._blocks)))
        self._blob.stage_block(self._blocks[-1], chunk, validate_content=True)

    def _complete(self) -> None:
        if not self._store.exists(self._upload_id):
            # Expired, abandoned or committed while this body arrived: it belongs to no upload any more.
            raise NotFound(f"no upload in progress with id {self._upload_id}")
        if not self._blocks:
            self._blob.upload_blob(bytes(self._buf), overwrite=True, validate_content=True)
        else:
            if self._buf:
                self._stage(bytes(self._buf))
            self._blob.commit_block_list(self._blocks)
        self._buf.clear()

    def abort(self) -> None:
        # Staged blocks of an uncommitted body are invisible and never count; discard removes them, and
        # the storage drops uncommitted blocks after a week in any case.
        self._buf.clear()
        self._release()

    def _release(self) -> None:
        if self._upload_id >= 0:
            self._store._release(self._upload_id)
            self._upload_id = -1


class _RangeWriter(_BodyWriter):
    def __init__(
        self, store: AzureUploadStore, upload_id: int, start: int, end: int | None, *, cap: int, digest: bool
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
            if self.size:  # an empty range adds nothing; no blob for it
                self._complete()
            if self._digest is not None:
                # Which blob the digest belongs to: a later PATCH adding ranges must not inherit it.
                self._store._put_small(upload_id, "sha256", f"{self.size} {self._digest.hexdigest()} {self.name}\n")
            return self._start, end
        finally:
            self._release()


class _BlockWriter(_BodyWriter):
    def __init__(self, store: AzureUploadStore, upload_id: int, name: str, *, cap: int, others: int) -> None:
        super().__init__(store, upload_id, f"b/{name}", cap=cap, base=others)

    def finish(self) -> None:
        try:
            self._complete()
        finally:
            self._release()


class AzureUploadStore:
    shared = True

    def __init__(self, blobs: AzureBlobStore, *, block_size: int = DEFAULT_BLOCK) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"Azure blocks are 1 to {MAX_BLOCK_SIZE} bytes, got {block_size}")
        self.container = blobs.container
        self.root = f"{blobs.prefix}/uploads/" if blobs.prefix else "uploads/"
        self.block_size = block_size
        # This process's writers per upload: an upload with a request still sending here is not idle.
        self._lock = threading.Lock()
        self._writers: dict[int, int] = {}

    def _name(self, upload_id: int, rest: str) -> str:
        return f"{self.root}{int(upload_id)}/{rest}"

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

    # --- blobs of one upload -----------------------------------------------------------------------
    def _put_small(self, upload_id: int, name: str, text: str) -> None:
        self.container.upload_blob(self._name(upload_id, name), text.encode(), overwrite=True)

    def _get_small(self, upload_id: int, name: str) -> str | None:
        try:
            return self.container.download_blob(self._name(upload_id, name)).readall().decode()
        except ResourceNotFoundError:
            return None

    def _blobs(self, upload_id: int, sub: str = "", *, in_flight: bool = False) -> dict[str, Any]:
        """Name (below the upload's folder) -> listing entry, for every blob under `sub`; `in_flight` adds
        bodies that have staged blocks but no committed list yet."""
        prefix = self._name(upload_id, sub)
        base = len(self._name(upload_id, ""))
        include = ["uncommittedblobs"] if in_flight else None
        return {b.name[base:]: b for b in self.container.list_blobs(name_starts_with=prefix, include=include)}

    def _delete(self, names: list[str]) -> None:
        for name in names:
            blob = self.container.get_blob_client(name)
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                # A blob with only uncommitted blocks cannot be deleted as such: commit it empty, then delete.
                with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
                    blob.commit_block_list([])
                    blob.delete_blob()

    # --- the interface -----------------------------------------------------------------------------
    def create(self, upload_id: int) -> None:
        self._put_small(upload_id, "created", "")

    def exists(self, upload_id: int) -> bool:
        try:
            self.container.get_blob_client(self._name(upload_id, "created")).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return True

    def _require(self, upload_id: int) -> None:
        if not self.exists(upload_id):
            raise NotFound(f"no upload in progress with id {upload_id}")

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
        check_chunk_count(len(self._blobs(upload_id, "r/")) + 1, max_chunks)
        # Ranges and a block list are two ways to say what the upload is: bytes at offsets win from now on.
        self._delete([self._name(upload_id, "blocklist")])
        return _RangeWriter(self, upload_id, start, end, cap=cap, digest=False)

    def whole_writer(self, upload_id: int, *, cap: int, guard: SpaceGuard = no_guard) -> _RangeWriter:
        """Put Blob replaces whatever was uploaded before."""
        self._delete([self._name(upload_id, n) for n in self._blobs(upload_id) if n != "created"])
        return _RangeWriter(self, upload_id, 0, None, cap=cap, digest=True)

    def block_writer(
        self, upload_id: int, block_id: str, *, cap: int, max_blocks: int, guard: SpaceGuard = no_guard
    ) -> _BlockWriter:
        name = block_name(block_id)
        blocks = {n[2:]: int(b.size) for n, b in self._blobs(upload_id, "b/").items()}
        if name not in blocks:
            check_block_count(len(blocks) + 1, max_blocks)
        # A block after a block list reopens the upload: it must be listed again before commit.
        self._delete([self._name(upload_id, "blocklist"), self._name(upload_id, "sha256")])
        others = sum(size for n, size in blocks.items() if n != name)
        return _BlockWriter(self, upload_id, name, cap=cap, others=others)

    def commit_blocks(self, upload_id: int, block_ids: list[str], *, max_blocks: int) -> int:
        self._require(upload_id)
        found = self._blobs(upload_id)
        blocks = {n[2:]: int(b.size) for n, b in found.items() if n.startswith("b/")}
        names = block_list_names(block_ids, set(blocks), max_blocks=max_blocks)
        self._put_small(upload_id, "blocklist", "".join(f"{n}\n" for n in names))
        listed = set(names)
        # Unlisted blocks and earlier ranges are no part of the upload any more.
        stale = [
            self._name(upload_id, n)
            for n in found
            if (n.startswith("b/") and n[2:] not in listed) or n.startswith("r/") or n == "sha256"
        ]
        self._delete(stale)
        return sum(blocks[n] for n in names)

    def seal(self, upload_id: int) -> None:
        # Nothing to wait for: commit reads committed bodies into a new blob, so a request still sending
        # (here or on another replica) cannot change what is committed; it only misses the commit.
        self._require(upload_id)

    def unseal(self, upload_id: int) -> None:
        return None

    def _pieces(self, upload_id: int, size: int) -> tuple[list[_Piece], str | None]:
        found = self._blobs(upload_id)
        listing = self._get_small(upload_id, "blocklist") if "blocklist" in found else None
        if listing is not None:
            pieces = []
            for name in listing.split():
                blob = found.get(f"b/{name}")
                if blob is None:
                    raise InvalidRequest(f"block {name} of the block list is gone; upload it again")
                pieces.append(_Piece(blob.name, blob.etag, 0, int(blob.size)))
            total = sum(p.end for p in pieces)
            if total != size:
                raise InvalidRequest(f"staged upload has {total} bytes, expected {size}")
            return pieces, None
        ranges = sorted(
            ((int(n[2:].split(".", 1)[0]), b) for n, b in found.items() if n.startswith("r/")), key=lambda r: r[0]
        )
        check_complete([(start, start + int(b.size)) for start, b in ranges], size)
        # The fewest blobs that cover [0, size): at each offset, the range reaching furthest.
        pieces, offset, i = [], 0, 0
        while offset < size:
            best: tuple[int, Any] | None = None
            while i < len(ranges) and ranges[i][0] <= offset:
                if best is None or ranges[i][0] + int(ranges[i][1].size) > best[0] + int(best[1].size):
                    best = ranges[i]
                i += 1
            if best is None or best[0] + int(best[1].size) <= offset:
                raise IncompleteUpload(f"upload is missing bytes at offset {offset}")  # check_complete said whole
            start, blob = best
            end = min(size, start + int(blob.size))
            pieces.append(_Piece(blob.name, blob.etag, offset - start, end - start))
            offset = end
        sha = self._get_small(upload_id, "sha256") if "sha256" in found else None
        known = None
        if sha is not None:
            recorded_size, digest, name = [*sha.split(), "", "", ""][:3]
            whole = len(pieces) == 1 and pieces[0].name == name and pieces[0].start == 0
            known = digest if whole and recorded_size == str(size) else None
        return pieces, known

    def finalize(self, upload_id: int, size: int) -> StagedUpload:
        self._require(upload_id)
        pieces, known = self._pieces(upload_id, size)
        return StagedUpload(size, known, None, lambda: self._read(pieces))

    def _read(self, pieces: list[_Piece]) -> Iterator[bytes]:
        for piece in pieces:
            if piece.end <= piece.start:
                continue
            try:
                stream = self.container.download_blob(
                    piece.name,
                    offset=piece.start,
                    length=piece.end - piece.start,
                    etag=piece.etag,
                    match_condition=MatchConditions.IfNotModified,
                    max_concurrency=1,
                )
                remaining = piece.end - piece.start
                for chunk in stream.chunks():
                    remaining -= len(chunk)
                    yield chunk
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise InvalidRequest("staged bytes changed or vanished while committing; commit again") from exc
            if remaining:
                raise InvalidRequest("a staged body is shorter than listed; commit again")

    def discard(self, upload_id: int) -> None:
        # `created` last: while anything else remains, the upload is still listed for the janitor.
        names = [self._name(upload_id, n) for n in self._blobs(upload_id, in_flight=True)]
        marker = self._name(upload_id, "created")
        self._delete([n for n in names if n != marker])
        self._delete([marker])

    def upload_ids(self) -> list[int]:
        ids: set[int] = set()
        for name in self.container.list_blob_names(name_starts_with=self.root):
            head = name[len(self.root) :].split("/", 1)[0]
            if head.isdigit():
                ids.add(int(head))
        return sorted(ids)

    def after_restart(self) -> None:
        return None  # other replicas' uploads live on; nothing here belonged to this process alone

    def progress(self, upload_id: int) -> Progress | None:
        found = self._blobs(upload_id)
        if "created" not in found:
            return None
        received = sum(int(b.size) for n, b in found.items() if n.startswith(("r/", "b/")))
        newest = max(b.last_modified for b in found.values())
        with self._lock:
            if self._writers.get(upload_id):
                newest = datetime.now(UTC)
        return Progress(received, newest.astimezone(UTC).replace(tzinfo=None))

    def dropped_for_space(self, upload_id: int) -> bool:
        return False

    def disk_usage(self) -> None:
        return None
