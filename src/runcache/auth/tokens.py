"""runcache's own job tokens: HS256 JWTs carrying the repository and GitHub's `ac` scope claim."""

from __future__ import annotations

import time
import uuid

import jwt

from runcache.core.errors import Unauthenticated
from runcache.core.scopes import Identity, Scope, scopes_from_ac, scopes_to_ac

ISSUER = "runcache"
JOB_AUDIENCE = "runcache:cache"


class TokenIssuer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(
        self, *, repository: str, scopes: tuple[Scope, ...], ttl_seconds: int = 6 * 3600, subject: str = "job"
    ) -> str:
        if "/" not in repository.strip("/"):
            raise ValueError(f"repository must look like OWNER/NAME, got {repository!r}")
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": JOB_AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": now + int(ttl_seconds),
            "jti": uuid.uuid4().hex,
            "repository": repository.strip("/"),
            "ac": scopes_to_ac(scopes),
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=JOB_AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "repository"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        return Identity(
            repository=claims["repository"], scopes=scopes_from_ac(claims.get("ac")), subject=str(claims.get("sub", ""))
        )
