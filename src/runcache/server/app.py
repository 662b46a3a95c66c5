"""The ASGI application: wires settings, stores, the cache service and the protocol routes together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runcache.auth import Authenticator
from runcache.auth.github import GitHubTokenVerifier
from runcache.auth.signing import UrlSigner
from runcache.auth.tokens import TokenIssuer
from runcache.config import DOWNLOAD_MODES, TRANSFER_MODES, Settings
from runcache.core.eviction import validate_retention, validate_storage_limit
from runcache.core.limits import MB, UploadLimits
from runcache.server import blob, ghcompat, rest, twirp, uploads_api, v1, web
from runcache.server.common import AppState
from runcache.services.cache import CacheService
from runcache.services.management import Management
from runcache.store.blobs import BlobStore, DirectUploads
from runcache.store.factory import blob_store_for, upload_store_for
from runcache.store.lock import DataDirLock
from runcache.store.metadata import MetadataStore

log = logging.getLogger("runcache.server")
JANITOR_INTERVAL = 60.0


def build_service(settings: Settings) -> CacheService:
    validate_storage_limit(settings.storage_limit_gb)  # a bad default fails at start, not at the first commit
    validate_retention(settings.retention_days)
    if settings.upload_idle_timeout < 0:
        raise ValueError(f"upload idle timeout must be 0 (off) or seconds, got {settings.upload_idle_timeout}")
    limits = UploadLimits(
        max_entry_bytes=settings.max_entry_size_mb * MB,
        max_uploads_per_repo=settings.max_uploads_per_repo,
        max_blocks_per_upload=settings.max_blocks_per_upload,
        max_entries_per_repo=settings.max_entries_per_repo,
        min_free_bytes=settings.min_free_mb * MB,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Caches may hold credentials a build left behind: other local users get no access.
    settings.data_dir.chmod(0o700)
    blobs = blob_store_for(settings)
    service = CacheService(
        MetadataStore(settings.database, pool_size=settings.db_pool_size),
        blobs,
        upload_store_for(settings, blobs),
        node_id=settings.node,
        reservation_ttl=settings.reservation_ttl,
        storage_limit_gb=settings.storage_limit_gb,
        retention_days=settings.retention_days,
        limits=limits,
        direct_download_ttl=_direct_download_ttl(settings, blobs),
        direct_upload_ttl=_direct_upload_ttl(settings, blobs),
    )
    idle = settings.upload_idle_timeout
    service.upload_idle_timeout = timedelta(seconds=idle) if idle > 0 else None
    return service


def _transfers_direct(settings: Settings) -> bool:
    mode = settings.transfers.strip().lower() or "proxy"
    if mode not in TRANSFER_MODES:
        raise ValueError(f"--transfers must be one of {', '.join(TRANSFER_MODES)}, got {settings.transfers!r}")
    return mode == "direct"


def _direct_download_ttl(settings: Settings, blobs: BlobStore) -> int | None:
    """`--downloads direct` (or `--transfers direct`, which includes it) needs a store that presigns (checked
    now, with the URL lifetime, rather than at the first restore); `proxy` streams through the server."""
    mode = settings.downloads.strip().lower() or "proxy"
    if mode not in DOWNLOAD_MODES:
        raise ValueError(f"--downloads must be one of {', '.join(DOWNLOAD_MODES)}, got {settings.downloads!r}")
    if mode == "proxy" and not _transfers_direct(settings):
        return None
    if blobs.download_url("0", settings.url_ttl) is None:
        flag = "--downloads direct" if mode == "direct" else "--transfers direct"
        raise ValueError(
            f"{flag} needs an object store (--blobs s3://bucket/prefix or azure://container/prefix); "
            "a directory is served by runcache"
        )
    return settings.url_ttl


def _direct_upload_ttl(settings: Settings, blobs: BlobStore) -> int | None:
    """`--transfers direct`: v2 uploads go to a write-only URL on the storage, which only a store that signs
    such URLs gives (Azure Blob: the client @actions/cache uploads with is the Azure SDK)."""
    if not _transfers_direct(settings):
        return None
    if not isinstance(blobs, DirectUploads) or blobs.upload_url("0", settings.url_ttl) is None:
        raise ValueError(
            "--transfers direct needs Azure Blob storage signed with an account key (--blobs azure://container/prefix"
            " with AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY); "
            "use --downloads direct for direct restores from S3"
        )
    return settings.url_ttl


def build_authenticator(settings: Settings) -> Authenticator:
    github = None
    if settings.github_jwks_url or settings.github_jwks_file:
        github = GitHubTokenVerifier(
            jwks_url=settings.github_jwks_url or None,
            jwks_file=Path(settings.github_jwks_file) if settings.github_jwks_file else None,
            issuer=settings.github_issuer or None,
            audience=settings.github_audience or None,
        )
    return Authenticator(TokenIssuer(settings.derived_key("tokens")), github)


_API_PREFIXES = ("/repos/", "/repositories/", "/orgs/", "/organizations/", "/api/", "/_apis/")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unrouted API paths (odd names included) answer in the API's JSON shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(_API_PREFIXES):
        return rest.github_error(exc.status_code, exc.detail or "Not Found")
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


class NoSniff:
    """`X-Content-Type-Options: nosniff` on every response (downloads, errors, the API, the page): a
    browser must never guess an archive or an error body is HTML. Pure ASGI, so streamed downloads
    pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_with_header)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings) -> Starlette:
    if not settings.embedded and not settings.secret:
        # Replicas must sign and verify with one secret; a per-data-dir secret would split them.
        raise ValueError(
            "a shared metadata database needs the signing secret given: set RUNCACHE_SECRET "
            "(the same value on every replica)"
        )
    service = build_service(settings)
    state = AppState(settings, service, build_authenticator(settings), UrlSigner(settings.derived_key("urls")))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lock = DataDirLock(settings.data_dir)
        lock.acquire()
        await run_in_threadpool(service.recover)
        task = asyncio.create_task(_janitor(service, settings.janitor_interval))
        try:
            yield
        finally:
            task.cancel()
            service.metadata.close()
            lock.release()

    app = Starlette(
        routes=[
            Route("/healthz", health),
            *v1.routes,
            *twirp.routes,
            *ghcompat.routes,
            *uploads_api.routes,  # before rest's /api/v3 mount, which would answer their paths with 404
            *rest.routes,
            *web.routes,
            *blob.routes,
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(NoSniff)],
    )
    app.state.runcache = state
    app.state.management = Management(service)
    app.state.web_sessions = web.SessionStore(service.metadata.engine)  # the page's sign-ins
    return app


async def _janitor(service: CacheService, interval: float = JANITOR_INTERVAL) -> None:
    # Files before rows in each pass (see CacheService); one failing pass never stops the others.
    passes = (
        (service.expire_uploads, "expired %d abandoned uploads"),
        (service.expire_idle_uploads, "expired %d idle uploads"),
        (service.enforce_retention, "removed %d cache entries past their retention limit"),
        (service.collect_orphan_blobs, "removed %d blobs that no entry references"),
    )
    while True:
        await asyncio.sleep(interval)
        for run_pass, message in passes:
            try:
                done = await run_in_threadpool(run_pass)
            except Exception:
                log.exception("housekeeping pass %s failed", run_pass.__name__)
                continue
            count = done if isinstance(done, int) else len(done)
            if count:
                log.info(message, count)
