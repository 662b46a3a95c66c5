"""Who may read and write which scopes.

A scope is a git ref (`refs/heads/main`, `refs/pull/7/merge`, `refs/tags/v1`). The identity of a
caller is derived from its token only, in the shape of GitHub's `ac` claim: an ordered list of
scopes with a permission bit-set (1 = read, 2 = write). Order is search order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runcache.core.errors import InvalidRequest, ReadDenied, WriteDenied

READ = 1
WRITE = 2
CACHE_MODES = ("read", "write", "write-only", "none")


@dataclass(frozen=True)
class Scope:
    name: str
    permission: int

    @property
    def readable(self) -> bool:
        return bool(self.permission & READ)

    @property
    def writable(self) -> bool:
        return bool(self.permission & WRITE)


@dataclass(frozen=True)
class Identity:
    """A verified caller: one repository and its ordered scopes."""

    repository: str
    scopes: tuple[Scope, ...] = field(default_factory=tuple)
    subject: str = ""
    token_id: str = ""  # the token's own id (jti): an upload belongs to the token that reserved it

    @property
    def readable_scopes(self) -> list[str]:
        return [s.name for s in self.scopes if s.readable]

    @property
    def write_scope(self) -> str | None:
        # Writes go to the run's own ref only: the first writable scope in the token.
        for s in self.scopes:
            if s.writable:
                return s.name
        return None

    def require_read(self) -> list[str]:
        scopes = self.readable_scopes
        if not scopes:
            raise ReadDenied(f"the token for {self.repository} grants no readable cache scope")
        return scopes

    def require_write(self) -> str:
        scope = self.write_scope
        if scope is None:
            raise WriteDenied(f"the token for {self.repository} grants no writable cache scope")
        return scope


def normalize_ref(ref: str) -> str:
    """Accept `main` as shorthand for `refs/heads/main`; full refs pass through."""
    ref = ref.strip()
    if not ref:
        raise InvalidRequest("a ref is required")
    if ref.startswith("refs/"):
        return ref
    return f"refs/heads/{ref}"


def build_scopes(
    ref: str, *, default_branch: str | None = None, base_ref: str | None = None, mode: str = "write"
) -> tuple[Scope, ...]:
    """Readable scopes are the run's ref, the PR base ref, then the default branch; writable only the own ref."""
    if mode not in CACHE_MODES:
        raise InvalidRequest(f"invalid cache mode {mode!r}; expected one of {', '.join(CACHE_MODES)}")
    own = normalize_ref(ref)
    others: list[str] = []
    for extra in (base_ref, default_branch):
        if extra:
            name = normalize_ref(extra)
            if name != own and name not in others:
                others.append(name)
    own_perm = {"write": READ | WRITE, "read": READ, "write-only": WRITE, "none": 0}[mode]
    other_perm = READ if mode in ("write", "read") else 0
    scopes = [Scope(own, own_perm)] if own_perm else []
    scopes += [Scope(name, other_perm) for name in others if other_perm]
    return tuple(scopes)


def scopes_to_ac(scopes: tuple[Scope, ...]) -> str:
    """GitHub puts the scope list in the `ac` claim as a JSON string."""
    return json.dumps([{"Scope": s.name, "Permission": s.permission} for s in scopes], separators=(",", ":"))


def scopes_from_ac(ac: Any) -> tuple[Scope, ...]:
    """Parse an `ac` claim (JSON string or already-decoded list); unknown shapes are an error, not a guess."""
    if ac is None:
        return ()
    if isinstance(ac, str):
        try:
            ac = json.loads(ac) if ac.strip() else []
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"malformed ac claim: {exc}") from exc
    if not isinstance(ac, list):
        raise InvalidRequest("malformed ac claim: expected a list of scopes")
    out: list[Scope] = []
    for item in ac:
        if not isinstance(item, dict):
            raise InvalidRequest("malformed ac claim: scope entries must be objects")
        name = item.get("Scope", item.get("scope"))
        perm = item.get("Permission", item.get("permission", 0))
        if not isinstance(name, str) or not name or not isinstance(perm, int):
            raise InvalidRequest("malformed ac claim: each scope needs a Scope string and a Permission number")
        out.append(Scope(name, perm))
    return tuple(out)
