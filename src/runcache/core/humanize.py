"""Human-readable sizes and times, worded as `gh cache list` prints them (and the web page shows them)."""

from __future__ import annotations

from datetime import UTC, datetime


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
