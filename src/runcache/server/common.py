"""Shared pieces of the HTTP layer: identity from the request, signed URLs, time and body helpers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from itertools import accumulate, chain
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from runcache.auth import Authenticator
from runcache.auth.signing import DOWNLOAD, UPLOAD, UrlSigner
from runcache.config import Settings
from runcache.core.entries import EntryInfo
from runcache.core.errors import InvalidRequest
from runcache.core.ranges import INT64_MAX, INT64_MIN
from runcache.core.scopes import Identity
from runcache.services.cache import CacheService

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


def download_location(request: Request, entry: EntryInfo) -> str:
    """Where a client downloads a found entry: straight from the object store when the server hands out
    direct URLs (`--downloads direct`), else this server's signed archive URL. Both the v1
    `archiveLocation` and the v2 `signed_download_url` take it: each client only ever GETs it (no HEAD,
    no Authorization header), which a presigned object-store URL accepts."""
    direct = state(request).service.direct_download_url(entry)
    return direct or signed_url(request, ARCHIVES, entry.id, DOWNLOAD)


def upload_location(request: Request, entry: EntryInfo) -> str:
    """Where a v2 client writes a reserved entry's archive: straight into the blob store when the server
    hands out direct URLs (`--transfers direct`), else this server's signed upload URL. @actions/cache
    writes either with the Azure SDK (Put Blob, or Put Block + Put Block List)."""
    direct = state(request).service.direct_upload_url(entry)
    return direct or signed_url(request, UPLOADS, entry.id, UPLOAD)


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


# Every body the protocols define nests a few levels; json.loads recurses per level and raises
# RecursionError (a 500 and a traceback in the log) on a 1 MiB body of brackets.
MAX_JSON_DEPTH = 32
# A JSON string, escapes included, or an unterminated one up to the end: matching from every quote
# without the optional end would rescan the rest of the body once per quote.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in `body`, counting brackets outside strings, in linear time."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    return max(chain((0,), accumulate(map(_BRACKET_STEP.__getitem__, brackets))))


async def read_json(request: Request) -> dict[str, Any]:
    body = await read_capped(request, MAX_JSON_BODY)
    if not body.strip():
        return {}
    # Counting openers is a fast C pass that clears every ordinary body without the full scan.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except ValueError as exc:
        # ValueError also covers bad UTF-8 and integer literals past Python's 4300-digit limit.
        raise InvalidRequest(f"malformed JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("JSON body must be an object")
    return data


def iso(ts: datetime) -> str:
    """GitHub's timestamp shape: ISO-8601 UTC with milliseconds and Z."""
    return ts.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_INT_TEXT = re.compile(r"\s*(-?[0-9]{1,20})\s*")


def parse_int(value: Any, name: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """int64 fields arrive as JSON numbers (Go clients) or strings (protobuf JSON); both are fine.

    Anything outside [minimum, maximum] (int64 unless narrowed) is the client's error: an unbounded
    Python int would otherwise overflow later in SQLite, a seek or a file size, as a 500."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (m := _INT_TEXT.fullmatch(value)):
        number = int(m.group(1))
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise InvalidRequest(f"{name} must be an integer, got {str(value)[:40]!r}")
    if not minimum <= number <= maximum:
        raise InvalidRequest(f"{name} must be between {minimum} and {maximum}")
    return number
