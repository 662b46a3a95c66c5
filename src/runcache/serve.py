"""Running the server: bind, announce the URL and client environment, then serve until stopped."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from pathlib import Path

import uvicorn

from runcache.config import Settings
from runcache.server.app import create_app
from runcache.store.lock import DataDirLock


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


def serve(settings: Settings, *, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    probe = DataDirLock(settings.data_dir)
    probe.acquire()  # fail before announcing a URL; the app holds the lock for its lifetime
    probe.release()
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = settings.public_url.rstrip("/") or f"http://{shown}:{port}"
    app = create_app(settings)
    announce(settings, url)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug", timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])
