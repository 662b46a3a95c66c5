"""The upload-store interface: archives in flight, before a commit makes them an entry.

Backends: `Staging` (store/staging.py, a folder of this node's disk: a job's calls must reach the
replica that reserved its upload), and objects beside the blobs, shared by every replica so any chunk,
block or commit may reach any of them: one layout (store/objectuploads.py) on S3 (store/s3uploads.py)
and on Azure (store/azureuploads.py). The service sees only
this interface; protocol modules see only the service.

What every backend keeps: ranges at offsets in any order (v1 PATCH), Azure blocks and a block list,
a whole body (v2 Put Blob), and at commit the proof that exactly `size` bytes without holes arrived.
Bytes of a committed entry never change: a commit reads staged bytes into a new blob, and nothing a
writer does afterwards reaches that blob.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

SpaceGuard = Callable[[int], None]


def no_guard(_: int) -> None:
    return None


class UploadWriter(Protocol):
    # True when write/finish/abort block on the network: the server then calls them from a worker thread.
    offload: bool

    def write(self, data: bytes) -> None: ...
    def finish(self) -> object: ...
    def abort(self) -> None: ...


@dataclass(frozen=True)
class StagedUpload:
    """A complete upload, ready to become blob bytes."""

    size: int
    sha256: str | None  # known already (hashed as it arrived); None: hash while storing the blob
    paths: list[Path] | None  # local files laid end to end (the disk backend hands these over)
    chunks: Callable[[], Iterator[bytes]]  # the bytes in order, read from the store


@dataclass(frozen=True)
class Progress:
    received: int  # bytes stored so far (ranges, blocks)
    last_activity: datetime  # naive UTC: when bytes last arrived


class UploadStore(Protocol):
    # True when every replica sees the same uploads (no stickiness, nothing dies with a replica).
    shared: bool

    def create(self, upload_id: int) -> None: ...
    def exists(self, upload_id: int) -> bool: ...

    def range_writer(
        self,
        upload_id: int,
        start: int,
        end: int | None,
        *,
        cap: int,
        max_chunks: int,
        guard: SpaceGuard = no_guard,
    ) -> UploadWriter:
        """Bytes from `start` (to `end`, when the request says): they count once `finish` checked the length.
        Refused when the upload already has `max_chunks` ranges."""

    def whole_writer(self, upload_id: int, *, cap: int, guard: SpaceGuard = no_guard) -> UploadWriter:
        """Put Blob: replaces whatever the upload held."""

    def block_writer(
        self, upload_id: int, block_id: str, *, cap: int, max_blocks: int, guard: SpaceGuard = no_guard
    ) -> UploadWriter: ...

    def commit_blocks(self, upload_id: int, block_ids: list[str], *, max_blocks: int) -> int:
        """Put Block List: the listed blocks, in order, are the upload; returns its size."""

    def seal(self, upload_id: int) -> None:
        """Before a commit reads the upload: this process's writers finish or the commit is refused."""

    def unseal(self, upload_id: int) -> None: ...

    def finalize(self, upload_id: int, size: int) -> StagedUpload:
        """Prove the upload is exactly `size` bytes with no holes (IncompleteUpload / InvalidRequest)."""

    def discard(self, upload_id: int) -> None: ...

    def upload_ids(self) -> list[int]:
        """Every upload with staged state, for the janitor to match against rows."""

    def after_restart(self) -> None:
        """At server start: drop what died with this process (local staging); shared stores keep all."""

    def progress(self, upload_id: int) -> Progress | None:
        """What arrived so far and when, or None when the upload has no staging here."""

    def dropped_for_space(self, upload_id: int) -> bool: ...

    def disk_usage(self) -> tuple[int, int] | None:
        """(free, total) bytes of the volume staging fills, or None when it is not a local disk."""
