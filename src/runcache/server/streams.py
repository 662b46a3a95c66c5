"""Moving request bodies to staging without holding them in memory."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import ClientDisconnect, Request

from runcache.core.errors import InvalidRequest

# Writes are batched so the page-cache write costs one syscall per MiB, not one per socket read.
_BATCH = 1024 * 1024


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self) -> object: ...
    def abort(self) -> None: ...


async def receive_into(request: Request, writer: Writer) -> int:
    received = 0
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            pending.append(chunk)
            pending_size += len(chunk)
            received += len(chunk)
            if pending_size >= _BATCH:
                writer.write(b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            writer.write(b"".join(pending))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != received:
            raise InvalidRequest(f"body has {received} bytes but Content-Length says {declared}")
        writer.finish()
    except ClientDisconnect:
        writer.abort()
        raise InvalidRequest("client disconnected before the body was complete") from None
    except BaseException:
        writer.abort()
        raise
    return received
