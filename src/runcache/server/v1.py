"""Legacy v1 protocol: `{ACTIONS_CACHE_URL}_apis/artifactcache/...` as @actions/cache (v1 path) speaks it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runcache.core.errors import CacheError, EntryTooLarge, InvalidRequest, StorageFull, TooManyUploads
from runcache.core.ranges import parse_content_range
from runcache.server.common import download_location, identify, iso, parse_int, read_json, state
from runcache.server.errors import classify
from runcache.server.streams import receive_into

log = logging.getLogger("runcache.v1")
Handler = Callable[[Request], Awaitable[Response]]


def _error(exc: CacheError, status: int | None = None) -> JSONResponse:
    status = status or classify(exc)[0]
    # The client reads `message` from an Azure DevOps-style error object.
    return JSONResponse({"message": str(exc), "typeKey": type(exc).__name__, "errorCode": 0}, status_code=status)


def v1_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except CacheError as exc:
            return _error(exc)
        except Exception:
            log.exception("v1 %s %s failed", request.method, request.url.path)
            return JSONResponse({"message": "internal error"}, status_code=500)

    return wrapped


def _entry_id(request: Request) -> int:
    raw = request.path_params["cache_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidRequest(f"cache id must be a number, got {raw!r}")
    return int(raw)


@v1_errors
async def lookup(request: Request) -> Response:
    ident = await identify(request)
    keys_param = request.query_params.get("keys", "")
    version = request.query_params.get("version", "")
    if not keys_param:
        raise InvalidRequest("query parameter keys is required")
    keys = keys_param.split(",")
    svc = state(request).service
    result = await run_in_threadpool(svc.lookup, ident, keys, version)
    if result is None:
        return Response(status_code=204)
    e = result.entry
    return JSONResponse(
        {
            "scope": e.scope,
            "cacheKey": e.key,
            "cacheVersion": e.version,
            "creationTime": iso(e.created_at),
            "archiveLocation": download_location(request, e),
        }
    )


@v1_errors
async def list_caches(request: Request) -> Response:
    ident = await identify(request)
    key = request.query_params.get("key", "")
    if not key:
        raise InvalidRequest("query parameter key is required")
    entries = await run_in_threadpool(state(request).service.list_for_key, ident, key)
    return JSONResponse(
        {
            "totalCount": len(entries),
            "artifactCaches": [
                {"cacheKey": e.key, "cacheVersion": e.version, "scope": e.scope, "creationTime": iso(e.created_at)}
                for e in entries
            ],
        }
    )


@v1_errors
async def reserve(request: Request) -> Response:
    ident = await identify(request)
    body = await read_json(request)
    size = body.get("cacheSize")
    declared = None if size is None else parse_int(size, "cacheSize", minimum=0)
    try:
        entry = await run_in_threadpool(
            state(request).service.reserve, ident, body.get("key"), body.get("version"), declared
        )
    except (StorageFull, EntryTooLarge, TooManyUploads) as exc:
        # The client logs a 400's message as a warning and goes on; other codes read as contention.
        return _error(exc, 400)
    return JSONResponse({"cacheId": entry.id}, status_code=201)


@v1_errors
async def upload_chunk(request: Request) -> Response:
    ident = await identify(request)
    svc = state(request).service
    entry = await run_in_threadpool(svc.upload_for, ident, _entry_id(request))
    start, end = parse_content_range(request.headers.get("content-range"))
    writer = await run_in_threadpool(svc.chunk_writer, entry, start, end)
    try:
        await receive_into(request, writer)
    finally:
        await run_in_threadpool(svc.drop_if_out_of_space, entry.id)
    return Response(status_code=204)


@v1_errors
async def commit(request: Request) -> Response:
    ident = await identify(request)
    svc = state(request).service
    upload_id = _entry_id(request)
    body = await read_json(request)
    if "size" not in body:
        raise InvalidRequest('body must carry the archive size: {"size": <bytes>}')
    await run_in_threadpool(svc.commit_upload, ident, upload_id, parse_int(body["size"], "size", minimum=0))
    return Response(status_code=204)


@v1_errors
async def abandon(request: Request) -> Response:
    """The CLI gives up its own upload (Ctrl-C, a cancelled job) so the key is free at once, not after
    the reservation TTL. Only the reserving token may; everyone else gets 404, as for a commit."""
    ident = await identify(request)
    await run_in_threadpool(state(request).service.abandon_own_upload, ident, _entry_id(request))
    return Response(status_code=204)


routes = [
    Route("/_apis/artifactcache/cache", lookup, methods=["GET"]),
    Route("/_apis/artifactcache/caches", list_caches, methods=["GET"]),
    Route("/_apis/artifactcache/caches", reserve, methods=["POST"]),
    Route("/_apis/artifactcache/caches/{cache_id}", upload_chunk, methods=["PATCH"]),
    Route("/_apis/artifactcache/caches/{cache_id}", commit, methods=["POST"]),
    Route("/_apis/artifactcache/caches/{cache_id}", abandon, methods=["DELETE"]),
]
