"""Shared pieces of the HTTP layer: identity from the request, signed URLs, time and body helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runcache.auth import Authenticator
from runcache.auth.signing import UrlSigner
from runcache.config import Settings
from runcache.core.errors import InvalidRequest
from runcache.core.scopes import Identity
from runcache.service import CacheService

MAX_JSON_BODY = 1024 * 1024
ACCOUNT = "runcache"  # first path segment: the Azure SDK parses path-style URLs as /<account>/<container>/<blob>
UPLOADS = "uploads"
ARCHIVES = "archives"


class AppState:
    def __init__(self, settings: Settings, service: CacheService, auth: Authenticator, signer: UrlSigner) -> None:
        self.settings = settings
        self.service = service
        self.auth = auth
        self.signer = signer


def state(request: Request) -> AppState:
    return request.app.state.runcache


async def identify(request: Request) -> Identity:
    return await run_in_threadpool(state(request).auth.identify, request.headers.get("authorization"))


def public_base(request: Request) -> str:
    configured = state(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def signed_url(request: Request, container: str, entry_id: int, purpose: str) -> str:
    st = state(request)
    params = st.signer.sign(purpose, f"{container}/{entry_id}", st.settings.url_ttl)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{public_base(request)}/{ACCOUNT}/{container}/{entry_id}?{query}"


async def read_capped(request: Request, limit: int, what: str = "request body") -> bytes:
    """A small body read whole, refused as soon as it passes `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"{what} is too large")
    return b"".join(parts)


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_capped(request, MAX_JSON_BODY)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("JSON body must be an object")
    return data


def iso(ts: datetime) -> str:
    """GitHub's timestamp shape: ISO-8601 UTC with milliseconds and Z."""
    return ts.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_int(value: Any, name: str) -> int:
    """int64 fields arrive as JSON numbers (Go clients) or strings (protobuf JSON); both are fine."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise InvalidRequest(f"{name} must be an integer, got {value!r}")
