"""Moving request bodies to an upload store, and downloads to the client, without holding them in memory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runcache.core.errors import InvalidRequest
from runcache.store.blobs import FileSpans
from runcache.store.uploads import UploadWriter

T = TypeVar("T")

# Writes are batched so the page-cache write costs one syscall per MiB, not one per socket read; a slow
# body is handed over at least this often anyway, so the writer can show the upload is alive.
_BATCH = 1024 * 1024
_FLUSH_SECONDS = 1.0
# The ASGI extension for sending a file's bytes without copying them (the server offers it in the scope).
ZEROCOPY = "http.response.zerocopy"


async def receive_into(request: Request, writer: UploadWriter) -> int:
    async def call(fn: Callable[..., T], *args: object) -> T:
        # A writer that waits on the network (an object store) must not stall the event loop.
        return await run_in_threadpool(fn, *args) if writer.offload else fn(*args)

    received = 0
    pending: list[bytes] = []
    pending_size = 0
    flushed = time.monotonic()
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            pending.append(chunk)
            pending_size += len(chunk)
            received += len(chunk)
            if pending_size >= _BATCH or time.monotonic() - flushed >= _FLUSH_SECONDS:
                await call(writer.write, b"".join(pending))
                pending, pending_size = [], 0
                flushed = time.monotonic()
        if pending:
            await call(writer.write, b"".join(pending))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != received:
            raise InvalidRequest(f"body has {received} bytes but Content-Length says {declared}")
        await call(writer.finish)
    except ClientDisconnect:
        await call(writer.abort)
        raise InvalidRequest("client disconnected before the body was complete") from None
    except BaseException:
        writer.abort()  # also on cancellation, where nothing may be awaited any more
        raise
    return received


class DownloadResponse(StreamingResponse):
    """A download streamed from the blob store. When the store's read names local files (`FileSpans`) and the
    server offers the ASGI zero-copy extension, the files go to the socket as `http.response.zerocopy`
    messages (one per file: the server loops in its own code, not once per chunk here); otherwise, as from
    an object store or over TLS, the bytes are iterated and sent as body messages."""

    def __init__(self, content: AsyncIterable[bytes], *, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type="application/octet-stream")
        self._zerocopy = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._zerocopy = ZEROCOPY in scope.get("extensions", {}) and isinstance(self.body_iterator, FileSpans)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        body = self.body_iterator
        if not (self._zerocopy and isinstance(body, FileSpans)):
            await super().stream_response(send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        spans = body.spans()
        try:
            async for file, offset, count in spans:
                await send({"type": ZEROCOPY, "file": file, "offset": offset, "count": count, "more_body": True})
        finally:
            await spans.aclose()  # the open file goes now, not when the generator is collected
        await send({"type": "http.response.body", "body": b"", "more_body": False})
