"""v2 protocol: twirp `github.actions.results.api.v1.CacheService`, JSON or protobuf.

The request's Content-Type picks the encoding of both bodies: `application/protobuf` (OpenDAL's ghac
service, so sccache) or `application/json` (@actions/cache, buildx). JSON field names follow the
proto (snake_case) on output; input also accepts lowerCamelCase, int64 as number or string, and
`null` for lists, because other clients (buildx's Go client) send those. A protobuf body is decoded
into the dict @actions/cache's JSON would be, so one handler serves both encodings.
Every error is a JSON `{"code","msg"}` whatever the request encoding (twirp's rule): a non-JSON body
makes @actions/cache retry for ~30 s.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runcache.core.errors import (
    AlreadyExists,
    CacheError,
    EntryTooLarge,
    IncompleteUpload,
    InvalidRequest,
    NotFound,
    StorageFull,
    TooManyUploads,
    UploadBusy,
    UploadElsewhere,
    WriteDenied,
)
from runcache.server import cacheservice_pb2 as pb
from runcache.server.common import (
    MAX_JSON_BODY,
    download_location,
    identify,
    parse_int,
    read_capped,
    read_json,
    state,
    upload_location,
)
from runcache.server.errors import classify

log = logging.getLogger("runcache.twirp")
SERVICE = "github.actions.results.api.v1.CacheService"
JSON = "application/json"
PROTOBUF = "application/protobuf"


def twirp_error(code: str, msg: str, status: int) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=status)


def _field(body: dict[str, Any], snake: str) -> Any:
    if snake in body:
        return body[snake]
    parts = snake.split("_")
    return body.get(parts[0] + "".join(p.title() for p in parts[1:]))


def _str(body: dict[str, Any], name: str) -> str:
    value = _field(body, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


async def get_download_url(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    ident = await identify(request)
    restore = _field(body, "restore_keys") or []
    if not isinstance(restore, list) or not all(isinstance(k, str) for k in restore):
        raise InvalidRequest("restore_keys must be a list of strings")
    key = _str(body, "key")
    result = await run_in_threadpool(state(request).service.lookup, ident, [key, *restore], _str(body, "version"))
    if result is None:
        return {"ok": False, "signed_download_url": "", "matched_key": ""}
    return {
        "ok": True,
        "signed_download_url": download_location(request, result.entry),
        "matched_key": result.entry.key,
    }


async def create_entry(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    ident = await identify(request)
    svc = state(request).service
    try:
        entry = await run_in_threadpool(svc.reserve, ident, _str(body, "key"), _str(body, "version"), None)
    except (AlreadyExists, WriteDenied, StorageFull, TooManyUploads) as exc:
        # The client reports a 200 `ok:false` body's message as a warning and goes on without saving.
        return {"ok": False, "signed_upload_url": "", "message": str(exc)}
    return {"ok": True, "signed_upload_url": upload_location(request, entry), "message": ""}


async def finalize_entry(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    ident = await identify(request)
    svc = state(request).service
    size = parse_int(_field(body, "size_bytes") or 0, "size_bytes", minimum=0)
    try:
        committed = await run_in_threadpool(svc.finalize_by_key, ident, _str(body, "key"), _str(body, "version"), size)
    except (NotFound, IncompleteUpload, WriteDenied, UploadBusy, UploadElsewhere, EntryTooLarge) as exc:
        return {"ok": False, "entry_id": "0", "message": str(exc)}
    return {"ok": True, "entry_id": str(committed.id), "message": ""}


Handler = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]

METHODS: dict[str, Handler] = {
    "GetCacheEntryDownloadURL": get_download_url,
    "CreateCacheEntry": create_entry,
    "FinalizeCacheEntryUpload": finalize_entry,
}
# Each method's (request, response) protobuf messages, as the client's cache.proto pairs them.
MESSAGES: dict[str, tuple[type[Message], type[Message]]] = {
    "GetCacheEntryDownloadURL": (pb.GetCacheEntryDownloadURLRequest, pb.GetCacheEntryDownloadURLResponse),
    "CreateCacheEntry": (pb.CreateCacheEntryRequest, pb.CreateCacheEntryResponse),
    "FinalizeCacheEntryUpload": (pb.FinalizeCacheEntryUploadRequest, pb.FinalizeCacheEntryUploadResponse),
}


def decode_protobuf(body: bytes, message_type: type[Message]) -> dict[str, Any]:
    """The dict @actions/cache's JSON would carry for the same message (snake_case names, int64 as
    strings, defaults left out), so the handlers and their checks are the JSON path's."""
    message = message_type()
    try:
        # upb also refuses invalid UTF-8 in string fields and over-deep nesting here.
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed protobuf body: {exc}") from exc
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def encode_protobuf(result: dict[str, Any], message_type: type[Message]) -> bytes:
    # ParseDict takes the int64 entry_id as the decimal string the JSON path answers with; unknown
    # keys raise, so a handler field the proto lacks fails loudly in tests instead of vanishing.
    return json_format.ParseDict(result, message_type()).SerializeToString()


async def cache_service(request: Request) -> Response:
    method = request.path_params["method"]
    handler = METHODS.get(method)
    if handler is None:
        return twirp_error("bad_route", f"no method {method} on {SERVICE}", 404)
    ctype = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if ctype not in (JSON, PROTOBUF, ""):
        # twirp's own servers answer an unknown Content-Type with bad_route too.
        return twirp_error("bad_route", f"unsupported Content-Type {ctype!r}: use {JSON} or {PROTOBUF}", 404)
    try:
        if ctype == PROTOBUF:
            request_type, response_type = MESSAGES[method]
            # The same 1 MiB cap as a JSON body: every message here is a few keys and a URL.
            body = decode_protobuf(await read_capped(request, MAX_JSON_BODY), request_type)
            result = await handler(request, body)
            return Response(encode_protobuf(result, response_type), media_type=PROTOBUF)
        body = await read_json(request)
        return JSONResponse(await handler(request, body))
    except CacheError as exc:
        status, code, _ = classify(exc)
        return twirp_error(code, str(exc), status)
    except Exception:
        log.exception("twirp %s failed", method)
        return twirp_error("internal", "internal error", 500)


_HOP_HEADERS = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "trailer",
    "expect",  # 100-continue is answered between the client and runcache, not relayed
}


# twirp's route grammar: /twirp/<package>.<Service>/<Method>, proto identifiers only. Checked before
# forwarding so `..`, decoded `%2e%2e`, `?` or `#` in a segment cannot reach other upstream paths.
_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}(?:\.[A-Za-z_][A-Za-z0-9_]{0,127}){0,15}")
_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class _BodyTooLarge(Exception):
    pass


def _too_large(cap: int) -> JSONResponse:
    return twirp_error("resource_exhausted", f"request body is larger than the {cap} bytes runcache forwards", 413)


async def _capped_body(request: Request, cap: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, so only one chunk at a time is held; stops past `cap` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _BodyTooLarge
        yield chunk


async def _relay(upstream_resp: httpx.Response, client: httpx.AsyncClient) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream_resp.aiter_raw():
            yield chunk
    finally:
        await upstream_resp.aclose()
        await client.aclose()


async def other_service(request: Request) -> Response:
    """Artifact uploads share ACTIONS_RESULTS_URL with the cache: forward what is not ours."""
    upstream = state(request).settings.results_upstream
    service, method = request.path_params["service"], request.path_params["method"]
    if not (_SERVICE_NAME.fullmatch(service) and _METHOD_NAME.fullmatch(method)):
        return twirp_error("bad_route", f"no twirp route {service[:200]!r}/{method[:200]!r}", 404)
    if not upstream:
        return twirp_error(
            "bad_route",
            f"{service}/{method} is not served by runcache and no results upstream is "
            "configured (set RUNCACHE_RESULTS_UPSTREAM or --results-upstream)",
            404,
        )
    # Forwarded calls are small JSON (artifact metadata; the bytes go to signed URLs), so a generous
    # cap still stops one unauthenticated POST from streaming gigabytes through the server.
    cap = state(request).settings.forward_max_body_mb * 1024 * 1024
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            return twirp_error("malformed", f"malformed Content-Length {declared[:40]!r}", 400)
        if len(declared) > 19 or int(declared) > cap:
            return _too_large(cap)
        headers["content-length"] = declared  # upstream gets the same framing, not chunks
    url = f"{upstream.rstrip('/')}/twirp/{service}/{method}"
    client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))
    try:
        upstream_req = client.build_request("POST", url, content=_capped_body(request, cap), headers=headers)
        upstream_resp = await client.send(upstream_req, stream=True)
    except BaseException as exc:
        await client.aclose()  # on success, _relay closes it once the response is through
        if isinstance(exc, _BodyTooLarge):
            return _too_large(cap)
        if isinstance(exc, ClientDisconnect):
            return twirp_error("canceled", "the client went away while sending its request", 408)
        if isinstance(exc, httpx.HTTPError):
            return twirp_error("unavailable", f"results upstream {upstream} is unreachable: {exc}", 503)
        raise
    # Raw bytes pass through, so Content-Encoding and Content-Length still describe them.
    out_headers = {k: v for k, v in upstream_resp.headers.items() if k.lower() not in _HOP_HEADERS}
    if "content-length" in upstream_resp.headers:
        out_headers["content-length"] = upstream_resp.headers["content-length"]
    return StreamingResponse(_relay(upstream_resp, client), status_code=upstream_resp.status_code, headers=out_headers)


async def no_route(request: Request) -> Response:
    # Anything under /twirp/ answers in twirp's JSON shape, never Starlette's plain-text 405.
    if request.method != "POST":
        return twirp_error("bad_route", "twirp requests must be POST", 404)
    return twirp_error("bad_route", "no twirp route: expected /twirp/<package.Service>/<Method>", 404)


routes = [
    Route(f"/twirp/{SERVICE}/{{method}}", cache_service, methods=["POST"]),
    Route("/twirp/{service}/{method}", other_service, methods=["POST"]),
    Route("/twirp/{rest:path}", no_route, methods=["GET", "PUT", "DELETE", "PATCH", "POST"]),
]
