"""The web Caches page (`/{owner}/{repo}/actions/caches`), the index of repositories (`/`) and login.

Server-rendered HTML (Jinja2, autoescaped: every key is text, never markup) with one small script
for confirmations and auto-submitting the menus; everything works without it. Sign-in takes a
management token and opens a server-side session (`store/sessions.py`): the HttpOnly,
SameSite=Strict cookie carries only a random session id, the token stays on the server and is
verified again on every request, and signing out deletes the session, so a copied cookie dies with
it. Every form that changes something carries a CSRF token bound to that session. A request
carrying `Authorization: Bearer <management token>` is answered as well (scripts, tests) and needs
no CSRF token, since a browser never adds that header on its own.

Repositories known only by id (`id:<n>`, see core/access.py) have their page at
`/-/repositories/<n>/actions/caches`: `/repositories/<n>/...` is the REST API's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from runcache.core.access import ADMIN, LEVEL_NAMES, WRITE, Forbidden, Principal, repository_id_of
from runcache.core.errors import CacheError, InvalidRequest, NotFound, Unauthenticated
from runcache.core.eviction import GB
from runcache.core.humanize import fuzzy_ago, human_size, usage_of_limit
from runcache.core.listing import DIRECTIONS, SORT_FIELDS, Page, ValidationFailed, read_filter_query
from runcache.server.common import iso, state
from runcache.services.management import Management, normalize_filter_ref, repository_from_path
from runcache.store.metadata import utcnow
from runcache.store.sessions import SessionStore

log = logging.getLogger("runcache.web")
HERE = Path(__file__).parent / "webui"
COOKIE = "runcache_session"
SESSION_SECONDS = 12 * 3600
PER_PAGE = 30
MAX_FORM = 64 * 1024
SORT_OPTIONS = [
    ("last_accessed_at-desc", "Recently used"),
    ("last_accessed_at-asc", "Least recently used"),
    ("created_at-desc", "Newest"),
    ("created_at-asc", "Oldest"),
    ("size_in_bytes-desc", "Largest size"),
    ("size_in_bytes-asc", "Smallest size"),
]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["size"] = human_size


def _ago(ts: datetime) -> str:
    return fuzzy_ago(ts, datetime.now(UTC))


def _branch(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


def _break_at_slashes(text: str) -> Markup:
    """The text, escaped, with a line-break opportunity after each '/': a long branch name in a narrow
    column wraps between its parts (`feature/` `checkout-v2`) rather than mid-word."""
    return Markup("/<wbr>").join(escape(part) for part in text.split("/"))


_env.filters["ago"] = _ago
_env.filters["wbr"] = _break_at_slashes
_env.filters["iso"] = iso
_env.filters["branch"] = _branch
_env.filters["absolute"] = lambda ts: ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def management(request: Request) -> Management:
    return request.app.state.management


def sessions(request: Request) -> SessionStore:
    return request.app.state.web_sessions


def page_path(repository: str) -> str:
    """Where a repository's Caches page is: `/{owner}/{repo}/...`, or `/-/repositories/<n>/...` by id."""
    repository_id = repository_id_of(repository)
    if repository_id is not None:
        return f"/-/repositories/{repository_id}/actions/caches"
    return f"/{repository}/actions/caches"


# --- sessions and CSRF ----------------------------------------------------------------------------
def _session_id(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def csrf_token(request: Request, session: str) -> str:
    key = state(request).settings.derived_key("csrf")
    return hmac.new(key, session.encode(), hashlib.sha256).hexdigest()


async def who(request: Request) -> tuple[Principal, str | None]:
    """The signed-in caller and, for a cookie session, its CSRF token (None for a bearer request)."""
    auth = state(request).auth
    header = request.headers.get("authorization")
    if header:
        return await run_in_threadpool(auth.principal, header, admin_only=True), None
    session = _session_id(request)
    token = await run_in_threadpool(sessions(request).token, session) if session else None
    if not session or not token:
        raise Unauthenticated("Requires authentication")
    # The token is verified again on every request: its expiry and the server secret still rule.
    principal = await run_in_threadpool(auth.principal, f"Bearer {token}", admin_only=True)
    return principal, csrf_token(request, session)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    allowed = {request.headers.get("host", ""), urlsplit(state(request).settings.public_url).netloc} - {""}
    return urlsplit(origin).netloc in allowed


async def read_form(request: Request) -> dict[str, list[str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise InvalidRequest("form is too large")
    try:
        return parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("form is not UTF-8") from exc


def _first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def _check_csrf(request: Request, form: dict[str, list[str]], csrf: str | None) -> None:
    if not _same_origin(request):
        raise Forbidden("cross-origin form submission refused")
    if csrf is not None and not hmac.compare_digest(_first(form, "csrf"), csrf):
        raise Forbidden("the form has expired or did not come from this page; reload and try again")


# --- rendering ------------------------------------------------------------------------------------
def render(template: str, status: int = 200, headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(template).render(**ctx)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/-/login?{urlencode({'next': target})}", status_code=303, headers=SECURITY_HEADERS)


def error_page(request: Request, exc: Exception, principal: Principal | None = None) -> Response:
    if isinstance(exc, Unauthenticated):
        if request.method == "GET" and not request.headers.get("authorization"):
            return _login_redirect(request)
        return render(
            "error.html",
            401,
            {"WWW-Authenticate": 'Bearer realm="runcache"'},
            title="Sign in required",
            message="Sign in with a management token to see this page.",
            principal=None,
        )
    if isinstance(exc, Forbidden):
        return render("error.html", 403, title="Not allowed", message=str(exc), principal=None)
    if isinstance(exc, NotFound):
        return render(
            "error.html",
            404,
            title="Not found",
            message="There is no such repository, or your token does not give access to it.",
            principal=None,
        )
    if isinstance(exc, InvalidRequest):
        return render("error.html", 400, title="Bad request", message=str(exc), principal=None)
    log.exception("web %s %s failed", request.method, request.url.path, exc_info=exc)
    return render(
        "error.html", 500, title="Something went wrong", message="The server failed; see its log.", principal=None
    )


def _principal_label(p: Principal) -> str:
    return f"{p.description} ({LEVEL_NAMES.get(p.level, 'none')})"


# --- pages ----------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    principal = None
    try:
        principal, csrf = await who(request)
        repos = await run_in_threadpool(management(request).visible_repositories, principal)
        limits = {}
        for r in repos:
            limits[r.full_name] = await run_in_threadpool(management(request).limits, principal, r.full_name)
        rows = [
            {
                "repo": r,
                "url": page_path(r.full_name),
                "limit": limits[r.full_name].storage_bytes,
                "usage": usage_of_limit(r.size, limits[r.full_name].storage_gb),
            }
            for r in repos
        ]
        return render(
            "index.html",
            rows=rows,
            total_count=sum(r.count for r in repos),
            total_size=sum(r.size for r in repos),
            principal=principal,
            principal_label=_principal_label(principal),
            csrf=csrf,
        )
    except Exception as exc:  # domain errors become 4xx pages; anything else is logged, a 500 page
        return error_page(request, exc, principal)


def _parse_sort(raw: str) -> tuple[str, str]:
    field, _, direction = raw.rpartition("-")
    if field in SORT_FIELDS and direction in DIRECTIONS:
        return field, direction
    return "last_accessed_at", "desc"


def _page_number(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 1_000_000 else 1


def _filters(params) -> dict[str, Any]:
    query = (params.get("query") or "").strip()
    parsed = read_filter_query(query)
    ref = (params.get("ref") or "").strip() or parsed.ref
    sort_raw = params.get("sort") or "last_accessed_at-desc"
    sort, direction = _parse_sort(sort_raw)
    return {
        "query": query,
        "key": parsed.key,
        "ref": ref,
        # Words like `os:linux` stay key text (keys may contain ':'); the page says so, in case of a typo.
        "unknown": parsed.unknown,
        "sort": f"{sort}-{direction}",
        "field": sort,
        "direction": direction,
    }


async def caches_page(request: Request) -> Response:
    principal = None
    try:
        principal, csrf = await who(request)
        repository = repository_from_path(request.path_params)
        mgmt = management(request)
        f = _filters(request.query_params)
        number = _page_number(request.query_params.get("page"))
        page = Page(number, PER_PAGE)
        as_of = utcnow()
        total, entries = await run_in_threadpool(
            mgmt.list_caches,
            principal,
            repository,
            key=f["key"],
            ref=f["ref"],
            sort=f["field"],
            direction=f["direction"],
            page=page,
        )
        refs = await run_in_threadpool(mgmt.refs, principal, repository)
        usage = await run_in_threadpool(mgmt.repo_usage, principal, repository)
        limits = await run_in_threadpool(mgmt.limits, principal, repository)
        selected_ref = normalize_filter_ref(f["ref"]) if f["ref"] else ""
        if selected_ref and selected_ref not in refs:
            refs = [*refs, selected_ref]
        last = page.last(total)
        base = {k: v for k, v in (("query", f["query"]), ("ref", selected_ref), ("sort", f["sort"])) if v}
        if f["sort"] == "last_accessed_at-desc":
            base.pop("sort", None)

        def page_url(n: int) -> str:
            q = urlencode({**base, **({"page": str(n)} if n > 1 else {})})
            return request.url.path + (f"?{q}" if q else "")

        deleted = request.query_params.get("deleted")
        return render(
            "caches.html",
            repository=repository,
            entries=entries,
            total=total,
            page=number,
            last_page=last,
            prev_url=page_url(number - 1) if number > 1 else None,
            next_url=page_url(number + 1) if number < last else None,
            refs=refs,
            selected_ref=selected_ref,
            filters=f,
            filtered=bool(f["key"] or selected_ref),
            sort_options=SORT_OPTIONS,
            usage=usage,
            limits=limits,
            limit_bytes=limits.storage_gb * GB,
            usage_text=usage_of_limit(usage.size, limits.storage_gb),
            can_delete=principal.level_for(repository) >= WRITE,
            can_admin=principal.level_for(repository) >= ADMIN,
            as_of=as_of.isoformat(),
            csrf=csrf or "",
            deleted=int(deleted) if deleted and deleted.isdigit() else None,
            principal=principal,
            principal_label=_principal_label(principal),
            clear_url=request.url.path,
        )
    except Exception as exc:  # domain errors become 4xx pages; anything else is logged, a 500 page
        return error_page(request, exc, principal)


async def delete_caches(request: Request) -> Response:
    """One entry (`id`), several (`id` repeated) or a filtered set (`bulk=1` + `query`/`ref`/`as_of`).

    Without `confirm=yes` this answers with a confirmation page (the script asks in a dialog and
    sends `confirm=yes` itself), so nothing is deleted by a single stray click either way."""
    principal = None
    try:
        principal, csrf = await who(request)
        repository = repository_from_path(request.path_params)
        form = await read_form(request)
        _check_csrf(request, form, csrf)
        mgmt = management(request)
        principal.require(repository, WRITE)
        ids = [int(v) for v in form.get("id", []) if v.isdigit() and len(v) <= 19]
        bulk = _first(form, "bulk") == "1"
        f = _filters({k: _first(form, k) for k in ("query", "ref", "sort")})
        as_of = _parse_as_of(_first(form, "as_of"))
        if not bulk and not ids:
            raise ValidationFailed("id", "choose a cache to delete")
        if _first(form, "confirm") != "yes":
            if bulk:
                total, entries = await run_in_threadpool(
                    mgmt.list_caches,
                    principal,
                    repository,
                    key=f["key"],
                    ref=f["ref"],
                    created_before=as_of,
                    page=Page(1, 100),
                )
            else:
                entries = await run_in_threadpool(mgmt.entries_by_id, principal, repository, ids)
                total = len(entries)
            return render(
                "confirm.html",
                repository=repository,
                entries=entries,
                total=total,
                ids=ids,
                bulk=bulk,
                filters=f,
                as_of=_first(form, "as_of"),
                csrf=csrf or "",
                principal=principal,
                principal_label=_principal_label(principal),
                back_url=_back_url(request, f),
            )
        if bulk:
            gone = await run_in_threadpool(
                mgmt.delete_matching, principal, repository, key=f["key"], ref=f["ref"], created_before=as_of
            )
        else:
            gone = await run_in_threadpool(mgmt.delete_ids, principal, repository, ids)
        target = _back_url(request, f, deleted=len(gone))
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    except Exception as exc:  # domain errors become 4xx pages; anything else is logged, a 500 page
        return error_page(request, exc, principal)


def _parse_as_of(raw: str) -> datetime | None:
    if not raw:
        return None
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed("as_of", "as_of must be an ISO timestamp") from None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _back_url(request: Request, f: dict[str, Any], **extra: Any) -> str:
    path = request.url.path.removesuffix("/delete")
    params = {k: v for k, v in (("query", f["query"]), ("ref", f["ref"] or "")) if v}
    if f["sort"] != "last_accessed_at-desc":
        params["sort"] = f["sort"]
    params.update({k: str(v) for k, v in extra.items()})
    return path + (f"?{urlencode(params)}" if params else "")


# --- login ----------------------------------------------------------------------------------------
def _safe_next(raw: str | None) -> str:
    # Only paths on this server: never `//host`, `/\\host` or a scheme.
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw and "\n" not in raw:
        return raw
    return "/"


async def login_form(request: Request) -> Response:
    return render("login.html", next=_safe_next(request.query_params.get("next")), error=None, principal=None)


async def login(request: Request) -> Response:
    try:
        form = await read_form(request)
        if not _same_origin(request):
            raise Forbidden("cross-origin sign-in refused")
    except CacheError as exc:
        return error_page(request, exc)
    token = _first(form, "token").strip()
    target = _safe_next(_first(form, "next"))
    try:
        await run_in_threadpool(state(request).auth.principal, f"Bearer {token}", admin_only=True)
    except Unauthenticated as exc:
        message = (
            "That is a job token; sign in with a management token (runcache token --admin)."
            if "management token is required" in str(exc)
            else "That token is not valid here (expired, or signed by another server)."
        )
        if not token:
            message = "Enter a management token."
        return render("login.html", 401, next=target, error=message, principal=None)
    claims = jwt.decode(token, options={"verify_signature": False})  # verified just above
    max_age = max(1, min(SESSION_SECONDS, int(claims.get("exp", 0)) - int(time.time())))
    store = sessions(request)
    previous = _session_id(request)
    if previous:
        # A new sign-in never keeps an earlier session id alive (nor one planted in the browser).
        await run_in_threadpool(store.delete, previous)
    session = await run_in_threadpool(store.create, token, expires_at=utcnow() + timedelta(seconds=max_age))
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE,
        session,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


def _secure(request: Request) -> bool:
    public = state(request).settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


async def logout(request: Request) -> Response:
    try:
        form = await read_form(request)
        session = _session_id(request)
        _check_csrf(request, form, csrf_token(request, session) if session else None)
    except CacheError as exc:
        return error_page(request, exc)
    if session:
        await run_in_threadpool(sessions(request).delete, session)
    response = RedirectResponse("/-/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))
    return response


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Route("/-/login", login_form, methods=["GET"]),
    Route("/-/login", login, methods=["POST"]),
    Route("/-/logout", logout, methods=["POST"]),
    Mount("/-/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    Route("/-/repositories/{repository_id}/actions/caches", caches_page, methods=["GET"]),
    Route("/-/repositories/{repository_id}/actions/caches/delete", delete_caches, methods=["POST"]),
    Route("/{owner}/{repo}/actions/caches", caches_page, methods=["GET"]),
    Route("/{owner}/{repo}/actions/caches/delete", delete_caches, methods=["POST"]),
]
