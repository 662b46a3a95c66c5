"""The blob-store interface: finished archives, addressed by name, verified by size and SHA-256.

Small on purpose (after bazel-remote's cache.BlobStore): every backend (local disk now, object
stores later) implements these few calls, and policies such as eviction live outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BlobStats:
    count: int
    bytes: int


class BlobStore(Protocol):
    def put_file(self, name: str, path: Path, *, size: int, sha256: str) -> None:
        """Take ownership of a fully written local file (which may be moved) as blob `name`."""

    def put_parts(self, name: str, paths: list[Path], *, size: int, sha256: str) -> None:
        """Take ownership of ordered local files whose concatenation is blob `name`."""

    def parts(self, name: str) -> list[Path] | None:
        """The blob's local files in order (one for a single-file blob), or None."""

    def contains(self, name: str) -> bool: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def stats(self) -> BlobStats: ...
