"""GitHub's cross-language conformance data for the expression language.

The data (``tests/data/expressions-testdata``, MIT, licence beside it) comes from ``actions/languageservices``.
Every case the TypeScript implementation runs is required here; cases marked
``options.skip: [typescript]`` are left out, as upstream does.

Comparison follows upstream: an error case must fail in the same stage (lexing, parsing,
evaluation) with a message containing the expected text; a value case must have the
expected kind and the same JSON serialisation (numbers as JavaScript prints them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runcache.runner.expressions import ExpressionError, evaluate, kind_name

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "expressions-testdata"


@dataclass(frozen=True)
class Case:
    id: str
    expr: str
    contexts: dict[str, Any]
    result: dict[str, Any] | None
    err: dict[str, str] | None
    skipped: bool


def _load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(DATA_DIR.glob("*.json")):
        groups = json.loads(path.read_text(encoding="utf-8"))
        for group, items in groups.items():
            for n, item in enumerate(items):
                cases.append(
                    Case(
                        id=f"{path.stem}:{group}:{n}",
                        expr=item["expr"],
                        contexts=item.get("contexts") or {},
                        result=item.get("result"),
                        err=item.get("err"),
                        skipped="typescript" in item.get("options", {}).get("skip", []),
                    )
                )
    return cases


CASES = _load_cases()
REQUIRED = [c for c in CASES if not c.skipped]
SKIPPED = [c for c in CASES if c.skipped]


def _canonical(value: Any) -> Any:
    """Make Python values serialise like JavaScript's JSON.stringify (1.0 -> 1, -0 -> 0)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        if math.isfinite(f) and f == int(f):
            return int(f)
        return f
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return [_canonical(v) for v in value]


def check(case: Case) -> str | None:
    """Run one case; return ``None`` when it passes, else a description of the mismatch."""
    # Fresh copies keep cases independent (object identity matters for ==).
    contexts = json.loads(json.dumps(case.contexts))
    try:
        value = evaluate(case.expr, contexts)
    except ExpressionError as exc:
        if case.err is None:
            return f"unexpected {exc.kind} error: {exc}"
        if exc.kind != case.err["kind"]:
            return f"expected a {case.err['kind']} error, got a {exc.kind} error: {exc}"
        if case.err["value"] not in str(exc):
            return f"error message {str(exc)!r} does not contain {case.err['value']!r}"
        return None
    if case.err is not None:
        return f"expected a {case.err['kind']} error ({case.err['value']!r}), got {value!r}"
    assert case.result is not None
    if kind_name(value) != case.result["kind"]:
        return f"expected kind {case.result['kind']}, got {kind_name(value)} ({value!r})"
    got = json.dumps(_canonical(value), ensure_ascii=False)
    want = json.dumps(_canonical(case.result["value"]), ensure_ascii=False)
    if got != want:
        return f"expected {want}, got {got}"
    return None


def test_data_was_found() -> None:
    assert len(CASES) > 900, f"only {len(CASES)} cases loaded from {DATA_DIR}"


@pytest.mark.parametrize("case", REQUIRED, ids=[c.id for c in REQUIRED])
def test_required_case(case: Case) -> None:
    problem = check(case)
    assert problem is None, f"{case.expr!r}: {problem}"


def test_conformance_summary() -> None:
    failures = [(c, p) for c in REQUIRED if (p := check(c)) is not None]
    passed = len(REQUIRED) - len(failures)
    print(
        f"\nexpressions conformance: {passed}/{len(REQUIRED)} required cases passed "
        f"({len(SKIPPED)} skipped as in the TypeScript implementation)"
    )
    extra = sum(1 for c in SKIPPED if check(c) is None)
    print(f"(informational: {extra}/{len(SKIPPED)} of the skipped cases pass as well)")
    for case, problem in failures:
        print(f"  FAIL {case.id}: {case.expr!r}: {problem}")
    assert passed == len(REQUIRED)
