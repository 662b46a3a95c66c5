"""Uploads in flight kept in the Azure container beside the blobs (`--blobs azure://container/prefix`), so
every replica sees every upload. The layout and its rules are store/objectuploads.py's; here is how Azure
holds them: a request body is staged as uncommitted blocks on its own blob as it arrives and becomes
visible only when its last block is in and the block list is committed, so a body cut short leaves
nothing that counts, whichever replica it reached (the service drops uncommitted blocks after a week).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from runcache.core.errors import InvalidRequest
from runcache.store.azure import DEFAULT_BLOCK, MAX_BLOCK_SIZE, AzureBlobStore, block_id, out_of_space
from runcache.store.objectuploads import CHANGED_WHILE_COMMITTING, ObjectUploadStore, Piece, StoredObject


class _BlockSink:
    """One body into one blob: staged blocks, committed as the blob's block list when the body is whole."""

    def __init__(self, blob: Any) -> None:
        self._blob = blob
        self._blocks: list[str] = []

    def send(self, part: bytes) -> None:
        self._blocks.append(block_id(len(self._blocks)))
        self._blob.stage_block(self._blocks[-1], part, validate_content=True)

    def complete(self, tail: bytes) -> None:
        if not self._blocks:
            self._blob.upload_blob(tail, overwrite=True, validate_content=True)
            return
        if tail:
            self.send(tail)
        self._blob.commit_block_list(self._blocks)

    def abort(self) -> None:
        # Staged blocks of an uncommitted body are invisible and never count; discard removes them, and
        # the storage drops uncommitted blocks after a week in any case.
        return None


class AzureUploadStore(ObjectUploadStore):
    out_of_space = staticmethod(out_of_space)

    def __init__(self, blobs: AzureBlobStore, *, block_size: int = DEFAULT_BLOCK) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"Azure blocks are 1 to {MAX_BLOCK_SIZE} bytes, got {block_size}")
        super().__init__(blobs.prefix)
        self.container = blobs.container
        self.part_size = block_size

    @property
    def block_size(self) -> int:
        return self.part_size

    def _list(self, prefix: str, *, in_flight: bool = False) -> Iterable[StoredObject]:
        include = ["uncommittedblobs"] if in_flight else None
        for b in self.container.list_blobs(name_starts_with=prefix, include=include):
            yield StoredObject(b.name, int(b.size), b.etag, b.last_modified)

    def _put_small(self, upload_id: int, name: str, text: str) -> None:
        self.container.upload_blob(self.key(upload_id, name), text.encode(), overwrite=True)

    def _get_small(self, upload_id: int, name: str) -> str | None:
        try:
            return self.container.download_blob(self.key(upload_id, name)).readall().decode()
        except ResourceNotFoundError:
            return None

    def _delete(self, keys: list[str]) -> None:
        for name in keys:
            blob = self.container.get_blob_client(name)
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                # A blob with only uncommitted blocks cannot be deleted as such: commit it empty, then delete.
                with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
                    blob.commit_block_list([])
                    blob.delete_blob()

    def exists(self, upload_id: int) -> bool:
        try:
            self.container.get_blob_client(self.key(upload_id, "created")).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return True

    def _sink(self, key: str) -> _BlockSink:
        return _BlockSink(self.container.get_blob_client(key))

    def _read_range(self, piece: Piece) -> Iterator[bytes]:
        try:
            stream = self.container.download_blob(
                piece.key,
                offset=piece.start,
                length=piece.end - piece.start,
                etag=piece.etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            yield from stream.chunks()
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise InvalidRequest(CHANGED_WHILE_COMMITTING) from exc
