"""Helpers shared by the direct-transfer tests (tests/integration/test_direct_downloads.py on S3,
test_azure_direct.py on Azure): a workspace to cache, what the runcache server's own blob routes carried,
the runcache CLI against a server, and URL surgery for tampering."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from helpers import RUNCACHE, ClientRun, Server

UPLOAD_ROUTE = '"PUT /runcache/uploads/'
ARCHIVE_ROUTE = '"GET /runcache/archives/'


def tree(root: Path) -> dict[str, str]:
    """Every file below `root` with its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def workspace(base: Path, big: int = 0) -> tuple[Path, dict[str, str]]:
    """`base/ws` with incompressible files in `deps/` (plus one of `big` bytes); returns it and its tree."""
    ws = base / "ws"
    deps = ws / "deps"
    (deps / "sub").mkdir(parents=True)
    for i in range(3):
        (deps / f"lib{i}.bin").write_bytes(os.urandom(300_000 + i))
    if big:
        (deps / "big.bin").write_bytes(os.urandom(big))
    (deps / "sub" / "inner.txt").write_text("inner\n")
    return ws, tree(deps)


def blob_route_hits(server: Server) -> tuple[int, int]:
    """Archive uploads and downloads runcache's own blob routes answered, from uvicorn's access lines
    (which must be there at all: the server runs with --log-level info)."""
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    assert '"GET /healthz' in text, "no access log"
    return text.count(UPLOAD_ROUTE), text.count(ARCHIVE_ROUTE)


def client_ok(run: ClientRun) -> None:
    """The real client's save or restore went through without a failure it only warned about."""
    assert run.returncode == 0 and "Failed to" not in run.output and "::warning::" not in run.output, run.output[-4000:]


def cli_runner(
    server: Server, ws: Path, home: Path, protocol: str = "v2"
) -> Callable[..., subprocess.CompletedProcess]:
    """`runcache ARGS…` in `ws` against `server` with a job token, as a CI job outside GitHub runs it."""
    env = {
        **os.environ,
        "RUNCACHE_URL": server.url,
        "RUNCACHE_TOKEN": server.token(),
        "RUNCACHE_PROTOCOL": protocol,
        "HOME": str(home),
    }
    for name in ("ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN", "GITHUB_OUTPUT"):
        env.pop(name, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RUNCACHE, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=300)

    return cli


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def other_path(url: str, other: str) -> str:
    """`url` with the path of `other`: one object's signature on another object."""
    return urlunsplit(urlsplit(url)._replace(path=urlsplit(other).path))
