"""Verifier for runtime tokens minted by GitHub or GitHub Enterprise (RS256 JWTs checked against a JWKS).

Self-hosted runners can then send their own job token: the repository comes from the `repository`
(or `repository_id`) claim and the scopes from the `ac` claim, exactly as GitHub's cache service reads them.

An issuer is required: the JWKS says which keys may sign, the issuer says which service's tokens are
meant; without it a token of any service sharing those keys would pass.

A JWKS URL is fetched by one background thread, never by a request. Requests only read the last key
set that was loaded: a slow or hanging endpoint cannot take the server's worker threads (each is
needed for every other caller too), and fake tokens with made-up key ids cannot make the server
fetch on their behalf more than once per `kid_refresh_interval`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from runcache.core.access import repository_for_id
from runcache.core.errors import Unauthenticated
from runcache.core.scopes import Identity, scopes_from_ac

log = logging.getLogger("runcache.auth.github")
_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384"]
FETCH_TIMEOUT = 5.0  # seconds one JWKS fetch may take, connection to last byte
REFRESH_INTERVAL = 3600.0  # seconds between routine refreshes of a loaded key set
KID_REFRESH_INTERVAL = 30.0  # an unknown kid triggers at most one fetch per this many seconds
KID_WAIT = 1.0  # how long a request with an unknown kid waits for the refresh it may have triggered
MAX_JWKS_BYTES = 1024 * 1024
_RETRY_FIRST = (1.0, 5.0)  # backoff while no key set was ever loaded: from 1 s, at most 5 s
_RETRY_LATER = (5.0, 300.0)  # backoff for failed refreshes with a good key set in hand


class _Keys:
    """A loaded key set by kid."""

    def __init__(self, keyset: jwt.PyJWKSet) -> None:
        self.by_kid: dict[str | None, jwt.PyJWK] = {k.key_id: k for k in keyset.keys}

    def get(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A token without kid is fine only when there is no choice to make.
            return next(iter(self.by_kid.values())) if len(self.by_kid) == 1 else None
        return self.by_kid.get(kid)


def parse_jwks(data: Any) -> _Keys:
    if not isinstance(data, dict):
        raise jwt.PyJWKSetError("a JWKS must be a JSON object with a keys list")
    return _Keys(jwt.PyJWKSet.from_dict(data))


class RemoteJwks:
    """The key set behind a JWKS URL, kept fresh by one background thread (at most one fetch in flight)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = FETCH_TIMEOUT,
        refresh_interval: float = REFRESH_INTERVAL,
        kid_refresh_interval: float = KID_REFRESH_INTERVAL,
        kid_wait: float = KID_WAIT,
        startup_wait: float | None = None,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._refresh_interval = refresh_interval
        self._kid_refresh_interval = kid_refresh_interval
        self._kid_wait = kid_wait
        self._cond = threading.Condition()
        self._keys: _Keys | None = None
        self._attempts = 0  # finished fetches, successful or not
        self._fetching = False
        self._last_triggered = -float("inf")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runcache-jwks", daemon=True)
        self._thread.start()
        # A server that just started should not refuse its first jobs because the first fetch had not
        # landed yet: wait for that one attempt (bounded by the fetch timeout), whatever its outcome.
        bound = timeout + 1 if startup_wait is None else startup_wait
        with self._cond:
            self._cond.wait_for(lambda: self._attempts > 0, timeout=bound)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- requests ----------------------------------------------------------------------------------
    def key_for(self, kid: str | None) -> jwt.PyJWK:
        with self._cond:
            keys = self._keys
        if keys is None:
            self._trigger()
            raise Unauthenticated("JWKS not available yet: the server could not fetch its GitHub signing keys")
        found = keys.get(kid)
        if found is not None:
            return found
        if self._trigger():
            # This request asked for the fetch: a key GitHub just rotated in is found if the fetch is quick.
            with self._cond:
                seen = self._attempts
                self._cond.wait_for(lambda: self._attempts > seen, timeout=self._kid_wait)
                keys = self._keys
            found = keys.get(kid) if keys is not None else None
            if found is not None:
                return found
        raise Unauthenticated(f"no key with kid {kid!r} in the GitHub JWKS")

    def _trigger(self) -> bool:
        """Ask the background thread for a fetch, at most once per `kid_refresh_interval`; True if asked."""
        now = time.monotonic()
        with self._cond:
            if self._fetching or now - self._last_triggered < self._kid_refresh_interval:
                return False
            self._last_triggered = now
        self._wake.set()
        return True

    # --- the background thread ---------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        delay = 0.0
        while not self._stop.is_set():
            if delay:
                self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            ok = self._fetch_once()
            if ok:
                failures, delay = 0, self._refresh_interval
            else:
                failures += 1
                first, cap = _RETRY_FIRST if self._keys is None else _RETRY_LATER
                delay = min(cap, first * 2 ** (failures - 1))

    def _fetch_once(self) -> bool:
        with self._cond:
            self._fetching = True
        keys: _Keys | None = None
        try:
            keys = parse_jwks(json.loads(self._download()))
        except Exception as exc:  # any failure keeps the last good key set; the log says why
            log.warning("fetching the GitHub JWKS from %s failed: %s", self.url, exc)
        with self._cond:
            self._fetching = False
            self._attempts += 1
            if keys is not None:
                self._keys = keys
            self._cond.notify_all()
        return keys is not None

    def _download(self) -> bytes:
        # httpx's timeout bounds each network step; the deadline bounds a server trickling bytes.
        deadline = time.monotonic() + self._timeout
        body = bytearray()
        with httpx.stream("GET", self.url, timeout=self._timeout, follow_redirects=True) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS response is too large")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JWKS fetch took longer than {self._timeout:g} s")
        return bytes(body)


class GitHubTokenVerifier:
    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        jwks_file: Path | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        fetch_timeout: float = FETCH_TIMEOUT,
        kid_refresh_interval: float = KID_REFRESH_INTERVAL,
    ) -> None:
        if not jwks_url and not jwks_file:
            raise ValueError("a JWKS URL or a JWKS file is required")
        if not issuer:
            raise ValueError(
                "GitHub runtime tokens need an issuer: set --github-issuer (RUNCACHE_GITHUB_ISSUER) to the `iss` "
                "of your GitHub's tokens; without it a token of any issuer signed by these keys would be accepted"
            )
        self._issuer = issuer
        self._audience = audience
        self._remote: RemoteJwks | None = None
        self._static: _Keys | None = None
        if jwks_file:
            self._static = parse_jwks(json.loads(Path(jwks_file).read_text()))
        else:
            assert jwks_url is not None
            self._remote = RemoteJwks(jwks_url, timeout=fetch_timeout, kid_refresh_interval=kid_refresh_interval)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()

    def _key_for(self, kid: str | None) -> jwt.PyJWK:
        if self._remote is not None:
            return self._remote.key_for(kid)
        assert self._static is not None
        found = self._static.get(kid)
        if found is None:
            raise Unauthenticated(f"no key with kid {kid!r} in the configured JWKS")
        return found

    def verify(self, token: str) -> Identity:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid GitHub token: {exc}") from exc
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("invalid GitHub token: kid must be a string")
        try:
            key = self._key_for(kid)
        except Unauthenticated as exc:
            raise Unauthenticated(f"invalid GitHub token: {exc}") from None
        try:
            options = {"require": ["exp", "iss"], "verify_aud": self._audience is not None}
            claims = jwt.decode(
                token, key.key, algorithms=_ALGORITHMS, issuer=self._issuer, audience=self._audience, options=options
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid GitHub token: {exc}") from exc
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    repository = claims.get("repository")
    if repository:
        # GitHub's claim is always owner/name; anything else could pose as an `id:<n>` repository.
        if not isinstance(repository, str) or "/" not in repository.strip("/"):
            raise Unauthenticated("GitHub token carries a malformed repository claim")
    elif claims.get("repository_id") is not None:
        try:
            repository = repository_for_id(claims["repository_id"])
        except ValueError:
            raise Unauthenticated("GitHub token carries a malformed repository_id claim") from None
    else:
        raise Unauthenticated("GitHub token carries no repository claim")
    return Identity(
        repository=repository,
        scopes=scopes_from_ac(claims.get("ac")),
        subject=str(claims.get("sub", "")),
        token_id=_token_id(claims),
    )


def _token_id(claims: dict[str, Any]) -> str:
    """The token's own id, so an upload belongs to the job token that reserved it. GitHub's runtime
    tokens carry a `jti`; a long one is hashed to fit the column, a missing one leaves uploads bound
    to repository and scope only."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        return ""
    return jti if len(jti) <= 64 else hashlib.sha256(jti.encode()).hexdigest()
