"""Eviction rules: which committed entries a repository's storage and retention limits remove.

GitHub's policy: a new entry is always saved; then least-recently-used entries (by last access) are
evicted until the repository is under its size limit. Separately, entries not accessed for longer
than the retention limit (default 7 days) are removed. These functions only choose; the service
deletes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

GB = 1024**3  # the client's own 10 GB check counts 1024^3 bytes per GB
DEFAULT_STORAGE_LIMIT_GB = 10
DEFAULT_RETENTION_DAYS = 7
MAX_STORAGE_LIMIT_GB = 10_000
MAX_RETENTION_DAYS = 365


@dataclass(frozen=True)
class Usage:
    """What eviction needs to know about one committed entry."""

    id: int
    repository: str
    size: int
    created_at: datetime
    last_accessed_at: datetime


def _lru_order(e: Usage) -> tuple[datetime, datetime, int]:
    return (e.last_accessed_at, e.created_at, e.id)


def choose_lru_evictions(
    entries: Sequence[Usage], limit_bytes: int, keep: Iterable[int] = (), max_count: int | None = None
) -> list[int]:
    """Ids to evict, least recently used first, until the total size is at most `limit_bytes` and
    (when given) there are at most `max_count` entries.

    Entries in `keep` (the one just committed) are never chosen, even when they alone exceed the limit.
    Ties on last access go to the older creation, then the lower id, so the choice is deterministic.
    """
    keep = set(keep)
    total = sum(max(e.size, 0) for e in entries)
    count = len(entries)
    chosen: list[int] = []
    for e in sorted(entries, key=_lru_order):
        if total <= limit_bytes and (max_count is None or count <= max_count):
            break
        if e.id in keep:
            continue
        chosen.append(e.id)
        total -= max(e.size, 0)
        count -= 1
    return chosen


def choose_expired(
    entries: Iterable[Usage],
    now: datetime,
    retention_days: Mapping[str, int],
    default_days: int = DEFAULT_RETENTION_DAYS,
) -> list[int]:
    """Ids of entries whose last access is more than their repository's retention before `now`."""
    return [
        e.id
        for e in sorted(entries, key=_lru_order)
        if now - e.last_accessed_at > timedelta(days=retention_days.get(e.repository, default_days))
    ]


def validate_storage_limit(value: object) -> int:
    """A storage limit in whole GB, 1..10,000 (GitHub's per-repository maximum)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STORAGE_LIMIT_GB:
        raise ValueError(f"max_cache_size_gb must be an integer from 1 to {MAX_STORAGE_LIMIT_GB}")
    return value


def validate_retention(value: object) -> int:
    """A retention limit in whole days, 1..365 (GitHub's maximum for private repositories)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RETENTION_DAYS:
        raise ValueError(f"max_cache_retention_days must be an integer from 1 to {MAX_RETENTION_DAYS}")
    return value
