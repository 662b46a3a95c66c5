"""Signed blob URLs: HMAC-bound to one upload or entry, one purpose, and an expiry.

The blob endpoints receive no Authorization header (the Azure SDK and the plain download GET send
none), so the URL itself is the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from runcache.core.errors import Unauthenticated

UPLOAD = "w"
DOWNLOAD = "r"


class UrlSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, resource: str, expires: int) -> str:
        msg = f"{purpose}\n{resource}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def sign(self, purpose: str, resource: str, ttl_seconds: int) -> dict[str, str]:
        expires = int(time.time()) + int(ttl_seconds)
        return {"sp": purpose, "se": str(expires), "sig": self._mac(purpose, resource, expires)}

    def verify(self, purpose: str, resource: str, params: dict[str, str]) -> None:
        try:
            expires = int(params.get("se", ""))
        except ValueError:
            raise Unauthenticated("signed URL has no valid expiry") from None
        sig = params.get("sig", "")
        if params.get("sp") != purpose or not hmac.compare_digest(sig, self._mac(purpose, resource, expires)):
            raise Unauthenticated("signed URL signature does not match")
        if expires < time.time():
            raise Unauthenticated("signed URL has expired")
