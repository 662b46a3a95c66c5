"""Running the server: bind, announce the URL and client environment, then serve until stopped."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from runcache.config import Settings
from runcache.server.app import create_app
from runcache.server.logsafe import OneLineFormatter
from runcache.server.streams import ZEROCOPY
from runcache.store.lock import DataDirLock

log = logging.getLogger("runcache.serve")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Idle keep-alive connections cost a socket each; clients reconnect cheaply on loopback or a LAN.
KEEP_ALIVE_TIMEOUT = 15


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def announce(settings: Settings, url: str, out=sys.stdout) -> None:
    print(f"runcache serving on {url}/", file=out)
    print(f"data directory: {settings.data_dir.resolve()}", file=out)
    print("client environment (GitHub cache protocol v1 and v2):", file=out)
    print(f"  ACTIONS_CACHE_URL={url}/", file=out)
    print(f"  ACTIONS_RESULTS_URL={url}/", file=out)
    print("  ACTIONS_CACHE_SERVICE_V2=true", file=out)
    # A fresh clone has runcache only in its venv: show the command that works from here.
    command = "runcache" if shutil.which("runcache") else os.path.relpath(Path(sys.executable).parent / "runcache")
    print(
        f"  ACTIONS_RUNTIME_TOKEN=$({command} token --data-dir "
        f"{settings.data_dir} --repo OWNER/NAME --ref refs/heads/main)",
        file=out,
    )
    out.flush()


# At most this much per sendfile call, so the page-cache check before it covers what it sends.
_SENDFILE_WINDOW = 4 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_CACHESTAT = 451  # cachestat(2), Linux 6.5+, one number on every architecture


class _CacheStat(ctypes.Structure):
    _fields_ = [(f, ctypes.c_uint64) for f in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def _libc_syscall() -> Any:
    if sys.platform != "linux":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _libc_syscall()


def page_cached(fd: int, offset: int, count: int) -> bool:
    """Whether bytes [offset, offset + count) of the file are all in the page cache (reading them never
    waits for the disk). cachestat(2) counts the cached pages exactly; without it, a read with RWF_NOWAIT of
    the first and the last byte tells (readahead fills a sequential file in order); without that, say no."""
    global _syscall
    if count <= 0:
        return True
    if _syscall is not None:
        stat, span = _CacheStat(), _CacheStatRange(offset, count)
        if _syscall(_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) == 0:
            pages = (offset + count - 1) // _PAGE - offset // _PAGE + 1
            return stat.cache >= pages
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):  # an older kernel, or a seccomp filter
            _syscall = None
    if not _NOWAIT:
        return False
    probe = bytearray(1)
    try:
        return all(os.preadv(fd, [probe], at, _NOWAIT) == 1 for at in (offset, offset + count - 1))
    except OSError:  # BlockingIOError: not cached; EOPNOTSUPP: no way to tell
        return False


def _sendfile_closing(own: int, fd: int, offset: int, count: int) -> int:
    """sendfile off the loop through a duplicate the caller made for it: should the loop close the
    connection meanwhile, the number may go to a new connection, which must never get these bytes."""
    try:
        return os.sendfile(own, fd, offset, count)
    finally:
        os.close(own)


class FileSender:
    """The ASGI `http.response.zerocopy` extension on one uvicorn httptools connection: a file's bytes go from
    the page cache to the socket by os.sendfile, never through Python (uvicorn has no such extension).

    uvicorn's own send is kept for everything else, and the response's bookkeeping is kept true: the bytes
    sent count against its Content-Length, and the final empty body message completes the response in
    uvicorn's code (keep-alive, access log, next request). Bytes uvicorn still buffers (the head) go first.
    The socket is waited on through a duplicate of its descriptor: the loop's own watcher of the original
    (libuv's, or asyncio's selector key) must not be touched."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.socket = transport.get_extra_info("socket").fileno()
        self._dup = -1
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False

    @staticmethod
    def usable(transport: asyncio.BaseTransport) -> bool:
        # TLS needs the bytes in user space to encrypt them; only a plain TCP socket can take a file.
        return transport.get_extra_info("sslcontext") is None and transport.get_extra_info("socket") is not None

    def offer(self, cycle: Any) -> None:
        """Advertise the extension in the request's scope and take its messages before uvicorn's send."""
        if not all(hasattr(cycle, a) for a in ("expected_content_length", "chunked_encoding", "send", "scope")):
            return  # not the httptools cycle this was written against: plain body messages only
        plain = cycle.send

        async def send(message: Any) -> None:
            if message["type"] == ZEROCOPY:
                await self._send_file(cycle, plain, message)
            else:
                await plain(message)

        cycle.scope.setdefault("extensions", {})[ZEROCOPY] = {}
        cycle.send = send

    def connection_lost(self) -> None:
        self._lost = True
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
        else:
            self._close_dup()

    async def _send_file(self, cycle: Any, plain: Any, message: Any) -> None:
        if cycle.disconnected or self.transport.is_closing():
            cycle.disconnected = True  # what connection_lost will say: later sends are dropped, not refused
            return
        if not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"unexpected ASGI message {ZEROCOPY!r} outside a response body")
        fd = message["file"].fileno()
        offset = message.get("offset")
        offset = os.lseek(fd, 0, os.SEEK_CUR) if offset is None else offset
        count = message.get("count")
        count = os.fstat(fd).st_size - offset if count is None else count
        more_body = message.get("more_body", False)
        if cycle.chunked_encoding or cycle.scope["method"] == "HEAD":
            # No length-framed body to put raw file bytes into: uvicorn frames (or drops) them itself.
            body = os.pread(fd, count, offset) if cycle.scope["method"] != "HEAD" else b""
            await plain({"type": "http.response.body", "body": body, "more_body": more_body})
            return
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        sent = await self._sendfile(fd, offset, count)
        if sent < count:  # the client went away: as uvicorn does, the rest of the response goes nowhere
            cycle.disconnected = True
            return
        cycle.expected_content_length -= count
        if message.get("offset") is None:
            os.lseek(fd, offset + count, os.SEEK_SET)
        if not more_body:
            await plain({"type": "http.response.body", "body": b"", "more_body": False})

    async def _sendfile(self, fd: int, offset: int, count: int) -> int:
        while self.transport.get_write_buffer_size() and not self.transport.is_closing():
            await self._writable()
        sent = 0
        cached_until = offset  # checked once per window, not per call: a full socket takes less than one
        while sent < count:
            if self.transport.is_closing():
                return sent
            at = offset + sent
            if at >= cached_until and page_cached(fd, at, min(count - sent, _SENDFILE_WINDOW)):
                cached_until = at + min(count - sent, _SENDFILE_WINDOW)
            try:
                if at < cached_until:
                    n = os.sendfile(self.socket, fd, at, cached_until - at)
                else:
                    # sendfile would wait for the disk, and on the loop that stalls every connection.
                    window = min(count - sent, _SENDFILE_WINDOW)
                    own = os.dup(self.socket)  # now, while the connection surely holds its number
                    n = await asyncio.get_running_loop().run_in_executor(None, _sendfile_closing, own, fd, at, window)
            except BlockingIOError:
                await self._writable()
                continue
            except (BrokenPipeError, ConnectionResetError):
                self.transport.abort()
                return sent
            if n == 0:
                raise OSError(f"file ended {count - sent} bytes before the response did")
            sent += n
        return sent

    async def _writable(self) -> None:
        if self._lost:
            return
        loop = asyncio.get_running_loop()
        if self._dup < 0:
            self._dup = os.dup(self.socket)
        waiter = self._waiter = loop.create_future()
        loop.add_writer(self._dup, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            loop.remove_writer(self._dup)
            self._waiter = None
            if self._lost:
                self._close_dup()

    def _close_dup(self) -> None:
        if self._dup >= 0:
            os.close(self._dup)
            self._dup = -1


def guarded_protocol(
    header_timeout: float,
    max_connections: int,
    base: type[asyncio.Protocol] = AutoHTTPProtocol,
    zerocopy: bool = True,
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline for each request head and room made for new connections.

    Hand-written because uvicorn (h11 and httptools alike) arms a timer only after a response: a
    connection that never sends a complete request head, first or next on a keep-alive connection,
    stays open for ever, and `limit_concurrency` merely answers 503 to whatever arrives beyond the
    limit. So a flood of idle sockets would starve real clients. Here each head must be complete
    within `header_timeout` seconds, and past `max_connections` the connection idle longest (no
    request in progress) is closed to make room for the new one.

    With `zerocopy`, plain-TCP connections of the httptools protocol also offer each request the ASGI
    `http.response.zerocopy` extension (see FileSender), which disk-store downloads use.
    """
    idle: dict[Any, None] = {}  # connections without a request in progress, longest idle first
    live: set[Any] = set()

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None
        _files: FileSender | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if zerocopy and FileSender.usable(transport):
                self._files = FileSender(transport)  # type: ignore[arg-type]
            live.add(self)
            self._mark_idle()
            self._arm_head_timer()
            if len(live) > max_connections:
                victim = next((c for c in idle if c is not self), None)
                if victim is not None:
                    victim._drop()

        def data_received(self, data: bytes) -> None:
            if self._between_requests():
                self._arm_head_timer()  # a new head starts; keeps the first deadline if one runs
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # a head was parsed completely: a request is running
                self._cancel_head_timer()
                idle.pop(self, None)
                if self._files is not None:
                    # Its task only starts on the loop's next turn, so the scope and send are ours to set now.
                    self._files.offer(self.cycle)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._between_requests():
                self._mark_idle()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            if self._files is not None:
                self._files.connection_lost()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _mark_idle(self) -> None:
            idle.pop(self, None)
            idle[self] = None  # to the end: the longest idle stay first

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._drop)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _forget(self) -> None:
            self._cancel_head_timer()
            idle.pop(self, None)
            live.discard(self)

        def _drop(self) -> None:
            self._forget()
            # Out of uvicorn's count now, not when the loop reports the close: its limit check
            # could otherwise run first and refuse the very request this close makes room for.
            self.connections.discard(self)
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def _require_positive(settings: Settings) -> None:
    for name in ("header_timeout", "max_connections", "forward_max_body_mb"):
        value = getattr(settings, name)
        if value < 1:
            raise ValueError(f"{name} (RUNCACHE_{name.upper()}) must be a positive number, got {value}")


def _ensure_file_descriptors(connections: int) -> None:
    """Each connection is a descriptor; the common soft limit of 1024 would fail accept() and the
    server's own file opens well before `connections`. The hard limit is ours to take."""
    wanted = connections + 1024  # the database, blob reads, upload staging
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            log.warning("open-file limit %d is low for RUNCACHE_MAX_CONNECTIONS=%d", target, connections)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate at once arenas of their own (up to 8 per core) and keeps what
    they free there: the request threads of a busy server then hold much more than they use. Measured
    with 30 concurrent v1 saves: peak 297 -> 209 MB, settled 219 -> 123 MB with two arenas, at no cost
    in throughput. An operator's own MALLOC_ARENA_MAX wins; other C libraries are left alone."""
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8  # glibc's malloc.h
    libc.mallopt(m_arena_max, arenas)


def configure_logging(log_level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    # force: the one-line guarantee holds only if this formatter is the one in use.
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)


def server_config(app: Any, settings: Settings, *, log_level: str, access_log: bool) -> uvicorn.Config:
    """uvicorn for runcache's app, the same for `runcache serve` and the runner's embedded server."""
    _require_positive(settings)
    _ensure_file_descriptors(settings.max_connections)
    return uvicorn.Config(
        app,
        http=guarded_protocol(float(settings.header_timeout), settings.max_connections),
        # uvicorn counts the connection asking too: 503 only when all others are busy, not idle.
        limit_concurrency=settings.max_connections + 1,
        # No logging config of uvicorn's own: its records go through the root handler, escaped too.
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
    )


def serve(settings: Settings, *, log_level: str = "info") -> None:
    configure_logging(log_level)
    _limit_malloc_arenas()
    _require_positive(settings)
    probe = DataDirLock(settings.data_dir)
    probe.acquire()  # fail before announcing a URL; the app holds the lock for its lifetime
    probe.release()
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = settings.public_url.rstrip("/") or f"http://{shown}:{port}"
    app = create_app(settings)
    announce(settings, url)
    # One line per request unless asked to be quieter.
    config = server_config(app, settings, log_level=log_level, access_log=log_level in ("debug", "info"))
    uvicorn.Server(config).run(sockets=[sock])
