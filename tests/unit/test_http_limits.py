"""The HTTP layer's input bounds and log escaping, without a server."""

from __future__ import annotations

import io
import logging

import pytest

from runcache.core.errors import InvalidRequest
from runcache.core.ranges import INT64_MAX, RangeNotSatisfiable, parse_content_range, parse_range
from runcache.server.common import MAX_JSON_DEPTH, json_depth, parse_int
from runcache.server.logsafe import OneLineFormatter, one_line


# --- log escaping --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain key-1.2_x", "plain key-1.2_x"),
        ("a\r\nFAKE b", "a\\r\\nFAKE b"),
        ("tab\there", "tab\\there"),
        ("nul\x00 esc\x1b[2J del\x7f", "nul\\x00 esc\\x1b[2J del\\x7f"),
        ("nel\x85 csi\x9b", "nel\\x85 csi\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),
        ("ünïcödé ✓ 鍵", "ünïcödé ✓ 鍵"),
    ],
)
def test_one_line_escapes_every_line_breaker(raw: str, shown: str) -> None:
    assert one_line(raw) == shown
    assert len(one_line(raw).splitlines()) <= 1


def _formatted(record_args: tuple[object, ...], msg: str, exc: bool = False) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(f"test-logsafe-{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception(msg, *record_args)
        else:
            logger.warning(msg, *record_args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_formatter_escapes_arguments_and_format_string() -> None:
    text = _formatted(("k\r\nFAKE INFO runcache.services.cache: committed", ValueError("x\ny")), "key=%s err=%s\n")
    assert text.count("\n") == 1 and text.endswith("\\n\n")
    assert "k\\r\\nFAKE" in text and "x\\ny" in text


def test_formatter_keeps_tracebacks_readable() -> None:
    text = _formatted(("k\nFAKE",), "failed for %s", exc=True)
    first, *rest = text.splitlines()
    assert first.endswith("failed for k\\nFAKE")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


# --- JSON depth ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b"{}", 1),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b'{"k":"[[[[{{{{"}', 1),
        (b'{"k":"\\"[[[[\\\\"}', 1),  # escaped quote and escaped backslash inside the string
        (b'["a\\\\", [[]]]', 3),
        (b"[" * 100_000, 100_000),
        (b'"unterminated [[[[', 0),
        (b"[[]][[[]]]", 3),
        (b"]]]]", 0),
    ],
)
def test_json_depth_counts_brackets_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_json_depth_is_linear_on_hostile_strings() -> None:
    import time

    started = time.monotonic()
    json_depth(b'"' + b'\\"' * 500_000)  # one string that never ends
    json_depth(b'"\\' * 300_000)
    json_depth(b'"' * 1_000_000)
    assert time.monotonic() - started < 2


def test_json_depth_bound_is_small() -> None:
    assert 8 <= MAX_JSON_DEPTH <= 64


# --- integers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "number"),
    [
        (0, 0),
        (5, 5),
        ("5", 5),
        (" 42 ", 42),
        ("-3", -3),
        (7.0, 7),
        (INT64_MAX, INT64_MAX),
        (str(INT64_MAX), INT64_MAX),
        (-(2**63), -(2**63)),
    ],
)
def test_parse_int_accepts_int64(value: object, number: int) -> None:
    assert parse_int(value, "n") == number


@pytest.mark.parametrize(
    "value",
    [
        True,
        None,
        "",
        "abc",
        "1.5",
        1.5,
        "²",
        "١٢",
        "--5",
        "+5",
        "9" * 5000,
        10**30,
        2**63,
        -(2**63) - 1,
        1e300,
        float("inf"),
        float("nan"),
        [1],
        {"a": 1},
    ],
)
def test_parse_int_refuses_non_int64(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_int(value, "n")


def test_parse_int_bounds_are_parameters() -> None:
    assert parse_int("0", "size", minimum=0) == 0
    with pytest.raises(InvalidRequest, match="size"):
        parse_int(-1, "size", minimum=0)
    with pytest.raises(InvalidRequest):
        parse_int(11, "n", maximum=10)


# --- ranges --------------------------------------------------------------------------------------
def test_content_range_refuses_offsets_past_int64() -> None:
    assert parse_content_range(f"bytes 0-{INT64_MAX - 1}/*") == (0, INT64_MAX)
    for bad in (
        f"bytes 0-{INT64_MAX}/*",
        "bytes 0-99999999999999999999999/*",
        "bytes " + "1" * 5000 + "-" + "2" * 5000 + "/*",
        "bytes 0-9/" + "9" * 5000,
        "bytes ١-٢/*",
    ):
        with pytest.raises(InvalidRequest):
            parse_content_range(bad)


def test_range_with_huge_numbers_is_clamped_or_unsatisfiable() -> None:
    assert parse_range("bytes=0-" + "9" * 5000, 100) == (0, 100)
    assert parse_range("bytes=-" + "9" * 5000, 100) == (0, 100)
    assert parse_range("bytes=10-99999999999999999999999", 100) == (10, 100)
    for unsatisfiable in ("bytes=" + "9" * 5000 + "-", "bytes=99999999999999999999999-"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(unsatisfiable, 100)


def test_formatter_redacts_signed_url_signatures() -> None:
    line = '127.0.0.1:5 - "PUT /runcache/uploads/7?sp=w&se=1796000000&sig=0123abcd&comp=block HTTP/1.1" 201'
    text = _formatted((line,), "%s")
    assert "0123abcd" not in text and "sig=REDACTED&comp=block" in text and "se=1796000000" in text
