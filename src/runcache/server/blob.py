"""The Azure Blob subset behind signed URLs: Put Blob, Put Block, Put Block List, and Get Blob with ranges."""

from __future__ import annotations

import email.utils
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from runcache.auth.signing import DOWNLOAD, UPLOAD
from runcache.core.errors import CacheError, InvalidRequest, NotFound
from runcache.server.common import ACCOUNT, ARCHIVES, UPLOADS, state
from runcache.server.errors import classify
from runcache.server.streams import receive_into

log = logging.getLogger("runcache.blob")
MAX_BLOCK_LIST = 8 * 1024 * 1024
X_MS_VERSION = "2025-01-05"
Handler = Callable[[Request], Awaitable[Response]]


def _azure_headers(request_id: str | None = None) -> dict[str, str]:
    return {
        "x-ms-request-id": request_id or str(uuid.uuid4()),
        "x-ms-version": X_MS_VERSION,
        "Date": email.utils.formatdate(usegmt=True),
    }


def _error(exc: CacheError, head: bool = False) -> Response:
    status, _, code = classify(exc)
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{_xml_escape(str(exc))}</Message></Error>"
    )
    headers = {**_azure_headers(), "x-ms-error-code": code}
    return Response(b"" if head else body, status_code=status, media_type="application/xml", headers=headers)


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blob_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except CacheError as exc:
            return _error(exc, head=request.method == "HEAD")
        except Exception:
            log.exception("blob %s %s failed", request.method, request.url.path)
            return _error(CacheError("internal error"))

    return wrapped


def _checked_id(request: Request, container: str, purpose: str) -> int:
    raw = request.path_params["blob"]
    if not raw.isdigit():
        raise NotFound("The specified blob does not exist.")
    params = dict(request.query_params)
    state(request).signer.verify(purpose, f"{container}/{raw}", params)
    return int(raw)


@blob_errors
async def put(request: Request) -> Response:
    upload_id = _checked_id(request, UPLOADS, UPLOAD)
    svc = state(request).service
    await run_in_threadpool(svc.upload_open, upload_id)
    comp = request.query_params.get("comp")
    headers = {
        **_azure_headers(),
        "ETag": f'"0x{uuid.uuid4().hex[:16].upper()}"',
        "Last-Modified": email.utils.formatdate(usegmt=True),
    }
    if comp == "block":
        block_id = request.query_params.get("blockid", "")
        writer = svc.staging.block_writer(upload_id, block_id)
        await receive_into(request, writer)
        headers.pop("ETag")
        headers.pop("Last-Modified")
        return Response(status_code=201, headers={**headers, "x-ms-request-server-encrypted": "false"})
    if comp == "blocklist":
        ids = _parse_block_list(await _small_body(request))
        size = await run_in_threadpool(svc.staging.commit_blocks, upload_id, ids)
        log.info("upload %d: put block list of %d blocks, %d bytes", upload_id, len(ids), size)
        return Response(status_code=201, headers=headers)
    if comp is not None:
        raise InvalidRequest(f"unsupported comp={comp}")
    blob_type = request.headers.get("x-ms-blob-type", "BlockBlob")
    if blob_type != "BlockBlob":
        raise InvalidRequest(f"only BlockBlob uploads are supported, got {blob_type}")
    writer = svc.staging.whole_writer(upload_id)
    await receive_into(request, writer)
    return Response(status_code=201, headers=headers)


async def _small_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BLOCK_LIST:
            raise InvalidRequest("block list is too large")
    return body


def _parse_block_list(body: bytes) -> list[str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise InvalidRequest(f"malformed block list XML: {exc}") from exc
    if root.tag != "BlockList":
        raise InvalidRequest("block list XML must have a BlockList root")
    ids = []
    for el in root:
        if el.tag not in ("Latest", "Committed", "Uncommitted"):
            raise InvalidRequest(f"unexpected element {el.tag} in block list")
        ids.append((el.text or "").strip())
    return ids


class _RangedFile(FileResponse):
    chunk_size = 1024 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The Azure SDKs ask with x-ms-range; serve it exactly like a standard Range header.
        headers = dict(scope["headers"])
        if b"x-ms-range" in headers and b"range" not in headers:
            scope = {**scope, "headers": [*scope["headers"], (b"range", headers[b"x-ms-range"])]}
        await super().__call__(scope, receive, send)


@blob_errors
async def get(request: Request) -> Response:
    entry_id = _checked_id(request, ARCHIVES, DOWNLOAD)
    svc = state(request).service
    entry = await run_in_threadpool(svc.entry_for_download, entry_id)
    path = svc.blobs.local_path(str(entry.id))
    if path is None:
        raise NotFound("The specified blob does not exist.")
    headers = {**_azure_headers(), "Accept-Ranges": "bytes", "x-ms-blob-type": "BlockBlob"}
    if entry.sha256:
        headers["x-ms-meta-sha256"] = entry.sha256
    return _RangedFile(path, media_type="application/octet-stream", headers=headers)


routes = [
    Route(f"/{ACCOUNT}/{UPLOADS}/{{blob}}", put, methods=["PUT"]),
    Route(f"/{ACCOUNT}/{ARCHIVES}/{{blob}}", get, methods=["GET", "HEAD"]),
]
