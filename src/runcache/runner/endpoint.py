"""The cache service a local run's steps talk to: an embedded runcache server, or an external one.

The embedded server (``runcache.server.embedded``) runs over the run's data directory (a per-user one
unless told otherwise, see ``runcache.runner.launch``), so what one run saves the next one restores.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runcache.client.config import DEFAULT_DOWNLOAD_BUFFER, ConfigError, download_buffer_bytes
from runcache.config import Settings
from runcache.server.embedded import EmbeddedServer, EmbeddedServerError


class ServiceError(Exception):
    """The run's cache service cannot be used: no token for ``--url``, or the embedded server did not start."""


@dataclass
class CacheEndpoint:
    url: str  # base URL, no trailing slash
    token: str
    protocol: str  # v1 | v2
    kind: str  # embedded | external
    data_dir: Path | None = None
    source: str = ""  # external: where the URL came from (--url, RUNCACHE_URL)
    download_buffer: int = DEFAULT_DOWNLOAD_BUFFER  # RUNCACHE_DOWNLOAD_BUFFER_MIB, checked at start

    def client(self):
        from runcache.client.transfer import CacheClient

        return CacheClient(self.url, self.token, self.protocol, download_buffer=self.download_buffer)

    def describe(self) -> str:
        if self.kind == "embedded":
            return f"embedded server {self.url} (data {self.data_dir})"
        return f"{self.url} ({self.protocol})"


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
    source: str = "--url",
) -> Iterator[CacheEndpoint]:
    """An embedded server for the duration of the block, or the external one given (``--url``, RUNCACHE_URL)."""
    try:
        buffer = download_buffer_bytes(os.environ)
    except ConfigError as exc:
        raise ServiceError(str(exc)) from None
    if server_url:
        token = token or os.environ.get("RUNCACHE_TOKEN") or ""
        if not token:
            raise ServiceError(
                "--url needs a token: pass --token or set RUNCACHE_TOKEN "
                f"(e.g. runcache token --repo {repository} --ref {ref} on the server's data directory)"
            )
        yield CacheEndpoint(server_url.rstrip("/"), token, protocol, "external", source=source, download_buffer=buffer)
        return
    # Absolute: the run changes directory (actions run in the workspace) while the server thread works.
    settings = Settings.from_env(data_dir=Path(data_dir).resolve())
    try:
        server = EmbeddedServer(settings).start()
    except EmbeddedServerError as exc:
        raise ServiceError(str(exc)) from None
    try:
        yield CacheEndpoint(
            server.url,
            server.token(repository, ref, default_branch=default_branch, base_ref=base_ref),
            protocol,
            "embedded",
            settings.data_dir,
            download_buffer=buffer,
        )
    finally:
        server.stop()
