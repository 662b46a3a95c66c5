"""GitHub's REST API for cache management: the same paths, parameters, defaults, status codes and JSON.

Served at the root and under `/api/v3` (GitHub Enterprise style), so Octokit, `gh` and scripts work
with a base URL. Errors use GitHub's body shape: `{"message", "documentation_url", "status"}`, with
`errors` for 422 validation failures. The OpenAPI document at `/openapi.json` describes all of it.

A repository's operations are served under `/repos/{owner}/{repo}` and, as GitHub also does, under
`/repositories/{repository_id}`: that is the only address of caches saved with a GitHub token that
names its repository by id alone (stored as `id:<n>`, see `core.access.repository_for_id`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from runcache.core.access import ADMIN, WRITE, Forbidden, Principal
from runcache.core.entries import EntryInfo
from runcache.core.errors import CacheError, InvalidRequest, NotFound, Unauthenticated
from runcache.core.listing import ValidationFailed, link_header, parse_page, parse_sort, validate_name
from runcache.server.common import iso, public_base, read_json, state
from runcache.server.openapi import API_PREFIX, openapi_document
from runcache.services.management import MAX_ID, Management, repository_from_path

log = logging.getLogger("runcache.rest")
Handler = Callable[[Request], Awaitable[Response]]
DOCS = "https://docs.github.com/rest/actions/cache"
API_VERSION = "2022-11-28"


def management(request: Request) -> Management:
    return request.app.state.management


async def principal(request: Request) -> Principal:
    auth = state(request).auth
    return await run_in_threadpool(auth.principal, request.headers.get("authorization"))


def github_error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"message": message, **extra, "documentation_url": DOCS, "status": str(status)}
    headers = {"WWW-Authenticate": 'Bearer realm="runcache"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(exc: CacheError, *, validation_status: int = 422) -> JSONResponse:
    if isinstance(exc, Unauthenticated):
        message = "Requires authentication" if str(exc) == "Requires authentication" else "Bad credentials"
        return github_error(401, message)
    if isinstance(exc, Forbidden):
        return github_error(403, str(exc))
    if isinstance(exc, NotFound):
        return github_error(404, "Not Found")
    if isinstance(exc, ValidationFailed):
        err = {"resource": "ActionsCache", "field": exc.field, "code": exc.code, "message": str(exc)}
        return github_error(validation_status, "Validation Failed", errors=[err])
    if isinstance(exc, InvalidRequest):
        return github_error(400, str(exc))
    return github_error(403, str(exc))  # ReadDenied / WriteDenied


def rest_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            response = await handler(request)
        except CacheError as exc:
            response = error_response(exc, validation_status=400 if request.method == "PUT" else 422)
        except Exception:
            log.exception("REST %s %s failed", request.method, request.url.path)
            response = github_error(500, "Server Error")
        response.headers["X-GitHub-Api-Version-Selected"] = API_VERSION
        return response

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def entry_json(e: EntryInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "ref": e.scope,
        "key": e.key,
        "version": e.version,
        "last_accessed_at": iso(e.last_accessed_at),
        "created_at": iso(e.created_at),
        "size_in_bytes": e.size or 0,
    }


def cache_list_json(total: int, entries: list[EntryInfo]) -> dict[str, Any]:
    return {"total_count": total, "actions_caches": [entry_json(e) for e in entries]}


def _repo(request: Request) -> str:
    return repository_from_path(request.path_params)


def _page_headers(request: Request, page, total: int) -> dict[str, str]:
    link = link_header(public_base(request) + request.url.path, request.query_params.multi_items(), page, total)
    return {"Link": link} if link else {}


@rest_errors
async def list_caches(request: Request) -> Response:
    who = await principal(request)
    repository = _repo(request)
    q = request.query_params
    page = parse_page(q.get("per_page"), q.get("page"))
    sort, direction = parse_sort(q.get("sort"), q.get("direction"))
    total, entries = await run_in_threadpool(
        management(request).list_caches,
        who,
        repository,
        key=q.get("key") or None,
        ref=q.get("ref"),  # given but empty selects nothing, as any ref that cannot match
        sort=sort,
        direction=direction,
        page=page,
    )
    return JSONResponse(cache_list_json(total, entries), headers=_page_headers(request, page, total))


@rest_errors
async def delete_by_key(request: Request) -> Response:
    who = await principal(request)
    repository = _repo(request)
    q = request.query_params
    key = q.get("key")
    if not key:
        # Checked after authorization, so an unauthorised caller learns nothing from the 422.
        await run_in_threadpool(who.require, repository, WRITE)
        raise ValidationFailed("key", "key is required", code="missing_field")
    # `ref=` given but blank must not mean "every ref": the rule is Management.delete_by_key's.
    gone = await run_in_threadpool(management(request).delete_by_key, who, repository, key, q.get("ref"))
    return JSONResponse(cache_list_json(len(gone), gone))


@rest_errors
async def delete_by_id(request: Request) -> Response:
    who = await principal(request)
    repository = _repo(request)
    raw = request.path_params["cache_id"]
    entry_id = int(raw) if raw.isdigit() and len(raw) <= 19 else 0
    if not 0 < entry_id <= MAX_ID:
        await run_in_threadpool(who.require, repository, WRITE)
        raise NotFound(f"no cache with id {raw}")
    await run_in_threadpool(management(request).delete_by_id, who, repository, entry_id)
    return Response(status_code=204)


@rest_errors
async def repo_usage(request: Request) -> Response:
    who = await principal(request)
    usage = await run_in_threadpool(management(request).repo_usage, who, _repo(request))
    return JSONResponse(
        {
            "full_name": usage.full_name,
            "active_caches_size_in_bytes": usage.size,
            "active_caches_count": usage.count,
        }
    )


def _org(request: Request) -> str:
    try:
        return validate_name(request.path_params["org"], "organization")
    except InvalidRequest:
        raise NotFound("organization not found") from None


@rest_errors
async def org_usage(request: Request) -> Response:
    who = await principal(request)
    count, size = await run_in_threadpool(management(request).org_usage, who, _org(request))
    return JSONResponse({"total_active_caches_count": count, "total_active_caches_size_in_bytes": size})


@rest_errors
async def org_usage_by_repository(request: Request) -> Response:
    who = await principal(request)
    org = _org(request)
    q = request.query_params
    page = parse_page(q.get("per_page"), q.get("page"))
    total, rows = await run_in_threadpool(management(request).org_usage_by_repository, who, org, page)
    body = {
        "total_count": total,
        "repository_cache_usages": [
            {"full_name": r.full_name, "active_caches_size_in_bytes": r.size, "active_caches_count": r.count}
            for r in rows
        ],
    }
    return JSONResponse(body, headers=_page_headers(request, page, total))


@rest_errors
async def get_storage_limit(request: Request) -> Response:
    who = await principal(request)
    limits = await run_in_threadpool(management(request).limits, who, _repo(request))
    return JSONResponse({"max_cache_size_gb": limits.storage_gb})


@rest_errors
async def get_retention_limit(request: Request) -> Response:
    who = await principal(request)
    limits = await run_in_threadpool(management(request).limits, who, _repo(request))
    return JSONResponse({"max_cache_retention_days": limits.retention_days})


async def _put_limit(request: Request, field: str, setter_name: str) -> Response:
    who = await principal(request)
    repository = _repo(request)
    mgmt = management(request)
    await run_in_threadpool(who.require, repository, ADMIN)
    body = await read_json(request)
    if field not in body:
        raise ValidationFailed(field, f"{field} is required", code="missing_field")
    await run_in_threadpool(getattr(mgmt, setter_name), who, repository, body[field])
    return Response(status_code=204)


@rest_errors
async def put_storage_limit(request: Request) -> Response:
    return await _put_limit(request, "max_cache_size_gb", "set_storage_limit")


@rest_errors
async def put_retention_limit(request: Request) -> Response:
    return await _put_limit(request, "max_cache_retention_days", "set_retention_limit")


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


@rest_errors
async def unrouted(request: Request) -> Response:
    """Any other path under `/repositories/`: GitHub's JSON 404 (odd ids included), not the page's text."""
    raise NotFound("Not Found")


_REPO_OPERATIONS: list[tuple[str, Handler, str]] = [
    ("/actions/caches", list_caches, "GET"),
    ("/actions/caches", delete_by_key, "DELETE"),
    ("/actions/caches/{cache_id}", delete_by_id, "DELETE"),
    ("/actions/cache/usage", repo_usage, "GET"),
    ("/actions/cache/storage-limit", get_storage_limit, "GET"),
    ("/actions/cache/storage-limit", put_storage_limit, "PUT"),
    ("/actions/cache/retention-limit", get_retention_limit, "GET"),
    ("/actions/cache/retention-limit", put_retention_limit, "PUT"),
]
REPOSITORY_BASES = ("/repos/{owner}/{repo}", "/repositories/{repository_id}")

_api: list[BaseRoute] = [
    *(
        Route(base + path, handler, methods=[method])
        for base in REPOSITORY_BASES
        for path, handler, method in _REPO_OPERATIONS
    ),
    Route("/orgs/{org}/actions/cache/usage", org_usage, methods=["GET"]),
    Route("/orgs/{org}/actions/cache/usage-by-repository", org_usage_by_repository, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

routes: list[BaseRoute] = [
    *_api,
    Mount(API_PREFIX, routes=_api),
    # After the real routes: keeps `/repositories/...` out of the web page's `/{owner}/{repo}` paths.
    Route("/repositories/{rest:path}", unrouted),
]
