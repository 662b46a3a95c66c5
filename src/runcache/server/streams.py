"""Moving request bodies to an upload store without holding them in memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from runcache.core.errors import InvalidRequest
from runcache.store.uploads import UploadWriter

T = TypeVar("T")

# Writes are batched so the page-cache write costs one syscall per MiB, not one per socket read; a slow
# body is handed over at least this often anyway, so the writer can show the upload is alive.
_BATCH = 1024 * 1024
_FLUSH_SECONDS = 1.0


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
