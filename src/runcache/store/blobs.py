"""The blob-store interface: finished archives, addressed by name, verified by size and SHA-256.

Small on purpose (after bazel-remote's cache.BlobStore): every backend (local disk now, object
stores later) implements these few calls, and policies such as eviction live outside it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True)
class BlobStats:
    count: int
    bytes: int


class BlobStore(Protocol):
    """Finished blobs. Writes come from an upload store: local staging hands over its files
    (`put_file`/`put_parts` take ownership of them), a shared one streams its bytes (`put_stream`);
    reads are byte streams, never paths, so a backend need not be a local file system."""

    def put_file(self, name: str, path: Path, *, size: int, sha256: str) -> None:
        """Take ownership of a fully written local file (which may be moved) as blob `name`."""

    def put_parts(self, name: str, paths: list[Path], *, size: int, sha256: str) -> None:
        """Take ownership of ordered local files whose concatenation is blob `name`."""

    def put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        """Store the bytes `chunks` yields as blob `name`: exactly `size` bytes, hashing to `sha256` when
        given (else the digest is computed on the way); returns the SHA-256. Memory: a part at most."""

    def size(self, name: str) -> int | None:
        """The blob's length in bytes, or None when there is no such blob."""

    def open_range(self, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the blob as they are read; raises BlobMissing when it is gone."""

    def download_url(self, name: str, ttl: int) -> str | None:
        """A URL from which a client GETs the blob's bytes (Range honoured) straight from the store, without
        this server, valid `ttl` seconds and for this blob only; None when the store has no such URLs."""

    def contains(self, name: str) -> bool: ...

    def contains_many(self, names: Iterable[str]) -> set[str]:
        """Which of these blobs exist, in one call (a lookup must not cost a round trip per candidate)."""

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def names_with_age(self) -> Iterator[tuple[str, float]]:
        """Every blob with the seconds since it was stored, for garbage collection."""

    def stats(self) -> BlobStats: ...


@runtime_checkable
class FileSpans(Protocol):
    """What `open_range` returns when the bytes lie in local files: besides iterating them, a server may ask
    for the files themselves and hand them to the kernel (sendfile), so no byte is copied through Python."""

    def spans(self) -> AsyncGenerator[tuple[BinaryIO, int, int], None]:
        """(file, offset, count) per file holding the range, in order; a file stays open until the next span
        is asked for. Raises BlobMissing as iterating would."""


@dataclass(frozen=True)
class BlobReport:
    """What the storage says about a stored blob; a direct upload is checked against it."""

    size: int
    etag: str
    content_md5: str | None  # base64, when the storage knows it (single-shot uploads)
    # The `sha256` metadata the uploader gave the blob (lowercase hex), unverified: the server never read
    # the bytes. It only tells downloaders what to check the bytes against.
    sha256: str | None = None


@runtime_checkable
class DirectUploads(Protocol):
    """A blob store clients can write into themselves (Azure: a SAS URL), so upload bytes bypass the server."""

    def upload_url(self, name: str, ttl: int) -> str | None:
        """A URL that can create and write blob `name` and nothing else (no read, list or delete, no other
        blob), valid `ttl` seconds; None when the store cannot sign one."""

    def report(self, name: str) -> BlobReport | None:
        """The stored blob's size, ETag and content digest as the storage reports them; None when absent."""

    def seal(self, name: str) -> BlobReport | None:
        """Make the blob unchangeable through any upload URL handed out for it, then report it; None when
        absent. The store's own delete still removes it."""

    def unseal(self, name: str) -> None:
        """Undo `seal`: a refused finalize lets the client write the blob again."""


class BlobMissing(LookupError):
    """A blob that a committed entry points at is not (or no longer) in the store."""
