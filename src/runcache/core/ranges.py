"""Byte-range rules for chunked uploads: parsing the client's headers and proving an upload is whole."""

from __future__ import annotations

import re
from collections.abc import Iterable

from runcache.core.errors import IncompleteUpload, InvalidRequest

# Offsets end up in SQLite integers, seeks and file sizes: all int64. Past 19 digits a number is not
# even parsed (int() of thousands of digits is slow, and past 4300 it raises).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+([0-9]{1,19})-([0-9]{1,19})/(\*|[0-9]{1,19})\s*$")


def parse_content_range(value: str | None) -> tuple[int, int]:
    """`bytes start-end/*` with an inclusive end, as the v1 client sends; returns a half-open range."""
    if not value:
        raise InvalidRequest("Content-Range header is required: bytes <start>-<end>/*")
    m = _CONTENT_RANGE.match(value)
    if not m:
        raise InvalidRequest(f"malformed Content-Range {value[:100]!r}; expected bytes <start>-<end>/*")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise InvalidRequest(f"Content-Range {value!r} ends before it starts")
    if end >= INT64_MAX:
        raise InvalidRequest(f"Content-Range {value!r} reaches past the largest possible file")
    if m.group(3) != "*" and end >= int(m.group(3)):
        raise InvalidRequest(f"Content-Range {value!r} goes past the declared total")
    return start, end + 1


_RANGE = re.compile(r"^\s*bytes=([0-9]*)-([0-9]*)\s*$")


class RangeNotSatisfiable(InvalidRequest):
    pass


def _position(digits: str) -> int:
    """A byte position from a Range header; anything past int64 reads as "beyond every file"."""
    digits = digits.lstrip("0") or "0"
    return INT64_MAX + 1 if len(digits) > 19 else int(digits)


def parse_range(value: str, size: int) -> tuple[int, int]:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range over `size` bytes, as a half-open (start, end)."""
    m = _RANGE.match(value)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise InvalidRequest(f"malformed or multiple range {value[:100]!r}; one bytes=<start>-<end> range is served")
    first, last = m.group(1), m.group(2)
    shown = value if len(value) <= 100 else value[:100] + "..."
    if first == "":
        length = _position(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {shown!r} selects nothing of {size} bytes")
        return max(0, size - length), size
    start = _position(first)
    end = size - 1 if last == "" else min(_position(last), size - 1)
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"range {shown!r} is outside the {size} bytes")
    return start, end + 1


def check_complete(ranges: Iterable[tuple[int, int]], size: int) -> None:
    """The received ranges must cover [0, size) with no hole and nothing past the end.

    Retried chunks may overlap earlier ones; that is fine as long as coverage is exact.
    """
    if size < 0:
        raise InvalidRequest(f"size must not be negative, got {size}")
    covered = 0
    for start, end in sorted(ranges):
        if end > size:
            raise IncompleteUpload(f"received bytes up to {end} but the declared size is {size}")
        if start > covered:
            raise IncompleteUpload(f"missing bytes {covered}-{start - 1} of {size}")
        covered = max(covered, end)
    if covered != size:
        raise IncompleteUpload(f"received {covered} of {size} bytes")
