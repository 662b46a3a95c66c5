"""Focused tests for runcache.runner.expressions (GitHub Actions ``${{ }}`` expressions)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from runcache.runner.expressions import (
    CaseSensitiveDict,
    ExpressionError,
    ExpressionFunctions,
    evaluate,
    evaluate_if,
    evaluate_template,
    interpolate,
)

SUCCESS = ExpressionFunctions.for_job_status("success")
FAILURE = ExpressionFunctions.for_job_status("failure")
CANCELLED = ExpressionFunctions.for_job_status("cancelled")


def ev(expr: str, **contexts: Any) -> Any:
    return evaluate(expr, contexts)


def error(expr: str, contexts: dict[str, Any] | None = None, **kw: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, contexts or {}, **kw)
    return info.value


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("!2 < 3", True),  # (!2) < 3 -> false < 3
        ("!(2 < 3)", False),
        ("1 || 2 && 3", 1),  # && binds tighter than ||
        ("(1 || 2) && 3", 3),
        ("false && 0 || null", None),
        ("3 < 2 < 1", True),  # left-associative: (3 < 2) < 1 -> false < 1
        ("2 == 2 == 1", True),  # (2 == 2) == 1 -> true == 1
        ("2 <= 3 == true", True),  # comparison binds tighter than equality
        ("1 == 1 && 2", 2),  # equality binds tighter than &&
        ("!foo.bar", False),  # property access binds tighter than !
        ("(!foo).bar", None),
    ],
)
def test_precedence(expr: str, expected: Any) -> None:
    assert ev(expr, foo={"bar": True}) == expected


def test_and_or_return_operand_values_and_short_circuit() -> None:
    assert ev("'' || 'fallback'") == "fallback"
    assert ev("'a' && 'b'") == "b"
    assert ev("0 && boom.x", boom={}) == 0
    # The right operand is never evaluated, so its error does not surface.
    assert ev("true || fromJSON('not json')") is True
    assert ev("false && fromJSON('not json')") is False
    with pytest.raises(ExpressionError):
        ev("false || fromJSON('not json')")


def test_not_returns_boolean() -> None:
    assert ev("!''") is True
    assert ev("!'false'") is False  # non-empty strings are truthy
    assert ev("!fromJSON('[]')") is False  # so are empty arrays and objects
    assert ev("!NaN") is True


# --------------------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("'1' == true", True),
        ("2 == true", False),
        ("null == false", True),
        ("'' == null", True),
        ("'abc' == 0", False),
        ("'' == 0", True),
        ("' 0x1F ' == 31", True),
        ("' 0o17 ' == 15", True),
        ("'1_000' == 1000", False),  # not a number in the invariant culture
        ("' 1e3 ' == 1000", True),
        ("'TRUE' == 'true'", True),  # ordinal, ignoring case
        ("'a' < '_'", True),  # .NET upper-cases before comparing: 'A' (0x41) < '_' (0x5F)
        ("'ß' == 'SS'", False),  # simple case mapping only
        ("NaN == NaN", False),
        ("NaN != NaN", True),
        ("true > false", True),
        ("null < 1", True),
        ("'10' > 9", True),  # number vs string compares numerically
        ("'10' > '9'", False),  # string vs string compares ordinally
    ],
)
def test_loose_equality_and_ordering(expr: str, expected: bool) -> None:
    assert ev(expr) is expected


def test_objects_and_arrays_compare_by_identity() -> None:
    shared: dict[str, Any] = {}
    assert ev("a == b", a=shared, b=shared) is True
    assert ev("a == b", a={}, b={}) is False
    assert ev("a == a", a=[]) is True
    assert ev("a.* == a.*", a=[1]) is False  # every filter builds a new array


def test_cache_hit_tristate() -> None:
    condition = "steps.cache.outputs.cache-hit != 'true'"
    assert ev(condition, steps={"cache": {"outputs": {}}}) is True  # miss: unset
    assert ev(condition, steps={"cache": {"outputs": {"cache-hit": "false"}}}) is True
    assert ev(condition, steps={"cache": {"outputs": {"cache-hit": "true"}}}) is False
    assert ev(condition, steps={"cache": {"outputs": {"cache-hit": "TRUE"}}}) is False


def test_hex_and_octal_use_the_int32_range() -> None:
    assert ev("0x7fffffff") == 2147483647
    assert ev("0xFFFFFFFF") == -1  # 32 bits reinterpreted as a signed Int32
    assert ev("' 0x100000000 ' == 4294967296") is False  # overflow gives NaN
    assert ev("0o37777777777") == -1
    assert error("0x100000000").kind == "lexing"
    assert error("0X1F").kind == "lexing"  # only a lowercase x


def test_infinity_and_nan_strings() -> None:
    assert ev("' Infinity ' == Infinity") is True
    assert ev("'-Infinity' == -Infinity") is True
    assert ev("'infinity' == Infinity") is True  # .NET parses the symbol ignoring case
    assert math.isnan(ev("NaN"))


# --------------------------------------------------------------------------- numbers and strings


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("1", "1"),
        ("-0", "0"),
        ("0.1", "0.1"),
        ("1.5e3", "1500"),
        ("1e15", "1E+15"),  # G15 switches to scientific notation at 15 digits
        ("123456789012345", "123456789012345"),
        ("123456789012345678", "1.23456789012346E+17"),
        ("0.0001", "0.0001"),
        ("0.00001", "1E-05"),
        ("0.333333333333333333", "0.333333333333333"),
    ],
)
def test_numbers_print_as_g15(expr: str, text: str) -> None:
    assert ev(f"format('{{0}}', {expr})") == text
    assert interpolate(f"${{{{ {expr} }}}}", {}) == text


def test_number_values_are_floats_but_context_values_are_kept() -> None:
    assert ev("5") == 5.0 and isinstance(ev("5"), float)
    assert ev("fromJSON('[1, 2]')") == [1.0, 2.0]
    assert ev("x", x=3) == 3 and isinstance(ev("x", x=3), int)


def test_string_literals() -> None:
    assert ev("'it''s'") == "it's"
    assert ev("'a''''b'") == "a''b"
    assert error('"double"').kind == "lexing"


def test_keywords_are_case_sensitive_but_names_are_not() -> None:
    assert ev("true") is True
    err = error("True")
    assert err.kind == "parsing" and "Unrecognized named-value: 'True'" in str(err)
    assert ev("GITHUB.Event_Name", github={"event_name": "push"}) == "push"
    assert ev("FORMAT('{0}', 1)") == "1"
    assert ev("toJSON(1)") == ev("tojson(1)") == "1"


# --------------------------------------------------------------------------- property access


def test_property_access() -> None:
    steps = {"build": {"outputs": {"cache-hit": "true", "Path": "/x"}}}
    assert ev("steps.build.outputs.cache-hit", steps=steps) == "true"
    assert ev("steps.build.outputs.path", steps=steps) == "/x"  # case-insensitive keys
    assert ev("steps['build']['outputs']['PATH']", steps=steps) == "/x"
    assert ev("steps.nope.outputs.x", steps=steps) is None  # chains past a missing key
    assert ev("steps.build.outputs.path.length", steps=steps) is None  # primitives have no properties


def test_env_can_be_case_sensitive() -> None:
    env = CaseSensitiveDict(HOME="/home/me")
    assert ev("env.HOME", env=env) == "/home/me"
    assert ev("env.home", env=env) is None
    assert ev("env.home", env={"HOME": "/home/me"}) == "/home/me"


def test_array_indexes() -> None:
    arr = ["a", "b", "c"]
    assert ev("arr[1]", arr=arr) == "b"
    assert ev("arr['1']", arr=arr) == "b"
    assert ev("arr[1.9]", arr=arr) == "b"  # floored
    assert ev("arr[-1]", arr=arr) is None
    assert ev("arr[3]", arr=arr) is None
    assert ev("arr['x']", arr=arr) is None
    assert ev("obj[1.5]", obj={"1.5": "num key"}) == "num key"  # numbers become G15 keys


def test_object_filters() -> None:
    needs = {"build": {"result": "success"}, "test": {"result": "failure"}, "lint": {}}
    assert ev("needs.*.result", needs=needs) == ["success", "failure"]  # missing keys skipped
    assert ev("contains(needs.*.result, 'FAILURE')", needs=needs) is True
    assert ev("x.*", x="scalar") == []
    assert ev("x[*][0]", x=[[1, 2], [], [3]]) == [1, 3]
    labels = {"labels": [{"name": "bug"}, {"name": "docs"}]}
    assert ev("join(issue.labels.*.name, ', ')", issue=labels) == "bug, docs"


# --------------------------------------------------------------------------- functions


def test_contains_starts_ends() -> None:
    assert ev("contains('Hello World', 'WORLD')") is True
    assert ev("contains(fromJSON('[1, \"2\"]'), 2)") is True  # loose equality per element
    assert ev("contains(fromJSON('{}'), 'a')") is False
    assert ev("startsWith('refs/heads/main', 'REFS/')") is True
    assert ev("endsWith('file.TXT', '.txt')") is True
    assert ev("startsWith(fromJSON('[]'), '')") is False  # non-primitives give false


def test_join() -> None:
    assert ev("join(fromJSON('[1, true, null, \"x\"]'))") == "1,true,,x"
    assert ev("join(fromJSON('[1, 2]'), fromJSON('{}'))") == "1,2"  # non-primitive separator ignored
    assert ev("join('abc', '-')") == "abc"


def test_tojson_format() -> None:
    value = {"b": [1, 2.5, {}], "a": {"s": 'x"y\n<&>é'}, "e": []}
    assert ev("toJSON(v)", v=value) == (
        '{\n  "b": [\n    1,\n    2.5,\n    {}\n  ],\n  "a": {\n    "s": "x\\"y\\n<&>é"\n  },\n  "e": []\n}'
    )
    assert ev("toJSON(null)") == "null"
    assert ev("toJSON(1e20)") == "1E+20"


def test_fromjson() -> None:
    assert ev("fromJSON('{\"a\": [1, 2.5, null]}').a[1]") == 2.5
    err = error("fromJSON('{oops')")
    assert err.kind == "evaluation" and "Error parsing fromJson" in str(err)
    assert error("fromJSON('')").kind == "evaluation"


def test_format() -> None:
    assert ev("format('{0} {1} {0}', 'a', 'b')") == "a b a"
    assert ev("format('{{{0}}}', 'x')") == "{x}"
    assert ev("format('{0}', fromJSON('[]'))") == "Array"
    assert ev("format('{0}', fromJSON('{}'))") == "Object"
    assert ev("format('{0}', null)") == ""
    # Arguments are evaluated lazily, only when referenced.
    assert ev("format('{0}', 'x', fromJSON('not json'))") == "x"
    for bad in ("format('{0')", "format('}')", "format('{a}', 1)", "format('{256}', 1)"):
        assert "The following format string is invalid" in str(error(bad))
    assert "references more arguments than were supplied" in str(error("format('{1}', 1)"))
    assert "format specifiers 'x'" in str(error("format('{0:x}', 1)"))


def test_case() -> None:
    assert ev("case(1 == 2, 'a', true, 'b', 'c')") == "b"
    assert ev("case(true, 'a', fromJSON('not json'))") == "a"  # lazy
    assert "must evaluate to a boolean" in str(error("case('yes', 1, 2)"))
    assert "odd number of parameters" in str(error("case(true, 1, false, 2)"))
    assert "Too few parameters supplied: 'case'" in str(error("case(true, 1)"))


def test_status_functions_and_hashfiles_need_the_caller() -> None:
    assert "Unrecognized function: 'success'" in str(error("success()"))
    assert "Unrecognized function: 'hashFiles'" in str(error("hashFiles('*.txt')"))
    # Status functions without hashFiles.
    assert "Unrecognized function: 'hashFiles'" in str(error("hashFiles('x')", functions=SUCCESS))
    assert evaluate("failure()", {}, FAILURE) is True
    assert evaluate("cancelled() || always()", {}, SUCCESS) is True
    assert "Too many parameters supplied: 'success'" in str(error("success(1)", functions=SUCCESS))


def test_hashfiles_is_wired_through() -> None:
    calls: list[list[str]] = []

    def fake_hash(patterns: list[str]) -> str:
        calls.append(patterns)
        return "abc123"

    fns = ExpressionFunctions.for_job_status("success", hash_files=fake_hash)
    assert evaluate("hashFiles('**/*.lock', 1, null)", {}, fns) == "abc123"
    assert calls == [["**/*.lock", "1", ""]]
    assert interpolate("key-${{ runner.os }}-${{ hashFiles('a') }}", {"runner": {"os": "Linux"}}, fns) == (
        "key-Linux-abc123"
    )

    def broken(patterns: list[str]) -> str:
        raise ValueError("pattern escapes the workspace")

    err = error("hashFiles('../x')", functions=ExpressionFunctions.for_job_status("success", broken))
    assert err.kind == "evaluation"
    assert "hashFiles(../x) failed: pattern escapes the workspace" in str(err)
    assert isinstance(err.__cause__, ValueError)


# --------------------------------------------------------------------------- interpolation


def test_interpolate() -> None:
    ctx = {"github": {"ref": "refs/heads/main", "run": 7}, "n": None, "items": [1]}
    assert interpolate("ref=${{ github.ref }} run=${{github.run}}", ctx) == "ref=refs/heads/main run=7"
    assert interpolate("[${{ n }}] ${{ items }} ${{ github }}", ctx) == "[] Array Object"
    assert interpolate("no expressions {0} it's", ctx) == "no expressions {0} it's"
    assert interpolate("it's {0} ${{ 'x' }} }}", ctx) == "it's {0} x }}"
    assert interpolate("${{ format('{0}}}', 1) }}", ctx) == "1}"  # }} inside a string literal
    assert interpolate("${{ true }}", ctx) == "true"
    assert interpolate("${{ 0.5 }}", ctx) == "0.5"


def test_interpolate_errors() -> None:
    with pytest.raises(ExpressionError, match="closing }} sequence was not found"):
        interpolate("echo ${{ github.ref", {"github": {}})
    with pytest.raises(ExpressionError, match="An expression was expected"):
        interpolate("echo ${{ }}", {})
    with pytest.raises(ExpressionError, match="Unrecognized named-value: 'nope'") as info:
        interpolate("a ${{ nope }}", {})
    assert info.value.position == 1  # reported against the segment's own text


def test_evaluate_template_keeps_the_type_of_a_single_expression() -> None:
    ctx = {"matrix": {"experimental": True, "n": 3}}
    assert evaluate_template("${{ matrix.experimental }}", ctx) is True
    assert evaluate_template("${{ matrix.n }}", ctx) == 3
    assert evaluate_template("n=${{ matrix.n }}", ctx) == "n=3"
    assert evaluate_template("plain", ctx) == "plain"


# --------------------------------------------------------------------------- if:


@pytest.mark.parametrize(
    ("condition", "status", "expected"),
    [
        (None, SUCCESS, True),
        ("", FAILURE, False),  # blank means success()
        ("   ", SUCCESS, True),
        ("true", SUCCESS, True),
        ("true", FAILURE, False),  # implicit success() &&
        (True, FAILURE, False),  # a YAML boolean
        (False, SUCCESS, False),
        ("${{ true }}", CANCELLED, False),
        ("always()", FAILURE, True),
        ("${{ always() }}", CANCELLED, True),
        ("failure()", FAILURE, True),
        ("failure()", SUCCESS, False),
        ("!cancelled()", FAILURE, True),  # contains a status function: no wrapping
        ("!cancelled()", CANCELLED, False),
        ("cancelled()", CANCELLED, True),
        ("Always()", FAILURE, True),  # names are case-insensitive
        ("contains(format('{0}', failure()), 'true')", FAILURE, True),  # nested status call counts
        ("success() || github.x", SUCCESS, True),
        ("github.event_name == 'push'", SUCCESS, True),
        ("github.event_name == 'push'", FAILURE, False),
        ("${{ github.event_name == 'pull_request' }}", SUCCESS, False),
        # Mixed text and ${{ }} is a format() string: always true while the job succeeds.
        ("${{ github.event_name }} == 'pull_request'", SUCCESS, True),
        ("${{ github.event_name }} == 'pull_request'", FAILURE, False),
    ],
)
def test_evaluate_if(condition: str | bool | None, status: ExpressionFunctions, expected: bool) -> None:
    ctx = {"github": {"event_name": "push", "x": ""}}
    assert evaluate_if(condition, ctx, status) is expected


def test_evaluate_if_defaults_to_a_successful_job_and_truthiness() -> None:
    assert evaluate_if("github.x", {"github": {"x": "0"}}) is True  # non-empty string
    assert evaluate_if("github.x", {"github": {"x": 0}}) is False
    assert evaluate_if("steps.s.outputs.cache-hit != 'true'", {"steps": {}}) is True


def test_evaluate_if_errors_fail_the_condition() -> None:
    with pytest.raises(ExpressionError, match="Unrecognized named-value: 'nope'"):
        evaluate_if("nope == 1", {}, SUCCESS)
    with pytest.raises(ExpressionError, match="Unexpected symbol"):
        evaluate_if("${{ 1 2 }}", {}, SUCCESS)


# --------------------------------------------------------------------------- errors


def test_error_attributes_and_message() -> None:
    err = error("1 2")
    assert err.kind == "parsing"
    assert err.position == 3
    assert err.message == "Unexpected symbol: '2'"
    assert str(err) == "Unexpected symbol: '2'. Located at position 3 within expression: 1 2"


def test_error_positions_are_absolute_and_count_utf16_units() -> None:
    err = error("github.a == 'x'\n && nope", {"github": {}})
    assert err.position == 21 and "Unrecognized named-value: 'nope'" in str(err)
    # foo is the 8th code point, but the emoji before it is two UTF-16 code units.
    assert error("'😊' == foo").position == 9


@pytest.mark.parametrize(
    ("expr", "kind", "text"),
    [
        ("1 <", "parsing", "Unexpected end of expression: '<'"),
        ("foo.", "parsing", "Unexpected end of expression: '.'"),
        ("(1", "parsing", "Unexpected end of expression: '1'"),
        ("1 = 2", "lexing", "Unexpected symbol: '='"),
        ("a && @b", "lexing", "Unexpected symbol: '@b'"),
        ("'open", "lexing", "Unexpected symbol: ''open'"),
        ("nope()", "parsing", "Unrecognized function: 'nope'"),
        ("join()", "parsing", "Too few parameters supplied: 'join'"),
        ("contains(1, 2, 3)", "parsing", "Too many parameters supplied: 'contains'"),
        ("format('a',)", "parsing", "Unexpected symbol: ')'"),
        ("'a'[0]", "parsing", "Unexpected symbol: '['"),  # literals cannot be indexed
        ("!" * 50 + "true", "parsing", "Exceeded max expression depth 50"),
        ("x" * 21001, "lexing", "Exceeded max expression length 21000"),
    ],
)
def test_syntax_errors(expr: str, kind: str, text: str) -> None:
    err = error(expr, {"foo": {}, "a": 1})
    assert err.kind == kind
    assert text in str(err)


def test_empty_expression_is_null() -> None:
    assert ev("") is None
    assert ev("  \n ") is None
