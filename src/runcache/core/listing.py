"""Listing rules of the management API: parameters, defaults, pagination and the `Link` header.

Defaults and limits are GitHub's (`GET /repos/{owner}/{repo}/actions/caches`): 30 per page, at most
100, sorted by `last_accessed_at` descending. Bad values are a `ValidationFailed` naming the field,
which the REST layer turns into GitHub's 422 body.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from runcache.core.errors import InvalidRequest

SORT_FIELDS = ("created_at", "last_accessed_at", "size_in_bytes")
DIRECTIONS = ("asc", "desc")
DEFAULT_SORT = "last_accessed_at"
DEFAULT_DIRECTION = "desc"
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000
MAX_NAME_LENGTH = 100
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ValidationFailed(InvalidRequest):
    """A query parameter or body field with a value the API does not accept (GitHub's 422)."""

    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclass(frozen=True)
class Page:
    number: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    def last(self, total: int) -> int:
        return max(1, math.ceil(total / self.per_page))


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,200}", text):
        raise ValidationFailed(name, f"{name} must be an integer, got {raw!r}")
    return int(text)


def parse_page(per_page: str | None, page: str | None) -> Page:
    """`per_page` above 100 is capped to 100 (as GitHub does); values below 1 are refused. An absent
    parameter takes its default; an empty or non-numeric one is a validation error."""
    size = _int_param(per_page, "per_page", DEFAULT_PER_PAGE)
    number = _int_param(page, "page", 1)
    if size < 1:
        raise ValidationFailed("per_page", f"per_page must be at least 1, got {size}")
    if number < 1:
        raise ValidationFailed("page", f"page must be at least 1, got {number}")
    if number > MAX_PAGE:
        raise ValidationFailed("page", f"page must be at most {MAX_PAGE}, got {number}")
    return Page(number, min(size, MAX_PER_PAGE))


def parse_sort(sort: str | None, direction: str | None) -> tuple[str, str]:
    sort = DEFAULT_SORT if sort is None else sort
    direction = DEFAULT_DIRECTION if direction is None else direction
    if sort not in SORT_FIELDS:
        raise ValidationFailed("sort", f"sort must be one of {', '.join(SORT_FIELDS)}, got {sort!r}")
    if direction not in DIRECTIONS:
        raise ValidationFailed("direction", f"direction must be asc or desc, got {direction!r}")
    return sort, direction


def validate_name(value: str, what: str) -> str:
    """An owner or repository name as GitHub allows them (letters, digits, `-`, `_`, `.`)."""
    if not value or len(value) > MAX_NAME_LENGTH or not _NAME.match(value) or value in (".", ".."):
        raise InvalidRequest(f"invalid {what} name {value!r}")
    return value


def link_header(base_url: str, params: list[tuple[str, str]], page: Page, total: int) -> str | None:
    """GitHub's pagination `Link` header (prev, next, last, first), or None when there is one page only.

    `params` are the request's other query parameters, kept in order; `page` and `per_page` are set.
    """
    last = page.last(total)
    kept = [(k, v) for k, v in params if k not in ("page", "per_page")]

    def url(number: int) -> str:
        return f"{base_url}?{urlencode([*kept, ('per_page', str(page.per_page)), ('page', str(number))])}"

    links: list[str] = []
    if page.number > 1:
        links.append(f'<{url(min(page.number - 1, last))}>; rel="prev"')
    if page.number < last:
        links.append(f'<{url(page.number + 1)}>; rel="next"')
    if page.number != last:
        links.append(f'<{url(last)}>; rel="last"')
    if page.number > 1:
        links.append(f'<{url(1)}>; rel="first"')
    return ", ".join(links) or None


_FILTER_TOKEN = re.compile(r'(?:(?P<name>[A-Za-z]+):)?(?:"(?P<quoted>[^"]*)"?|(?P<bare>\S*))')


@dataclass(frozen=True)
class FilterQuery:
    """What the filter box asked for: a key prefix, a ref, and the `name:` words that are not filters
    (kept in the key text, since keys may contain ':', but worth a hint: `os:linux` may be a typo)."""

    key: str | None
    ref: str | None
    unknown: tuple[str, ...] = ()


def read_filter_query(query: str) -> FilterQuery:
    """The web page's filter box: `key:<prefix>` and `branch:<name>` (or `ref:`) qualifiers, values
    optionally in double quotes (`key:"a b"`); a bare word is a key prefix too, and so is a word with
    an unknown qualifier (`os:linux`), whose name is reported in `unknown` (as first typed, once). A
    later qualifier wins over an earlier one."""
    key: str | None = None
    ref: str | None = None
    unknown: list[str] = []
    for m in _FILTER_TOKEN.finditer(query.strip()):
        if not m.group(0).strip():
            continue
        name = (m.group("name") or "").lower()
        value = m.group("quoted") if m.group("quoted") is not None else (m.group("bare") or "")
        if name == "key":
            key = value or None
        elif name in ("branch", "ref"):
            ref = value or None
        elif name:
            key = m.group(0)  # an unknown qualifier is part of the key text (keys may contain ':')
            if name not in (u.lower() for u in unknown):
                unknown.append(m.group("name"))
        else:
            key = value or None
    return FilterQuery(key, ref, tuple(unknown))


def parse_filter_query(query: str) -> tuple[str | None, str | None]:
    """(key prefix, ref) of the filter box; see `read_filter_query`, which also names unknown qualifiers."""
    parsed = read_filter_query(query)
    return parsed.key, parsed.ref
