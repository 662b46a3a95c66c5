"""Scale-out harness: N runcache replicas sharing one metadata database and one blob store, behind one
Debian nginx on loopback as a round-robin load balancer (tests/integration/test_scale_out.py,
bench/scale.py).

    replicas = Replicas(tmp / "cluster", database_url=pg.url(db), blobs=f"s3://{s3.bucket}/ci", env=s3.env)
    replicas.start()            # N replicas (`runcache serve`), then nginx in front of them
    replicas.url                # the balancer: what clients are given
    replicas.kill(1)            # SIGKILL, as a crashed pod; restart(1) brings it back on its old port
    replicas.add()              # one more replica (joins the balancer unless join=False)
    replicas.stop()

Each replica has its own data directory (upload staging, the data-directory lock, hence its own node name)
and a port fixed for its lifetime, so a restarted replica comes back at the address nginx already knows.
All replicas share RUNCACHE_SECRET: a token or signed URL made by one is good on every other one.

nginx runs as a non-daemon child (`daemon off`, killed with this process through PR_SET_PDEATHSIG) from its
own prefix directory: config, pid, logs and temp paths all live there, nothing under /var or /etc is touched,
and it listens on a free loopback port above 1024, so it works for root and for other users alike. As root,
`user root` keeps the workers able to write the temp paths inside pytest's private (0700) directories.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from helpers import Server
from pg import Cluster
from s3server import _free_ports

NGINX = Path("/usr/sbin/nginx")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SECRET = "scale-out-shared-secret"
# One access-log line per request, tab-separated, naming every upstream nginx tried for it: the tests read
# from it which replica served which request (and how many bytes went up and down).
LOG_FIELDS = (
    "msec",
    "request_method",
    "uri",
    "status",
    "upstream_addr",
    "upstream_status",
    "request_length",
    "body_bytes_sent",
    "request_time",
)


class NginxMissing(RuntimeError):
    pass


def nginx_binary() -> Path:
    """Debian's nginx; missing is a broken setup (tests fail, never skip)."""
    if not NGINX.exists():
        raise NginxMissing(f"{NGINX} is missing: run scripts/setup --dev (installs Debian's nginx)")
    return NGINX


def _die_with_parent() -> None:
    """Runs in the child before exec: nginx gets SIGTERM when the test process dies, so a killed run does not
    leave a balancer behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class LogLine:
    method: str
    uri: str
    status: int
    upstreams: list[str]  # every replica nginx tried, in order ("127.0.0.1:PORT"); the last one answered
    request_length: int
    body_bytes_sent: int
    at: float


@dataclass
class Balancer:
    """nginx on 127.0.0.1:<port> spreading requests round-robin over `upstreams` ("host:port")."""

    prefix: Path
    upstreams: list[str]
    port: int = 0
    # Extra directives for the upstream block: "ip_hash;" gives stickiness per client address, which
    # replicas needed before uploads in flight were shared (useful to check the harness against old servers).
    balancing: str = ""
    workers: str = "auto"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def config(self) -> str:
        # As root nginx would switch its workers to nobody, who cannot write our (0700) temp paths.
        user = "user root;" if os.geteuid() == 0 else ""
        # max_fails=1 fail_timeout=2s: a replica that refused a connection is left out for two seconds, then a
        # real request probes it again, so a restarted replica is back in rotation within seconds.
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in self.upstreams)
        log_format = "\\t".join(f"${f}" for f in LOG_FIELDS)
        p = self.prefix
        return f"""
{user}
worker_processes {self.workers};
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 4096; }}
http {{
    log_format scaleout '{log_format}';
    access_log {p}/access.log scaleout;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    upstream runcache {{
        # Shared memory: one round-robin (and one view of failed replicas) for all workers, so consecutive
        # requests alternate replicas whichever worker accepted them.
        zone runcache 256k;
        {self.balancing}
{servers}
        # Reused connections to the replicas, as a production balancer keeps them.
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        # Archives of any size, streamed both ways: no body is spooled to disk or held whole in memory,
        # so a chunk reaches its replica as the client sends it and a download starts at once.
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{
            proxy_pass http://runcache;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Signed URLs are built from Host: they must name the balancer, not the replica that signed them.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
            # A dead replica: a refused or failed connection moves the request to the next replica, whatever
            # its method, because nothing was sent yet. Once a request was sent nginx does not resend a
            # POST or PATCH (no `non_idempotent`): the reserve or commit may have happened. Idempotent PUT
            # (Azure blocks, Put Blob) and GET would be resent, but only until body bytes have gone up
            # (unbuffered, nginx keeps no copy) or the response has started. Past that point the client gets
            # a 502 or a cut-off body and retries itself (@actions/cache retries a chunk's 502 once, after
            # 5 s). `error timeout` only: a 5xx a replica answered is its answer, not a reason to ask another.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 0;
            proxy_connect_timeout 2s;
            # Commits of large entries copy the archive into the object store before they answer.
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }}
    }}
}}
"""

    def start(self, timeout: float = 15) -> Balancer:
        binary = nginx_binary()
        self.prefix.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = _free_ports(1)[0]
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        # -e: nginx opens its error log before it reads the config; keep even that one out of /var/log.
        argv = [str(binary), "-e", str(self.prefix / "error.log"), "-p", str(self.prefix), "-c", str(conf)]
        self.proc = subprocess.Popen(
            [*argv, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        log = (self.prefix / "error.log").read_text() if (self.prefix / "error.log").exists() else ""
        raise RuntimeError(f"nginx did not come up on {self.url}: {log[-2000:]}")

    def reload(self, upstreams: list[str]) -> None:
        """New upstreams without dropping requests in flight: SIGHUP starts workers with the new config and
        lets the old ones finish what they serve."""
        assert self.proc is not None and self.proc.poll() is None
        self.upstreams = list(upstreams)
        (self.prefix / "nginx.conf").write_text(self.config())
        error_log = self.prefix / "error.log"
        seen = error_log.read_text(errors="replace").count("reconfiguring")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        # The master logs "reconfiguring" when it has read the new config and starts new workers.
        while error_log.read_text(errors="replace").count("reconfiguring") <= seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not reload: {error_log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.3)  # the new workers accept from here on

    def lines(self) -> list[LogLine]:
        """The access log so far (a request appears once nginx has answered it)."""
        if not self.access_log.exists():
            return []
        out = []
        for raw in self.access_log.read_text(errors="replace").splitlines():
            f = dict(zip(LOG_FIELDS, raw.split("\t"), strict=False))
            if len(f) != len(LOG_FIELDS):
                continue
            ups = [u.strip() for u in re.split(r"[,:]\s", f["upstream_addr"]) if u.strip() not in ("", "-")]
            out.append(
                LogLine(
                    method=f["request_method"],
                    uri=f["uri"],
                    status=int(f["status"]),
                    upstreams=ups,
                    request_length=int(f["request_length"]),
                    body_bytes_sent=int(f["body_bytes_sent"]),
                    at=float(f["msec"]),
                )
            )
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the master ends its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Gate:
    """A TCP forwarder on loopback that holds every connection until `open()`: put it between a replica and
    a service it needs at start (the object store) to make that start happen at a chosen moment, whatever
    the start-up costs on a busy machine. Bytes pass unchanged (Host too, so S3 signatures still match)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self._open = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held = 0  # connections that arrived while closed
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.set()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            if not self._open.is_set():
                self.held += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self._open.wait()
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            conn.close()
            return
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@dataclass
class Replicas:
    """`count` runcache replicas on one database and one blob store, behind a `Balancer`."""

    base: Path
    database_url: str
    blobs: str  # s3://bucket/prefix (with `env` naming the endpoint and keys) or a directory all share
    env: dict[str, str] = field(default_factory=dict)
    count: int = 2
    balancing: str = ""  # see Balancer.balancing; "" is plain round-robin
    extra_args: list[str] = field(default_factory=list)
    log_level: str = "info"  # info: one access line per request in each replica's log
    servers: list[Server] = field(default_factory=list)
    balancer: Balancer | None = None

    @property
    def url(self) -> str:
        assert self.balancer is not None, "start() first"
        return self.balancer.url

    @property
    def front(self) -> Server:
        """A Server-shaped handle on the balancer, for helpers that take one (tests/wire.py, run_client)."""
        return Server(self.base / "balancer-handle", env=self._env(), url=self.url)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.env, "RUNCACHE_SECRET": SECRET, **(extra or {})}

    def _server(self, index: int, env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
        port = _free_ports(1)[0]
        argv = ["--port", str(port), "--database-url", self.database_url, "--blobs", self.blobs]
        argv += ["--log-level", self.log_level, *self.extra_args, *(args or [])]
        return Server(self.base / f"replica{index}", extra_args=argv, env=self._env(env))

    def start(self) -> Replicas:
        self.base.mkdir(parents=True, exist_ok=True)
        try:
            # One after the other: the first migrates the database, the rest find it at head.
            for i in range(self.count):
                self.servers.append(self._server(i).start())
            self.balancer = Balancer(self.base / "nginx", self.addresses(), balancing=self.balancing).start()
        except BaseException:
            self.stop()
            raise
        return self

    def addresses(self) -> list[str]:
        return [s.url.removeprefix("http://") for s in self.servers]

    def port(self, index: int) -> int:
        return int(self.servers[index].url.rsplit(":", 1)[1])

    def index_of(self, upstream: str) -> int:
        """Which replica an upstream address in the access log is."""
        return self.addresses().index(upstream)

    def add(self, *, join: bool = True, env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
        """Start one more replica (`env` and `args` on top of the shared ones); with `join` the balancer
        sends it requests once it is healthy."""
        server = self._server(len(self.servers), env, args).start()
        self.servers.append(server)
        if join:
            assert self.balancer is not None
            self.balancer.reload(self.addresses())
        return server

    def retire(self, index: int) -> None:
        """Take a replica out of the balancer, then stop it (the last one added: indexes stay valid)."""
        assert index == len(self.servers) - 1, "retire the newest replica only"
        server = self.servers.pop()
        if self.balancer is not None:
            self.balancer.reload(self.addresses())
        server.stop()

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown, no cleanup, connections reset mid-request, as a crashed node."""
        self.servers[index].kill()

    def restart(self, index: int) -> Server:
        """The same data directory and port (the balancer still lists it), so its start-up recovery runs."""
        server = self.servers[index]
        server.stop()
        return server.start()

    def token(self, repo: str = "octo/app", ref: str = "refs/heads/main", **kw: object) -> str:
        return self.servers[0].token(repo, ref, **kw)  # type: ignore[arg-type]

    def admin_token(self, repo: str = "octo/app", **kw: object) -> str:
        return self.servers[0].admin_token(repo, **kw)  # type: ignore[arg-type]

    def replica_log(self, index: int) -> str:
        path = self.servers[index].log_path
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for s in self.servers:
            s.stop()


@contextlib.contextmanager
def replicas_on(
    base: Path, pg: Cluster, blobs: str, env: dict[str, str], extra_args: list[str] | None = None
) -> Iterator[Replicas]:
    """Two replicas behind nginx on a database of their own in `pg` and on `blobs`; a missing nginx fails
    the caller's tests (never skips them)."""
    import pytest

    try:
        nginx_binary()
    except NginxMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    db = pg.create_database()
    cluster = Replicas(
        base,
        database_url=pg.url(db).replace("postgresql+psycopg://", "postgresql://"),
        blobs=blobs,
        env=env,
        extra_args=extra_args or [],
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        pg.drop_database(db)
