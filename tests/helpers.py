"""Test harness: a real runcache server process and the real @actions/cache client driven through Node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import httpx

from runcache.auth.tokens import TokenIssuer
from runcache.config import Settings
from runcache.core.scopes import build_scopes

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "node"
RUNCACHE = [sys.executable, "-m", "runcache.cli"]


@dataclass
class Server:
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""
    log_path: Path | None = None

    def start(self, timeout: float = 20) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [*RUNCACHE, "serve", "--data-dir", str(self.data_dir), "--port", "0", *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **self.env},
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        deadline = time.time() + timeout
        first = self.proc.stdout.readline().decode()
        if "serving on" not in first:
            self.stop()
            raise RuntimeError(f"server did not start: {first!r}; log {self.log_path.read_text()}")
        self.url = first.split("serving on", 1)[1].strip().rstrip("/")
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()  # never leave a process behind a failed start
        raise RuntimeError(f"server did not become healthy in {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _settings(self) -> Settings:
        # A server given RUNCACHE_SECRET (replicas) signs with it, not with its data directory's secret.
        secret = {k: v for k, v in self.env.items() if k == "RUNCACHE_SECRET"}
        return Settings.from_env(secret, data_dir=self.data_dir)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def token(
        self,
        repo: str = "octo/app",
        ref: str = "refs/heads/main",
        *,
        default_branch: str = "main",
        base_ref: str | None = None,
        mode: str = "write",
        ttl: int = 3600,
    ) -> str:
        settings = self._settings()
        scopes = build_scopes(ref, default_branch=default_branch, base_ref=base_ref, mode=mode)
        return TokenIssuer(settings.derived_key("tokens")).issue(repository=repo, scopes=scopes, ttl_seconds=ttl)

    def admin_token(
        self,
        repo: str | None = "octo/app",
        *,
        org: str | None = None,
        site: bool = False,
        permission: str = "admin",
        ttl: int = 3600,
    ) -> str:
        """A management token (REST API, CLI, web page) for one repository, an org (`org=`) or the site."""
        settings = self._settings()
        return TokenIssuer(settings.derived_key("tokens")).issue_admin(
            repository=None if (org or site) else repo, org=org, site=site, permission=permission, ttl_seconds=ttl
        )


@dataclass
class ClientRun:
    result: dict
    output: str
    returncode: int


def run_client(
    server: Server,
    protocol: str,
    command: str,
    *,
    workspace: Path,
    token: str,
    ref: str = "refs/heads/main",
    paths: list[str],
    key: str,
    restore_keys: list[str] | None = None,
    lookup_only: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
    background: bool = False,
) -> ClientRun | subprocess.Popen:
    """Run the real @actions/cache in Node with a runner-like environment."""
    temp = workspace.parent / f"{workspace.name}-runner-temp"
    temp.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(temp),
        "GITHUB_REF": ref,
        "ACTIONS_RUNTIME_TOKEN": token,
        "GITHUB_SERVER_URL": "https://github.com",
    }
    if protocol == "v1":
        env["ACTIONS_CACHE_URL"] = server.url + "/"
    else:
        env["ACTIONS_RESULTS_URL"] = server.url + "/"
        env["ACTIONS_CACHE_SERVICE_V2"] = "true"
    env.update(extra_env or {})
    opts = {"paths": paths, "key": key, "restoreKeys": restore_keys or [], "lookupOnly": lookup_only}
    argv = ["node", str(NODE_DIR / "cache-client.mjs"), command, json.dumps(opts)]
    if background:
        return subprocess.Popen(argv, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise AssertionError(f"client printed no result (rc={proc.returncode}):\n{output}")
    return ClientRun(json.loads(lines[-1][len("RESULT ") :]), output, proc.returncode)


class StandIn(BaseHTTPRequestHandler):
    """Base of the HTTP stand-ins tests start for runcache's neighbours (a JWKS, a results service)."""

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, value: object, status: int = 200) -> None:
        self.reply(status, json.dumps(value).encode())

    def log_message(self, *args: object) -> None:
        pass


def serve_stand_in(handler: type[StandIn]) -> tuple[ThreadingHTTPServer, str]:
    """Serve `handler` on a loopback port in a daemon thread: (server, base URL); shutdown() stops it."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def self_signed(directory: Path, host: str = "localhost") -> tuple[Path, Path]:
    """(cert.pem, key.pem) in `directory`: a certificate for `host` and 127.0.0.1 that is its own CA, so one
    file is both the server's chain and the client's trust store. Go ignores the common name: the host
    must be in the SANs."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def cli_env(server: Server, protocol: str, token: str, ws: Path) -> dict[str, str]:
    """The environment of a `runcache` CLI process run against `server` from workspace `ws`, with nothing
    of the machine's own Actions environment leaking in."""
    env = {
        **os.environ,
        "RUNCACHE_URL": server.url,
        "RUNCACHE_TOKEN": token,
        "RUNCACHE_PROTOCOL": protocol,
        "GITHUB_WORKSPACE": str(ws),
    }
    for name in ("ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "ACTIONS_RUNTIME_TOKEN", "GITHUB_OUTPUT"):
        env.pop(name, None)
    return env


def wait_until_up(proc: subprocess.Popen, probe: Callable[[], bool], timeout: float) -> Exception | None:
    """Call `probe` every 0.3 s until it says the service a test started is up (None), the process exits or
    `timeout` passes (the probe's last exception, to explain why; a probe that raises is not up yet)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = RuntimeError(f"not up within {timeout:g} s")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return RuntimeError(f"exited with status {proc.returncode}")
        try:
            if probe():
                return None
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    return last


def stop_service(proc: subprocess.Popen | None, log: IO[bytes] | None, folder: Path) -> None:
    """End a service a test started (SIGTERM, then SIGKILL after 15 s), close its log, remove its folder."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if log is not None:
        log.close()
    shutil.rmtree(folder, ignore_errors=True)
