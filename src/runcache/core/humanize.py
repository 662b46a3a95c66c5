"""Human-readable sizes and times, worded as `gh cache list` prints them (and the web page shows them)."""

from __future__ import annotations

from datetime import UTC, datetime

from runcache.core.eviction import GB  # a limit's "GB" is 1024^3 bytes, as the client counts it


def _truncate(value: float, places: int = 2) -> str:
    # gh truncates rather than rounds: 1.999 KiB is "1.99 KiB".
    text = f"{value:.{places + 6}f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac[:places]}"


def human_size(size: int) -> str:
    """`B`, `KiB`, `MiB` or `GiB` with two truncated decimals (gh's humanFileSize)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{_truncate(value)} {unit}"
        value /= 1024
    return f"{_truncate(value)} GiB"


def human_limit(limit_gb: int) -> str:
    """A storage limit, set in whole "GB" (the REST field `max_cache_size_gb`), named by what it counts:
    GiB, so it reads in the same unit family as `human_size` ("3.24 MiB of 10 GiB", never "of 10 GB")."""
    return f"{limit_gb} GiB"


def usage_of_limit(size: int, limit_gb: int) -> str:
    """`3.24 MiB of 10 GiB (0.0%)`: the used size, the limit and the share of it, all in binary units.

    The share is not capped at 100%: the newest entry is always kept even when it alone is over the
    limit, and "100%" would hide by how much."""
    share = 100 * size / (limit_gb * GB) if limit_gb > 0 else 0.0
    return f"{human_size(size)} of {human_limit(limit_gb)} ({share:.1f}%)"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def fuzzy_ago(then: datetime, now: datetime | None = None) -> str:
    """gh's FuzzyAgo: "less than a minute ago", "about 2 hours ago", "about 1 day ago", ..."""
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    seconds = (now - then).total_seconds()
    if seconds < 60:
        return "less than a minute ago"
    hours = seconds / 3600
    if seconds < 3600:
        return f"about {_plural(int(seconds // 60), 'minute')} ago"
    if hours < 24:
        return f"about {_plural(int(hours), 'hour')} ago"
    if hours < 30 * 24:
        return f"about {_plural(int(hours) // 24, 'day')} ago"
    if hours < 365 * 24:
        return f"about {_plural(int(hours) // 24 // 30, 'month')} ago"
    return f"about {_plural(int(hours / 24 / 365), 'year')} ago"


def parse_iso(text: str) -> datetime:
    """GitHub's `2019-01-24T22:45:36.000Z` as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
