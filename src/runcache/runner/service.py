"""The cache service a local run talks to: an embedded runcache server in a background thread, or an external one.

The embedded server is the same application ``runcache serve`` runs, on a random loopback port, over
the same data directory (``./.runcache`` unless told otherwise), so what one run saves the next one
restores. Callers hold :func:`runcache.runner.run.data_dir_lock` while it runs: the server's start-up
recovery clears upload staging, so two embedded servers must never share a data directory at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runcache.config import Settings

START_TIMEOUT = 30.0


class ServiceError(Exception):
    pass


@dataclass
class CacheEndpoint:
    url: str  # base URL, no trailing slash
    token: str
    protocol: str  # v1 | v2
    kind: str  # embedded | external
    data_dir: Path | None = None

    def client(self):
        from runcache.client.transfer import CacheClient

        return CacheClient(self.url, self.token, self.protocol)

    def describe(self) -> str:
        if self.kind == "embedded":
            return f"embedded server {self.url} (data {self.data_dir})"
        return f"{self.url} ({self.protocol})"


class EmbeddedServer:
    def __init__(self, settings: Settings) -> None:
        settings.data_dir = settings.data_dir.resolve()
        self.settings = settings
        self.url = ""
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmbeddedServer:
        import uvicorn

        from runcache.serve import bind
        from runcache.server.app import create_app

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        sock = bind("127.0.0.1", 0)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        app = create_app(self.settings)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30, lifespan="on")
        server = uvicorn.Server(config)
        self._server = server
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name="runcache-embedded-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if errors or not self._thread.is_alive():
                raise ServiceError(f"the embedded cache server did not start: {errors[0] if errors else 'exited'}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError("the embedded cache server did not start within 30 s")
            time.sleep(0.01)
        return self

    def token(self, repository: str, ref: str, *, default_branch: str, base_ref: str | None = None) -> str:
        from runcache.auth.tokens import TokenIssuer
        from runcache.core.scopes import build_scopes

        scopes = build_scopes(ref, default_branch=default_branch, base_ref=base_ref)
        return TokenIssuer(self.settings.derived_key("tokens")).issue(
            repository=repository, scopes=scopes, ttl_seconds=24 * 3600
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)


@contextlib.contextmanager
def cache_endpoint(
    *,
    server_url: str | None,
    token: str | None,
    protocol: str,
    data_dir: Path,
    repository: str,
    ref: str,
    default_branch: str,
    base_ref: str | None = None,
) -> Iterator[CacheEndpoint]:
    """An embedded server for the duration of the block, or the external one given with ``--server``."""
    if server_url:
        token = token or os.environ.get("RUNCACHE_TOKEN") or ""
        if not token:
            raise ServiceError(
                "--server needs a token: pass --token or set RUNCACHE_TOKEN "
                f"(e.g. runcache token --repo {repository} --ref {ref} on the server's data directory)"
            )
        yield CacheEndpoint(server_url.rstrip("/"), token, protocol, "external")
        return
    # Absolute: the run changes directory (actions run in the workspace) while the server thread works.
    settings = Settings.from_env(data_dir=Path(data_dir).resolve())
    server = EmbeddedServer(settings).start()
    try:
        yield CacheEndpoint(
            server.url,
            server.token(repository, ref, default_branch=default_branch, base_ref=base_ref),
            protocol,
            "embedded",
            settings.data_dir,
        )
    finally:
        server.stop()
