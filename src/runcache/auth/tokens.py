"""runcache's own job tokens: HS256 JWTs carrying the repository and GitHub's `ac` scope claim."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from runcache.core.access import LEVEL_NAMES, LEVELS, Principal
from runcache.core.errors import Unauthenticated
from runcache.core.scopes import Identity, Scope, scopes_from_ac, scopes_to_ac

ISSUER = "runcache"
JOB_AUDIENCE = "runcache:cache"
ADMIN_AUDIENCE = "runcache:admin"


class TokenIssuer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _encode(self, audience: str, subject: str, ttl_seconds: int, **claims: object) -> str:
        now = int(time.time())
        registered = {
            "iss": ISSUER,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": now + int(ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({**registered, **claims}, self._key, algorithm="HS256")

    def _decode(self, token: str, audience: str, required: list[str]) -> dict[str, Any]:
        # The audience keeps job and management tokens apart although one key signs both.
        try:
            return jwt.decode(
                token, self._key, algorithms=["HS256"], audience=audience, issuer=ISSUER, options={"require": required}
            )
        except jwt.InvalidAudienceError:
            raise Unauthenticated(_wrong_kind(audience)) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "invalid token: it was signed with another secret than this server's (was it made with "
                "another --data-dir or RUNCACHE_SECRET?)"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc

    def issue(
        self, *, repository: str, scopes: tuple[Scope, ...], ttl_seconds: int = 6 * 3600, subject: str = "job"
    ) -> str:
        if "/" not in repository.strip("/"):
            raise ValueError(f"repository must look like OWNER/NAME, got {repository!r}")
        return self._encode(
            JOB_AUDIENCE, subject, ttl_seconds, repository=repository.strip("/"), ac=scopes_to_ac(scopes)
        )

    def verify(self, token: str) -> Identity:
        claims = self._decode(token, JOB_AUDIENCE, ["exp", "iat", "repository"])
        return Identity(
            repository=claims["repository"],
            scopes=scopes_from_ac(claims.get("ac")),
            subject=str(claims.get("sub", "")),
            token_id=str(claims.get("jti", "")),
        )

    # --- management tokens ---------------------------------------------------------------------
    def issue_admin(
        self,
        *,
        repository: str | None = None,
        org: str | None = None,
        site: bool = False,
        permission: str = "admin",
        ttl_seconds: int = 30 * 86400,
        subject: str = "admin",
    ) -> str:
        """A management token for one repository, one owner's repositories, or (site) all of them."""
        if sum([repository is not None, org is not None, site]) != 1:
            raise ValueError("a management token is for exactly one of a repository, an org, or the whole site")
        if permission not in LEVELS:
            raise ValueError(f"permission must be one of {', '.join(LEVELS)}, got {permission!r}")
        if repository is not None and (repository.count("/") != 1 or "" in repository.split("/")):
            raise ValueError(f"repository must look like OWNER/NAME, got {repository!r}")
        if org is not None and (not org or "/" in org):
            raise ValueError(f"org must be an owner name, got {org!r}")
        claims: dict[str, object] = {"perm": permission}
        if repository is not None:
            claims["repository"] = repository
        elif org is not None:
            claims["org"] = org
        else:
            claims["site"] = True
        return self._encode(ADMIN_AUDIENCE, subject, ttl_seconds, **claims)

    def verify_admin(self, token: str) -> Principal:
        claims = self._decode(token, ADMIN_AUDIENCE, ["exp", "iat", "perm"])
        level = LEVELS.get(claims["perm"])
        repository, org, site = claims.get("repository"), claims.get("org"), claims.get("site") is True
        if level is None or sum([isinstance(repository, str), isinstance(org, str), site]) != 1:
            raise Unauthenticated("invalid token: malformed management claims")
        return Principal(
            "admin",
            str(claims.get("sub", "")),
            level,
            repository=repository if isinstance(repository, str) else None,
            org=org if isinstance(org, str) else None,
            site=site,
        )


def _wrong_kind(expected: str) -> str:
    if expected == JOB_AUDIENCE:
        return (
            "invalid token: this is a management token; saving and restoring need a job token "
            "(runcache token --repo OWNER/NAME --ref REF)"
        )
    return "invalid token: this is a job token; managing caches needs a management token (runcache token --admin)"


def permission_name(level: int) -> str:
    return LEVEL_NAMES.get(level, "none")
