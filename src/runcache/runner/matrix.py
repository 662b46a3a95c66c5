"""``strategy.matrix`` expansion with GitHub's rules for ``include`` and ``exclude``."""

from __future__ import annotations

import itertools
from typing import Any


class MatrixError(ValueError):
    pass


def _matches(combo: dict[str, Any], partial: dict[str, Any]) -> bool:
    return all(k in combo and combo[k] == v for k, v in partial.items())


def expand_matrix(matrix: Any) -> list[dict[str, Any]]:
    """All combinations, in GitHub's order; ``[]`` only for an empty matrix."""
    if matrix is None:
        return []
    if not isinstance(matrix, dict):
        raise MatrixError("strategy.matrix must be a mapping")
    include = matrix.get("include") or []
    exclude = matrix.get("exclude") or []
    if not isinstance(include, list) or not isinstance(exclude, list):
        raise MatrixError("matrix include and exclude must be lists")
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for key, values in axes.items():
        if not isinstance(values, list):
            raise MatrixError(f"matrix.{key} must be a list, got {values!r}")
        if not values:
            raise MatrixError(f"matrix.{key} must not be empty")
    combos: list[dict[str, Any]] = []
    if axes:
        keys = list(axes)
        combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]
    for ex in exclude:
        if not isinstance(ex, dict):
            raise MatrixError("each matrix exclude must be a mapping")
        combos = [c for c in combos if not _matches(c, ex)]
    originals = [dict(c) for c in combos]
    extra: list[dict[str, Any]] = []
    for inc in include:
        if not isinstance(inc, dict):
            raise MatrixError("each matrix include must be a mapping")
        added = False
        for combo, original in zip(combos, originals, strict=True):
            # An include extends every combination whose original values it does not contradict.
            if all(original[k] == v for k, v in inc.items() if k in original):
                combo.update({k: v for k, v in inc.items()})
                added = True
        if not added:
            extra.append(dict(inc))
    return combos + extra


def filter_combos(combos: list[dict[str, Any]], wanted: dict[str, str]) -> list[dict[str, Any]]:
    """Keep the combinations whose values (as strings) match every ``--matrix key=value``."""
    from runcache.runner.workflow import value_string

    if not wanted:
        return combos
    return [c for c in combos if all(k in c and value_string(c[k]) == v for k, v in wanted.items())]
