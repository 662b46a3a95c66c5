"""Uploads in flight kept in the S3 bucket beside the blobs, so every replica sees every upload.

With `--blobs s3://bucket/prefix` an upload `<id>` is a few objects under `<prefix>/uploads/<id>/`:

- `created`: empty, written at reservation (its existence is the upload's);
- `r/<start>.<token>`: one received byte range (a v1 PATCH, or a v2 Put Blob at 0); its length is the
  object's size, so a listing is the record of what arrived. A range becomes an object only once its
  request body was complete and as long as announced: S3 shows an object only when its upload finishes;
- `b/<block>`: an Azure Put Block body; `blocklist`: the names Put Block List ordered;
- `sha256`: `<size> <digest>` of a whole body hashed as it arrived, which spares commit the hashing.

A request body goes up as it arrives: in one PUT when it fits a part, else as a multipart upload of
`part_size` parts, so a replica holds at most one part of each request in memory and nothing on disk.
Commit (on any replica) lists the upload, proves the ranges cover exactly `size` bytes, then streams the
covering objects in order into the new blob, each read pinned to the ETag listed (a body replaced during
the commit fails it rather than mixing two versions). The committed blob is a new object: a request
still sending to the upload cannot change it, whichever replica it reaches.

No replica holds state another needs: a replica killed mid-request loses that request's body only (its
unfinished multipart upload is aborted when the upload is discarded; a bucket lifecycle rule for
incomplete multipart uploads catches the rest, see docs/deployment.md).
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

from botocore.exceptions import ClientError

from runcache.core.blocks import block_list_names, block_name
from runcache.core.errors import IncompleteUpload, InvalidRequest, NotFound
from runcache.core.limits import check_block_count, check_chunk_count, check_upload_end
from runcache.core.ranges import check_complete
from runcache.store.s3 import DEFAULT_PART, MIN_PART, _b64, _missing
from runcache.store.uploads import Progress, SpaceGuard, StagedUpload, no_guard

_READ = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
# A body still arriving below one part leaves no trace in the bucket until it completes; its writer
# rewrites the upload's `alive` object at most this often, so another replica's idle check sees it.
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class _Piece:
    key: str
    etag: str
    start: int  # within the object
    end: int


class _ObjectWriter:
    """One request body into one object: a single PUT, or a multipart upload once it outgrows a part."""

    offload = True  # every call may wait on the object store

    def __init__(self, store: S3UploadStore, upload_id: int, key: str, *, cap: int, base: int) -> None:
        self._store = store
        self._upload_id = upload_id
        self._key = key
        self._cap = cap
        self._base = base  # bytes before this body that count against the cap (offset, or other blocks)
        self._buf = bytearray()
        self._mpu: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0
        self._beat = 0.0
        store._register(upload_id)

    def write(self, data: bytes) -> None:
        check_upload_end(self._base + self.size + len(data), None, self._cap)
        self._buf += data
        self.size += len(data)
        if time.monotonic() - self._beat >= HEARTBEAT_SECONDS:
            self._beat = time.monotonic()
            self._store._put_small(self._upload_id, "alive", "")
        part = self._store.part_size
        while len(self._buf) >= part:
            self._send_part(bytes(self._buf[:part]))
            del self._buf[:part]

    def _send_part(self, chunk: bytes) -> None:
        s3 = self._store
        if self._mpu is None:
            self._mpu = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=self._key, **s3._checksum_create())[
                "UploadId"
            ]
        number = len(self._parts) + 1
        args: dict[str, Any] = {"Bucket": s3.bucket, "Key": self._key, "UploadId": self._mpu, "PartNumber": number}
        part: dict[str, Any] = {"PartNumber": number}
        if s3.checksums:
            args["ChecksumSHA256"] = part["ChecksumSHA256"] = _b64(hashlib.sha256(chunk).digest())
        part["ETag"] = s3.client.upload_part(**args, Body=chunk)["ETag"]
        self._parts.append(part)

    def _complete(self, metadata: dict[str, str] | None = None) -> None:
        s3 = self._store
        if not s3.exists(self._upload_id):
            # Expired, abandoned or committed while this body arrived: it belongs to no upload any more.
            raise NotFound(f"no upload in progress with id {self._upload_id}")
        if self._mpu is None:
            args: dict[str, Any] = {"Bucket": s3.bucket, "Key": self._key, "Body": bytes(self._buf)}
            if metadata:
                args["Metadata"] = metadata
            s3.client.put_object(**args)
        else:
            if self._buf:
                self._send_part(bytes(self._buf))
            s3.client.complete_multipart_upload(
                Bucket=s3.bucket, Key=self._key, UploadId=self._mpu, MultipartUpload={"Parts": self._parts}
            )
            self._mpu = None
        self._buf.clear()

    def abort(self) -> None:
        try:
            if self._mpu is not None:
                with contextlib.suppress(Exception):
                    self._store.client.abort_multipart_upload(
                        Bucket=self._store.bucket, Key=self._key, UploadId=self._mpu
                    )
                self._mpu = None
        finally:
            self._release()

    def _release(self) -> None:
        if self._upload_id >= 0:
            self._store._release(self._upload_id)
            self._upload_id = -1


class _RangeWriter(_ObjectWriter):
    def __init__(
        self, store: S3UploadStore, upload_id: int, start: int, end: int | None, *, cap: int, digest: bool
    ) -> None:
        key = store._key(upload_id, f"r/{start:020d}.{uuid.uuid4().hex}")
        super().__init__(store, upload_id, key, cap=cap, base=start)
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
                record = f"{self.size} {self._digest.hexdigest()} {self._key}\n"
                self._store._put_small(self._upload_id, "sha256", record)
            return self._start, end
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()


class _BlockWriter(_ObjectWriter):
    def __init__(self, store: S3UploadStore, upload_id: int, name: str, *, cap: int, others: int) -> None:
        super().__init__(store, upload_id, store._key(upload_id, f"b/{name}"), cap=cap, base=others)

    def finish(self) -> None:
        try:
            self._complete()
        except BaseException:
            self.abort()
            raise
        finally:
            self._release()


class S3UploadStore:
    shared = True

    def __init__(
        self, bucket: str, prefix: str, *, client: Any, part_size: int = DEFAULT_PART, checksums: bool = True
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"S3 parts must be at least {MIN_PART} bytes, got {part_size}")
        self.bucket = bucket
        self.root = f"{prefix.strip('/')}/uploads/" if prefix.strip("/") else "uploads/"
        self.client = client
        self.part_size = part_size
        self.checksums = checksums
        # This process's writers per upload: an upload with a request still sending here is not idle.
        self._lock = threading.Lock()
        self._writers: dict[int, int] = {}

    def _key(self, upload_id: int, rest: str) -> str:
        return f"{self.root}{int(upload_id)}/{rest}"

    def _checksum_create(self) -> dict[str, Any]:
        return {"ChecksumAlgorithm": "SHA256"} if self.checksums else {}

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

    # --- objects of one upload -------------------------------------------------------------------
    def _put_small(self, upload_id: int, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(upload_id, name), Body=text.encode())

    def _get_small(self, upload_id: int, name: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(upload_id, name))["Body"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        with contextlib.closing(body):
            return body.read(64 * 1024 * 1024).decode()

    def _objects(self, upload_id: int, sub: str = "") -> dict[str, dict[str, Any]]:
        """Name (below the upload's folder) -> listing entry, for every object under `sub`."""
        prefix = self._key(upload_id, sub)
        base = len(self._key(upload_id, ""))
        out: dict[str, dict[str, Any]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"][base:]] = obj
        return out

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _multipart_uploads(self, upload_id: int) -> list[dict[str, Any]]:
        prefix = self._key(upload_id, "")
        found: list[dict[str, Any]] = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            found.extend(page.get("Uploads", []))
        return found

    # --- the interface -----------------------------------------------------------------------------
    def create(self, upload_id: int) -> None:
        self._put_small(upload_id, "created", "")

    def exists(self, upload_id: int) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(upload_id, "created"))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
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
        check_chunk_count(len(self._objects(upload_id, "r/")) + 1, max_chunks)
        # Ranges and a block list are two ways to say what the upload is: bytes at offsets win from now on.
        self.client.delete_object(Bucket=self.bucket, Key=self._key(upload_id, "blocklist"))
        return _RangeWriter(self, upload_id, start, end, cap=cap, digest=False)

    def whole_writer(self, upload_id: int, *, cap: int, guard: SpaceGuard = no_guard) -> _RangeWriter:
        """Put Blob replaces whatever was uploaded before."""
        stale = [self._key(upload_id, n) for n in self._objects(upload_id) if n != "created"]
        self._delete(stale)
        return _RangeWriter(self, upload_id, 0, None, cap=cap, digest=True)

    def block_writer(
        self, upload_id: int, block_id: str, *, cap: int, max_blocks: int, guard: SpaceGuard = no_guard
    ) -> _BlockWriter:
        name = block_name(block_id)
        blocks = {n[2:]: int(o["Size"]) for n, o in self._objects(upload_id, "b/").items()}
        if name not in blocks:
            check_block_count(len(blocks) + 1, max_blocks)
        # A block after a block list reopens the upload: it must be listed again before commit.
        self._delete([self._key(upload_id, "blocklist"), self._key(upload_id, "sha256")])
        others = sum(size for n, size in blocks.items() if n != name)
        return _BlockWriter(self, upload_id, name, cap=cap, others=others)

    def commit_blocks(self, upload_id: int, block_ids: list[str], *, max_blocks: int) -> int:
        self._require(upload_id)
        objects = self._objects(upload_id)
        blocks = {n[2:]: int(o["Size"]) for n, o in objects.items() if n.startswith("b/")}
        names = block_list_names(block_ids, set(blocks), max_blocks=max_blocks)
        self._put_small(upload_id, "blocklist", "".join(f"{n}\n" for n in names))
        listed = set(names)
        # Unlisted blocks and earlier ranges are no part of the upload any more.
        stale = [
            self._key(upload_id, n)
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

    def _pieces(self, upload_id: int, size: int) -> tuple[list[_Piece], str | None]:
        objects = self._objects(upload_id)
        listing = self._get_small(upload_id, "blocklist") if "blocklist" in objects else None
        if listing is not None:
            pieces = []
            for name in listing.split():
                obj = objects.get(f"b/{name}")
                if obj is None:
                    raise InvalidRequest(f"block {name} of the block list is gone; upload it again")
                pieces.append(_Piece(obj["Key"], obj["ETag"], 0, int(obj["Size"])))
            total = sum(p.end for p in pieces)
            if total != size:
                raise InvalidRequest(f"staged upload has {total} bytes, expected {size}")
            return pieces, None
        ranges = sorted(
            ((int(name[2:].split(".", 1)[0]), obj) for name, obj in objects.items() if name.startswith("r/")),
            key=lambda r: r[0],
        )
        check_complete([(start, start + int(obj["Size"])) for start, obj in ranges], size)
        # The fewest objects that cover [0, size): at each offset, the range reaching furthest.
        pieces, offset, i = [], 0, 0
        while offset < size:
            best: tuple[int, dict[str, Any]] | None = None
            while i < len(ranges) and ranges[i][0] <= offset:
                if best is None or ranges[i][0] + int(ranges[i][1]["Size"]) > best[0] + int(best[1]["Size"]):
                    best = ranges[i]
                i += 1
            if best is None or best[0] + int(best[1]["Size"]) <= offset:
                raise IncompleteUpload(f"upload is missing bytes at offset {offset}")  # check_complete said whole
            start, obj = best
            end = min(size, start + int(obj["Size"]))
            pieces.append(_Piece(obj["Key"], obj["ETag"], offset - start, end - start))
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

    def _read(self, pieces: list[_Piece]) -> Iterator[bytes]:
        for piece in pieces:
            if piece.end <= piece.start:
                continue
            try:
                body = self.client.get_object(
                    Bucket=self.bucket, Key=piece.key, Range=f"bytes={piece.start}-{piece.end - 1}", IfMatch=piece.etag
                )["Body"]
            except ClientError as exc:
                raise InvalidRequest("staged bytes changed or vanished while committing; commit again") from exc
            with contextlib.closing(body):
                remaining = piece.end - piece.start
                while remaining:
                    chunk = body.read(min(_READ, remaining))
                    if not chunk:
                        raise InvalidRequest("a staged part is shorter than listed; commit again")
                    remaining -= len(chunk)
                    yield chunk

    def discard(self, upload_id: int) -> None:
        for mpu in self._multipart_uploads(upload_id):
            with contextlib.suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
        # `created` last: while anything else remains, the upload is still listed for the janitor.
        keys = [self._key(upload_id, n) for n in self._objects(upload_id)]
        marker = self._key(upload_id, "created")
        self._delete([k for k in keys if k != marker])
        self._delete([marker])

    def upload_ids(self) -> list[int]:
        # From the objects themselves, not a delimited listing: stores built on a file system (SeaweedFS)
        # keep listing an emptied "folder" as a common prefix.
        ids: set[int] = set()
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.root) :].split("/", 1)[0]
                if name.isdigit():
                    ids.add(int(name))
        return sorted(ids)

    def after_restart(self) -> None:
        return None  # other replicas' uploads live on; nothing here belonged to this process alone

    def progress(self, upload_id: int) -> Progress | None:
        objects = self._objects(upload_id)
        if "created" not in objects:
            return None
        received = sum(int(o["Size"]) for n, o in objects.items() if n.startswith(("r/", "b/")))
        newest = max(o["LastModified"] for o in objects.values())
        # Bodies still arriving: their finished parts count, and a part landing is activity.
        for mpu in self._multipart_uploads(upload_id):
            newest = max(newest, mpu["Initiated"])
            parts = self.client.list_parts(Bucket=self.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
            for part in parts.get("Parts", []):
                received += int(part["Size"])
                newest = max(newest, part["LastModified"])
        with self._lock:
            if self._writers.get(upload_id):
                newest = datetime.now(UTC)
        return Progress(received, newest.astimezone(UTC).replace(tzinfo=None))

    def dropped_for_space(self, upload_id: int) -> bool:
        return False

    def disk_usage(self) -> None:
        return None
