"""Authentication: job tokens (runcache-issued or GitHub-issued) and signed blob URLs."""

from __future__ import annotations

import jwt

from runcache.auth.github import GitHubTokenVerifier
from runcache.auth.tokens import ADMIN_AUDIENCE, ISSUER, TokenIssuer
from runcache.core.access import Principal
from runcache.core.errors import Unauthenticated
from runcache.core.scopes import Identity


class Authenticator:
    """Picks the verifier by the token's issuer; the request body never contributes to identity."""

    def __init__(self, issuer: TokenIssuer, github: GitHubTokenVerifier | None = None) -> None:
        self._issuer = issuer
        self._github = github

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            raise Unauthenticated("authentication required: send Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authentication required: send Authorization: Bearer <token>")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        if unverified.get("iss") == ISSUER:
            return self._issuer.verify(token)
        if self._github is not None:
            return self._github.verify(token)
        raise Unauthenticated("token was not issued by this runcache server and no GitHub verifier is configured")

    def principal(self, authorization: str | None, *, admin_only: bool = False) -> Principal:
        """The caller of the management API: a management token, or (unless admin_only) a job token.

        Accepts `Bearer <t>` and GitHub's older `token <t>` scheme (what Octokit sends)."""
        if not authorization:
            raise Unauthenticated("Requires authentication")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "token") or not token:
            raise Unauthenticated("Requires authentication")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False, "verify_aud": False})
        except jwt.PyJWTError:
            raise Unauthenticated("Bad credentials") from None
        aud = unverified.get("aud")
        if unverified.get("iss") == ISSUER and (aud == ADMIN_AUDIENCE or aud == [ADMIN_AUDIENCE]):
            return self._issuer.verify_admin(token)
        if admin_only:
            raise Unauthenticated("a management token is required (runcache token --admin)")
        return Principal.from_job(self.identify(f"Bearer {token}"))
