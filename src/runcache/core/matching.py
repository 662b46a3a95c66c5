"""The lookup rule, once for every protocol.

Per readable scope, in the token's order: the exact primary key, then the newest-created entry whose
key starts with the primary key, then for each restore key its exact match and then its newest
prefix match. Keys compare case-insensitively; versions must be identical (the store pre-filters
on version and repository, this module decides among what is left).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from runcache.core.keys import fold


@dataclass(frozen=True)
class Candidate:
    id: int
    scope: str
    key: str
    version: str
    created_at: datetime


@dataclass(frozen=True)
class Match:
    entry: Candidate
    exact: bool  # True only when the primary key matched exactly: drives cache-hit=true


def lookup_prefixes(keys: Sequence[str]) -> list[str]:
    """The folded prefixes a store must fetch candidates for: every key is also a prefix."""
    seen: list[str] = []
    for k in keys:
        f = fold(k)
        if f not in seen:
            seen.append(f)
    return seen


def find_match(
    candidates: Iterable[Candidate], keys: Sequence[str], version: str, scopes: Sequence[str]
) -> Match | None:
    by_scope: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.version == version:
            by_scope.setdefault(c.scope, []).append(c)
    primary = fold(keys[0])
    for scope in scopes:
        pool = by_scope.get(scope)
        if not pool:
            continue
        for index, key in enumerate(keys):
            wanted = fold(key)
            exact = [c for c in pool if fold(c.key) == wanted]
            if exact:
                newest = max(exact, key=_age)
                return Match(newest, exact=(index == 0 and fold(newest.key) == primary))
            prefixed = [c for c in pool if fold(c.key).startswith(wanted)]
            if prefixed:
                return Match(max(prefixed, key=_age), exact=False)
    return None


def _age(c: Candidate) -> tuple[datetime, int]:
    # Ties on the clock are broken by id so the answer is deterministic.
    return (c.created_at, c.id)
