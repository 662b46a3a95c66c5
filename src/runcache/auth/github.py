"""Verifier for runtime tokens minted by GitHub or GitHub Enterprise (RS256 JWTs checked against a JWKS).

Self-hosted runners can then send their own job token: the repository comes from the `repository`
(or `repository_id`) claim and the scopes from the `ac` claim, exactly as GitHub's cache service reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt

from runcache.core.errors import Unauthenticated
from runcache.core.scopes import Identity, scopes_from_ac

_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384"]


class GitHubTokenVerifier:
    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        jwks_file: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if not jwks_url and not jwks_file:
            raise ValueError("a JWKS URL or a JWKS file is required")
        self._issuer = issuer
        self._audience = audience
        self._client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600) if jwks_url else None
        self._keyset = jwt.PyJWKSet.from_dict(json.loads(Path(jwks_file).read_text())) if jwks_file else None

    def _key_for(self, token: str):
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        assert self._keyset is not None
        for k in self._keyset.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise Unauthenticated(f"no key with kid {kid!r} in the configured JWKS")

    def verify(self, token: str) -> Identity:
        try:
            key = self._key_for(token)
            options = {"require": ["exp"], "verify_aud": self._audience is not None}
            claims = jwt.decode(
                token, key, algorithms=_ALGORITHMS, issuer=self._issuer, audience=self._audience, options=options
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise Unauthenticated(f"invalid GitHub token: {exc}") from exc
        repository = claims.get("repository")
        if not repository and claims.get("repository_id") is not None:
            repository = f"id:{claims['repository_id']}"
        if not repository:
            raise Unauthenticated("GitHub token carries no repository claim")
        return Identity(
            repository=str(repository), scopes=scopes_from_ac(claims.get("ac")), subject=str(claims.get("sub", ""))
        )
