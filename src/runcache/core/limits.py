"""Upload limits: how large an entry, how many uploads and blocks, how much disk must stay free.

Every input that makes the server hold bytes or rows has a bound here, with a GitHub-like default,
so one write token cannot fill the disk or the database. The checks are pure; the service feeds
them the numbers it reads from the stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from runcache.core.errors import EntryTooLarge, InvalidRequest, StorageFull, TooManyUploads
from runcache.core.ranges import INT64_MAX

MB = 1024**2
GB = 1024**3

DEFAULT_MAX_ENTRY_SIZE_GB = 10  # GitHub refuses archives over 10 GB (the client checks 10 * 1024^3 bytes)
DEFAULT_MAX_UPLOADS_PER_REPO = 100  # reservations in flight per repository
# Azure allows 50,000 blocks; real clients send blocks of 4-64 MiB, so 5,000 covers 20 GB and more.
DEFAULT_MAX_BLOCKS_PER_UPLOAD = 5_000
# sccache and OpenDAL store one entry per object; 20,000 keeps lookups fast while covering big builds.
DEFAULT_MAX_ENTRIES_PER_REPO = 20_000
DEFAULT_MIN_FREE_MB = 1024


@dataclass(frozen=True)
class UploadLimits:
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_SIZE_GB * GB
    max_uploads_per_repo: int = DEFAULT_MAX_UPLOADS_PER_REPO
    max_blocks_per_upload: int = DEFAULT_MAX_BLOCKS_PER_UPLOAD
    max_entries_per_repo: int = DEFAULT_MAX_ENTRIES_PER_REPO
    min_free_bytes: int = DEFAULT_MIN_FREE_MB * MB

    def __post_init__(self) -> None:
        for name in ("max_entry_bytes", "max_uploads_per_repo", "max_blocks_per_upload", "max_entries_per_repo"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= INT64_MAX:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_free_bytes, int) or self.min_free_bytes < 0:
            raise ValueError(f"min_free_bytes must not be negative, got {self.min_free_bytes!r}")


def effective_free_floor(configured: int, filesystem_size: int) -> int:
    """The free space new uploads must leave: the configured floor, but at most a tenth of a small
    file system (a 2 GB volume would otherwise never accept anything)."""
    return min(configured, filesystem_size // 10)


def entry_size_cap(limits: UploadLimits, repository_limit_bytes: int) -> int:
    """The largest entry a repository may store: the server's maximum, within the repository's quota."""
    return min(limits.max_entry_bytes, repository_limit_bytes)


def check_declared_size(declared: int | None, cap: int) -> None:
    """A size announced at reserve time (v1 `cacheSize`) must fit before any byte is accepted."""
    if declared is None:
        return
    if declared < 0:
        raise InvalidRequest(f"cacheSize must not be negative, got {declared}")
    if declared > cap:
        raise EntryTooLarge(_too_large(declared, cap))


def check_upload_end(end: int, declared: int | None, cap: int) -> None:
    """A byte range (or a growing body) may not reach past the declared size or the entry cap."""
    if declared is not None and declared >= 0 and end > declared:
        raise InvalidRequest(f"upload reaches byte {end - 1}, past the reserved size of {declared} bytes")
    if end > cap:
        raise EntryTooLarge(_too_large(end, cap))


def check_block_count(count: int, max_blocks: int) -> None:
    if count > max_blocks:
        raise InvalidRequest(f"an upload may have at most {max_blocks} blocks")


def check_chunk_count(count: int, max_chunks: int) -> None:
    """Chunks (v1 PATCH ranges, retries included) share the blocks' bound: each one is stored state."""
    if count > max_chunks:
        raise InvalidRequest(f"an upload may have at most {max_chunks} chunks; send larger ones")


def check_uploads_in_flight(in_flight: int, max_uploads: int, repository: str) -> None:
    if in_flight >= max_uploads:
        raise TooManyUploads(
            f"{repository} already has {in_flight} uploads in progress (limit {max_uploads}); "
            "wait for them to finish or expire"
        )


def check_free_space(free: int, needed: int, floor: int) -> None:
    """New bytes may not take the volume below its free-space floor (restores keep working)."""
    if free - max(needed, 0) < floor:
        raise StorageFull(
            f"cache storage full: {max(free, 0) // MB} MB free, the server keeps at least {floor // MB} MB free; "
            "not saving cache"
        )


def _too_large(size: int, cap: int) -> str:
    return f"Cache size of ~{size // MB} MB ({size} B) is over the {cap // MB} MB limit, not saving cache."
