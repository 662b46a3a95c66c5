#!/usr/bin/env python3
"""A bandwidth-limited TCP proxy on loopback, to put a cache server behind a slower link.

    .venv/bin/python bench/throttle.py --target http://127.0.0.1:PORT --rate-mbps 100 [--port 0]

It listens on a random 127.0.0.1 port, forwards every connection to the target unchanged and limits the
bytes with two token buckets, one per direction (server→client and client→server), each shared by all
connections: like one full-duplex link, so parallel downloads split the rate instead of multiplying it.
1 MB/s is 10^6 bytes per second. The proxy passes the Host header through, so a server that builds its
signed blob URLs from Host hands out URLs that point back at the proxy.

From Python: `with Throttle("http://127.0.0.1:PORT", rate_mbps=100) as t: ... t.url ...` (the proxy runs
an event loop on its own thread; `t.down_bytes`/`t.up_bytes` count what it carried).

The proxy shares the CPU with the clients it measures, so it keeps its own cost low: uvloop when it is
installed, raw non-blocking sockets and one reused buffer per direction (about 10% of a core at 100 MB/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

READ_SIZE = 256 * 1024


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is there (it comes with uvicorn[standard]), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class TokenBucket:
    """Debt-based token bucket: take(n) waits until the link has had time to carry n bytes."""

    def __init__(self, rate_bytes: float, burst: int) -> None:
        self.rate = rate_bytes
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()  # FIFO among waiting connections

    async def take(self, n: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


class Throttle:
    def __init__(self, target: str, rate_mbps: float, *, port: int = 0, burst: int = 1024 * 1024) -> None:
        parts = urlsplit(target if "://" in target else f"http://{target}")
        if not parts.hostname or not parts.port:
            raise ValueError(f"target needs a host and a port: {target!r}")
        self.target = (parts.hostname, parts.port)
        self.rate = rate_mbps * 1e6 if rate_mbps and rate_mbps > 0 else 0.0  # 0: no limit
        self.burst = burst
        self.port = port
        self.url = ""
        self.down_bytes = 0  # server → client
        self.up_bytes = 0  # client → server
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- running --------------------------------------------------------------------------------
    async def _bind(self) -> None:
        self._down = TokenBucket(self.rate, self.burst) if self.rate else None
        self._up = TokenBucket(self.rate, self.burst) if self.rate else None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn(self._accept())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start(self) -> Throttle:
        """Run on a daemon thread with its own event loop; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="throttle", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Throttle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counters(self) -> None:
        self.down_bytes = self.up_bytes = self.connections = 0

    # --- forwarding -----------------------------------------------------------------------------
    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            client, _ = await loop.sock_accept(self._listener)
            self.connections += 1
            self._spawn(self._handle(client))

    async def _handle(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(upstream, self.target)
            await asyncio.gather(
                self._pump(client, upstream, self._up, "up"),
                self._pump(upstream, client, self._down, "down"),
            )
        except (OSError, asyncio.CancelledError):
            pass  # the target is gone, or the proxy is stopping: end quietly
        finally:
            client.close()
            upstream.close()

    async def _pump(self, src: socket.socket, dst: socket.socket, bucket: TokenBucket | None, way: str) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        try:
            while n := await loop.sock_recv_into(src, buf):
                if bucket is not None:
                    await bucket.take(n)
                await loop.sock_sendall(dst, view[:n])
                if way == "down":
                    self.down_bytes += n
                else:
                    self.up_bytes += n
            dst.shutdown(socket.SHUT_WR)  # half-close: the other direction may still be talking
        except OSError:
            # A reset on one side ends both directions, so the other pump does not wait forever.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="http://127.0.0.1:PORT of the server to put behind the link")
    ap.add_argument("--rate-mbps", type=float, default=100.0, help="MB/s (10^6 bytes) each way; 0 for no limit")
    ap.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (default: any free port)")
    args = ap.parse_args()
    proxy = Throttle(args.target, args.rate_mbps, port=args.port)

    async def run() -> None:
        await proxy._bind()
        limit = f"{args.rate_mbps:g} MB/s each way" if proxy.rate else "no limit"
        print(f"throttling on {proxy.url} -> {args.target} ({limit})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await proxy._shutdown()

    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
