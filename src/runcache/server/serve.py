"""Running the server: bind, announce the URL and client environment, then serve until stopped."""

from __future__ import annotations

import asyncio
import ctypes
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


def guarded_protocol(
    header_timeout: float, max_connections: int, base: type[asyncio.Protocol] = AutoHTTPProtocol
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline for each request head and room made for new connections.

    Hand-written because uvicorn (h11 and httptools alike) arms a timer only after a response: a
    connection that never sends a complete request head, first or next on a keep-alive connection,
    stays open for ever, and `limit_concurrency` merely answers 503 to whatever arrives beyond the
    limit. So a flood of idle sockets would starve real clients. Here each head must be complete
    within `header_timeout` seconds, and past `max_connections` the connection idle longest (no
    request in progress) is closed to make room for the new one.
    """
    idle: dict[Any, None] = {}  # connections without a request in progress, longest idle first
    live: set[Any] = set()

    class GuardedProtocol(base):  # type: ignore[valid-type, misc]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
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

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._between_requests():
                self._mark_idle()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
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
