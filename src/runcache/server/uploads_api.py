"""Uploads in progress in the management API: list them with the bytes received so far, and remove them,
so that an upload left behind by a cancelled job stops blocking its key at once.

    GET    /repos/{owner}/{repo}/actions/cache/uploads             key (prefix), ref, per_page, page
    DELETE /repos/{owner}/{repo}/actions/cache/uploads?key=K&ref=R  every upload of exactly key K
    DELETE /repos/{owner}/{repo}/actions/cache/uploads/{upload_id}

Also under `/repositories/{repository_id}` and `/api/v3`, like the cache routes of `rest.py`, whose
authentication, error shapes and permission rules these share: `read` lists, `write` removes, and a job
token removes only its own ref's uploads. Removal is `CacheService.abandon_upload`, so an upload being
committed is refused (409) and a committed entry is never touched (its id is not an upload: 404).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runcache.core.access import READ, WRITE, Forbidden, Principal, same_name
from runcache.core.entries import COMMITTED, EntryInfo
from runcache.core.errors import NotFound, UploadBusy
from runcache.core.keys import MAX_KEY_LENGTH
from runcache.core.listing import Page, ValidationFailed, link_header, parse_page
from runcache.server.common import iso, public_base, state
from runcache.server.openapi import API_PREFIX
from runcache.server.rest import REPOSITORY_BASES, Handler, github_error, principal, rest_errors
from runcache.services.cache import CacheService
from runcache.services.management import MAX_ID, normalize_filter_ref, ref_can_match, repository_from_path


def _searchable(text: str | None) -> bool:
    # A filter that can never match a stored key (too long, NUL) matches nothing, as in the cache list.
    return text is None or (len(text) <= MAX_KEY_LENGTH and "\x00" not in text)


def upload_json(svc: CacheService, e: EntryInfo, *, progress: bool = True) -> dict[str, Any]:
    seen = svc.upload_progress(e) if progress else None
    received, last = (seen.received, seen.last_activity) if seen is not None else (None, None)
    return {
        "id": e.id,
        "ref": e.scope,
        "key": e.key,
        "version": e.version,
        "state": e.state,
        "reserved_at": iso(e.reserved_at),
        "last_activity_at": iso(last) if last is not None else None,
        # None when the bytes are staged on another replica.
        "received_bytes": received,
        "declared_size_in_bytes": e.declared_size if e.declared_size is not None and e.declared_size >= 0 else None,
    }


# --- rules (run in the thread pool) -------------------------------------------------------------------
def list_uploads_for(
    svc: CacheService, who: Principal, repository: str, key: str | None, ref: str | None, page: Page
) -> tuple[int, list[dict[str, Any]]]:
    who.require(repository, READ)
    if not _searchable(key) or not ref_can_match(ref):
        return 0, []
    total, entries = svc.metadata.query_uploads(
        repository=repository,
        key_prefix=key,
        ref=normalize_filter_ref(ref),
        limit=page.per_page,
        offset=page.offset,
    )
    return total, [upload_json(svc, e) for e in entries]


def remove_upload(svc: CacheService, who: Principal, repository: str, upload_id: int) -> EntryInfo:
    who.require(repository, WRITE)
    entry = svc.metadata.get(upload_id) if 0 < upload_id <= MAX_ID else None
    if entry is None or entry.state == COMMITTED or not same_name(entry.repository, repository):
        raise NotFound(f"no upload in progress with id {upload_id} in {repository}")
    if not who.may_delete_scope(entry.scope):
        raise Forbidden(f"a job token may only remove uploads of {who.write_scope}")
    svc.abandon_upload(entry)
    return entry


def remove_uploads_of_key(
    svc: CacheService, who: Principal, repository: str, key: str | None, ref: str | None
) -> list[EntryInfo]:
    """Every upload in progress of exactly this key (any version; one ref if given), as the cache API's
    delete by key: a job token's own ref only. NotFound when there is none."""
    who.require(repository, WRITE)
    if not key:
        raise ValidationFailed("key", "key is required", code="missing_field")
    if not ref_can_match(ref) or not _searchable(key):
        raise NotFound(f"no upload in progress with key {key!r} in {repository}")
    ref = normalize_filter_ref(ref)
    if who.kind == "job":
        if ref is not None and not who.may_delete_scope(ref):
            raise Forbidden(f"a job token may only remove uploads of {who.write_scope}")
        ref = who.write_scope
    _, entries = svc.metadata.query_uploads(repository=repository, key=key, ref=ref)
    gone: list[EntryInfo] = []
    busy: UploadBusy | None = None
    for e in entries:
        try:
            svc.abandon_upload(e)
            gone.append(e)
        except NotFound:  # finished or removed meanwhile
            continue
        except UploadBusy as exc:  # a commit claimed it: it is about to be a cache, not an upload
            busy = exc
    if not gone and busy is not None:
        raise busy
    if not gone:
        raise NotFound(f"no upload in progress with key {key!r} in {repository}")
    return gone


# --- handlers -----------------------------------------------------------------------------------------
def _busy(exc: UploadBusy) -> JSONResponse:
    # rest_errors would answer 403; the upload exists and may be removed, just not while it is committed.
    return github_error(409, str(exc))


@rest_errors
async def list_uploads(request: Request) -> Response:
    who = await principal(request)
    repository = repository_from_path(request.path_params)
    q = request.query_params
    page = parse_page(q.get("per_page"), q.get("page"))
    total, uploads = await run_in_threadpool(
        list_uploads_for, state(request).service, who, repository, q.get("key") or None, q.get("ref"), page
    )
    link = link_header(public_base(request) + request.url.path, request.query_params.multi_items(), page, total)
    return JSONResponse({"total_count": total, "uploads": uploads}, headers={"Link": link} if link else {})


@rest_errors
async def delete_by_key(request: Request) -> Response:
    who = await principal(request)
    repository = repository_from_path(request.path_params)
    svc = state(request).service
    q = request.query_params
    try:
        gone = await run_in_threadpool(remove_uploads_of_key, svc, who, repository, q.get("key"), q.get("ref"))
    except UploadBusy as exc:
        return _busy(exc)
    return JSONResponse({"total_count": len(gone), "uploads": [upload_json(svc, e, progress=False) for e in gone]})


@rest_errors
async def delete_by_id(request: Request) -> Response:
    who = await principal(request)
    repository = repository_from_path(request.path_params)
    raw = request.path_params["upload_id"]
    upload_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else 0
    try:
        await run_in_threadpool(remove_upload, state(request).service, who, repository, upload_id)
    except UploadBusy as exc:
        return _busy(exc)
    return Response(status_code=204)


_OPERATIONS: list[tuple[str, Handler, str]] = [
    ("/actions/cache/uploads", list_uploads, "GET"),
    ("/actions/cache/uploads", delete_by_key, "DELETE"),
    ("/actions/cache/uploads/{upload_id}", delete_by_id, "DELETE"),
]

# Plain routes for the /api/v3 copies too: a Mount of that prefix here would take every /api/v3 path
# away from rest.py's own mount (a Mount matches its whole prefix and answers 404 for the rest).
routes: list[BaseRoute] = [
    Route(prefix + base + path, handler, methods=[method])
    for prefix in ("", API_PREFIX)
    for base in REPOSITORY_BASES
    for path, handler, method in _OPERATIONS
]
