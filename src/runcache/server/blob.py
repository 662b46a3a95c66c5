"""The Azure Blob subset behind signed URLs: Put Blob, Put Block, Put Block List, and Get Blob with ranges."""

from __future__ import annotations

import email.utils
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runcache.auth.signing import DOWNLOAD, UPLOAD
from runcache.core.errors import CacheError, InvalidRequest, NotFound
from runcache.core.ranges import RangeNotSatisfiable, parse_range
from runcache.server.common import ACCOUNT, ARCHIVES, UPLOADS, read_capped, state
from runcache.server.errors import classify
from runcache.server.streams import DownloadResponse, receive_into
from runcache.services.cache import CacheService
from runcache.store.uploads import UploadWriter

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
    entry = await run_in_threadpool(svc.upload_open, upload_id)
    comp = request.query_params.get("comp")
    headers = {
        **_azure_headers(),
        "ETag": f'"0x{uuid.uuid4().hex[:16].upper()}"',
        "Last-Modified": email.utils.formatdate(usegmt=True),
    }
    if comp == "block":
        writer = await run_in_threadpool(svc.block_writer, entry, request.query_params.get("blockid", ""))
        await _receive(request, svc, upload_id, writer)
        headers.pop("ETag")
        headers.pop("Last-Modified")
        return Response(status_code=201, headers={**headers, "x-ms-request-server-encrypted": "false"})
    if comp == "blocklist":
        ids = _parse_block_list(await read_capped(request, MAX_BLOCK_LIST, "block list"))
        size = await run_in_threadpool(svc.put_block_list, entry, ids)
        log.info("upload %d: put block list of %d blocks, %d bytes", upload_id, len(ids), size)
        return Response(status_code=201, headers=headers)
    if comp is not None:
        raise InvalidRequest(f"unsupported comp={comp}")
    blob_type = request.headers.get("x-ms-blob-type", "BlockBlob")
    if blob_type != "BlockBlob":
        raise InvalidRequest(f"only BlockBlob uploads are supported, got {blob_type}")
    writer = await run_in_threadpool(svc.whole_writer, entry)
    await _receive(request, svc, upload_id, writer)
    return Response(status_code=201, headers=headers)


@blob_errors
async def delete(request: Request) -> Response:
    """Azure Delete Blob on the signed upload URL: the uploader gives its upload up (the signature is the
    proof), its staged bytes and reservation go, and the key is free at once. A committed entry is never
    deleted this way (404), nor one being committed (409)."""
    upload_id = _checked_id(request, UPLOADS, UPLOAD)
    svc = state(request).service
    entry = await run_in_threadpool(svc.pending_upload, upload_id)
    await run_in_threadpool(svc.abandon_upload, entry)
    return Response(status_code=202, headers={**_azure_headers(), "x-ms-delete-type-permanent": "true"})


async def _receive(request: Request, svc: CacheService, upload_id: int, writer: UploadWriter) -> None:
    try:
        await receive_into(request, writer)
    finally:
        await run_in_threadpool(svc.drop_if_out_of_space, upload_id)


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


@blob_errors
async def get(request: Request) -> Response:
    entry_id = _checked_id(request, ARCHIVES, DOWNLOAD)
    svc = state(request).service
    entry = await run_in_threadpool(svc.entry_for_download, entry_id)
    total = entry.size or 0
    headers = {
        **_azure_headers(),
        "Accept-Ranges": "bytes",
        "x-ms-blob-type": "BlockBlob",
        "Last-Modified": email.utils.format_datetime(entry.created_at.replace(tzinfo=UTC), usegmt=True),
    }
    if entry.sha256:
        headers["x-ms-meta-sha256"] = entry.sha256
        headers["ETag"] = f'"{entry.sha256[:32]}"'
    # The Azure SDKs ask with x-ms-range; it means exactly what a Range header does.
    wanted = request.headers.get("x-ms-range") or request.headers.get("range")
    start, end, status = 0, total, 200
    if wanted:
        try:
            start, end = parse_range(wanted, total)
        except RangeNotSatisfiable as exc:
            return Response(str(exc), status_code=416, headers={**headers, "Content-Range": f"bytes */{total}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers, media_type="application/octet-stream")
    return DownloadResponse(svc.open_download(entry, start, end), status_code=status, headers=headers)


routes = [
    Route(f"/{ACCOUNT}/{UPLOADS}/{{blob}}", put, methods=["PUT"]),
    Route(f"/{ACCOUNT}/{UPLOADS}/{{blob}}", delete, methods=["DELETE"]),
    Route(f"/{ACCOUNT}/{ARCHIVES}/{{blob}}", get, methods=["GET", "HEAD"]),
]
