"""Hostile HTTP against a real server: the twirp forwarder's memory and routes, deep JSON, huge numbers,
forged log lines, idle-socket floods and download headers. Each failure here was once a 500, a
traceback in the log, unbounded memory or a starved listener."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import Server, StandIn, serve_stand_in

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
ARTIFACTS = "/twirp/github.actions.results.api.v1.ArtifactService/"
V1 = "/_apis/artifactcache/"
VERSION = "a" * 64
MiB = 1024 * 1024


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def no_traceback(server: Server) -> None:
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]


def rss_kib(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak) of a process, in KiB, without psutil."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


# --- 1. the twirp forwarder ----------------------------------------------------------------------
class Upstream:
    """A results service stand-in that counts the bytes it is sent (Content-Length or chunked)."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        upstream = self

        class Handler(StandIn):
            def do_POST(self) -> None:
                received = 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        while size:
                            got = len(self.rfile.read(min(size, MiB)))
                            received, size = received + got, size - got
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length") or 0)
                    while left:
                        got = len(self.rfile.read(min(left, MiB)))
                        if not got:
                            break
                        received, left = received + got, left - got
                upstream.seen.append({"path": self.path, "received": received})
                self.reply_json({"received": received})

        self.httpd, self.url = serve_stand_in(Handler)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.httpd.shutdown()


@pytest.fixture
def forwarding(tmp_path: Path, upstream: Upstream) -> Iterator[Server]:
    srv = Server(
        tmp_path / "d",
        extra_args=["--results-upstream", upstream.url],
        env={"RUNCACHE_FORWARD_MAX_BODY_MB": "1"},
    ).start()
    yield srv
    srv.stop()


def _zeros(total: int, chunk: int = MiB) -> Iterator[bytes]:
    block = b"\0" * chunk
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


def test_forwarded_body_streams_with_bounded_memory(tmp_path: Path, upstream: Upstream) -> None:
    """A body far larger than the server's memory budget passes through without being held whole."""
    srv = Server(
        tmp_path / "d",
        extra_args=["--results-upstream", upstream.url],
        env={"RUNCACHE_FORWARD_MAX_BODY_MB": "1024"},
    ).start()
    try:
        assert srv.proc is not None
        before = rss_kib(srv.proc.pid, "VmRSS")
        size = 256 * MiB
        r = httpx.post(
            srv.url + ARTIFACTS + "UploadArtifact",
            content=_zeros(size),
            headers={"Content-Length": str(size), "Content-Type": "application/json"},
            timeout=120,
        )
        assert r.status_code == 200 and r.json() == {"received": size}, r.text
        growth_mib = (rss_kib(srv.proc.pid, "VmHWM") - before) / 1024
        assert growth_mib < 100, f"server peak RSS grew {growth_mib:.0f} MiB for a {size // MiB} MiB body"
    finally:
        srv.stop()


def test_forwarded_body_over_the_cap_is_refused(forwarding: Server, upstream: Upstream) -> None:
    # Announced too large: refused before upstream is contacted.
    r = httpx.post(
        forwarding.url + ARTIFACTS + "CreateArtifact",
        content=_zeros(2 * MiB),
        headers={"Content-Length": str(2 * MiB)},
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["code"] == "resource_exhausted", r.text
    assert upstream.seen == []
    # Chunked, so the size shows only while streaming: cut off as soon as it passes the cap.
    r = httpx.post(forwarding.url + ARTIFACTS + "CreateArtifact", content=_zeros(8 * MiB, 64 * 1024), timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "resource_exhausted", r.text
    assert all(seen["received"] <= MiB for seen in upstream.seen)
    # A small call still goes through, chunked or not.
    r = httpx.post(forwarding.url + ARTIFACTS + "CreateArtifact", json={"name": "logs"})
    assert r.status_code == 200 and r.json()["received"] == len(b'{"name":"logs"}')
    r = httpx.post(forwarding.url + ARTIFACTS + "CreateArtifact", content=iter([b"{}"]))
    assert r.status_code == 200 and r.json()["received"] == 2
    no_traceback(forwarding)


@pytest.mark.parametrize(
    "path",
    [
        "/twirp/%2e%2e/admin",
        "/twirp/../admin",
        "/twirp/github.actions.results.api.v1.ArtifactService/%2e%2e",
        "/twirp/github.actions.results.api.v1.ArtifactService/..",
        "/twirp/x%2F..%2F..%2Fadmin/Method",
        "/twirp/github.actions.results.api.v1.ArtifactService/Create%3Fsecret=1",
        "/twirp/github.actions.results.api.v1.ArtifactService/Create%23frag",
        "/twirp/github.actions.results.api.v1.ArtifactService/Create%20Artifact",
        "/twirp/github..results.ArtifactService/Create",
        "/twirp/.ArtifactService/Create",
        "/twirp/9bad.Service/Create",
        "/twirp/github.actions.results.api.v1.ArtifactService/1Create",
        "/twirp/github.actions.results.api.v1.ArtifactService/Cr%C3%A9ate",
    ],
)
def test_forwarder_refuses_names_outside_twirps_grammar(forwarding: Server, upstream: Upstream, path: str) -> None:
    # http.client sends the target verbatim: no client-side dot-segment or percent normalisation.
    host, port = forwarding.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if "%2F" in path:
        # Decoded slashes make more path segments: no route to the forwarder at all (Starlette's 405).
        assert resp.status in (404, 405), (resp.status, body)
    else:
        assert resp.status == 404 and json.loads(body)["code"] == "bad_route", (resp.status, body)
    assert upstream.seen == []


def test_forwarder_passes_valid_names(forwarding: Server, upstream: Upstream) -> None:
    r = httpx.post(forwarding.url + "/twirp/github.actions.results.api.v1.ArtifactService/Create_Artifact2", json={})
    assert r.status_code == 200
    r = httpx.post(forwarding.url + "/twirp/Simple/M", json={})
    assert r.status_code == 200
    assert [s["path"] for s in upstream.seen] == [
        "/twirp/github.actions.results.api.v1.ArtifactService/Create_Artifact2",
        "/twirp/Simple/M",
    ]


# --- 2. deeply nested JSON -----------------------------------------------------------------------
DEPTH = 100_000
DEEP_BODIES = [
    b"[" * DEPTH + b"]" * DEPTH,
    b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    b'{"key":"k","version":"' + b"a" * 64 + b'","x":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
]


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["arrays", "objects", "inside-object"])
def test_deeply_nested_json_is_a_400_not_a_traceback(server: Server, body: bytes) -> None:
    tok = server.token()
    headers = {"Content-Type": "application/json"}
    r = httpx.post(server.url + V1 + "caches", content=body, headers={**headers, **auth(tok)})
    assert r.status_code == 400, r.text
    # twirp reads the body before authenticating: this is what anyone can send.
    r = httpx.post(server.url + TWIRP + "CreateCacheEntry", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
    r = httpx.put(
        server.url + "/repos/octo/app/actions/cache/storage-limit",
        content=body,
        headers={**headers, **auth(server.admin_token())},
    )
    assert 400 <= r.status_code < 500, r.text
    no_traceback(server)


def test_moderately_nested_json_is_still_read(server: Server) -> None:
    # Depth is counted outside strings only: brackets inside a key are just characters.
    key = "[[[[{{{{" * 8 + '"\\'
    body = {"key": key, "version": VERSION, "meta": [[[[{"a": [1]}]]]]}
    r = httpx.post(server.url + V1 + "caches", json=body, headers=auth(server.token()))
    assert r.status_code == 201, r.text


# --- 3. numbers ----------------------------------------------------------------------------------
HUGE_NUMBERS: list[object] = [10**30, "1" + "0" * 30, "9" * 5000, "²", 1e300, -(10**30), "-" + "9" * 40]


@pytest.mark.parametrize("value", HUGE_NUMBERS, ids=range(len(HUGE_NUMBERS)))
def test_huge_sizes_are_4xx(server: Server, value: object) -> None:
    tok = server.token()
    r = httpx.post(
        server.url + V1 + "caches", json={"key": "k", "version": VERSION, "cacheSize": value}, headers=auth(tok)
    )
    assert 400 <= r.status_code < 500, r.text
    r = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": "k", "version": VERSION, "size_bytes": value},
        headers=auth(tok),
    )
    assert r.status_code < 500, r.text
    r = httpx.post(f"{server.url}{V1}caches/1", json={"size": value}, headers=auth(tok))
    assert 400 <= r.status_code < 500, r.text
    no_traceback(server)


def test_integer_literals_past_pythons_digit_limit_are_4xx(server: Server) -> None:
    body = b'{"key":"k","version":"' + VERSION.encode() + b'","cacheSize":' + b"9" * 5000 + b"}"
    r = httpx.post(server.url + V1 + "caches", content=body, headers=auth(server.token()))
    assert r.status_code == 400, r.text
    no_traceback(server)


@pytest.mark.parametrize(
    "crange",
    [
        "bytes 1000000000000000000-1000000000000000009/*",
        "bytes 9223372036854775807-9223372036854775816/*",
        "bytes 0-99999999999999999999999999/*",
        "bytes 0-9/" + "9" * 5000,
        "bytes " + "1" * 5000 + "-" + "1" * 5001 + "/*",
    ],
)
def test_huge_content_ranges_are_4xx(server: Server, crange: str) -> None:
    tok = server.token()
    for size in (None, 10):
        key = f"cr-{size}"
        body: dict[str, object] = {"key": key, "version": VERSION}
        if size is not None:
            body["cacheSize"] = size
        r = httpx.post(server.url + V1 + "caches", json=body, headers=auth(tok))
        cid = r.json()["cacheId"] if r.status_code == 201 else 1
        r = httpx.patch(
            f"{server.url}{V1}caches/{cid}",
            content=b"0123456789",
            headers={**auth(tok), "Content-Range": crange, "Content-Type": "application/octet-stream"},
        )
        assert 400 <= r.status_code < 500, r.text
    no_traceback(server)


def _saved_download_url(server: Server, data: bytes) -> str:
    tok = server.token()
    created = httpx.post(
        server.url + TWIRP + "CreateCacheEntry", json={"key": "dl", "version": VERSION}, headers=auth(tok)
    ).json()
    httpx.put(created["signed_upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"}).raise_for_status()
    fin = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": "dl", "version": VERSION, "size_bytes": len(data)},
        headers=auth(tok),
    ).json()
    assert fin["ok"], fin
    got = httpx.post(
        server.url + TWIRP + "GetCacheEntryDownloadURL", json={"key": "dl", "version": VERSION}, headers=auth(tok)
    ).json()
    return got["signed_download_url"]


@pytest.mark.parametrize(
    "wanted",
    [
        "bytes=99999999999999999999999-",
        "bytes=0-99999999999999999999999",
        "bytes=-99999999999999999999999",
        "bytes=" + "9" * 5000 + "-",
        "bytes=-" + "9" * 5000,
        "bytes=0-" + "9" * 5000,
    ],
)
def test_huge_download_ranges_are_not_500(server: Server, wanted: str) -> None:
    data = bytes(range(256))
    url = _saved_download_url(server, data)
    for header in ("Range", "x-ms-range"):
        r = httpx.get(url, headers={header: wanted})
        assert r.status_code < 500, r.text
        if r.status_code == 206:
            assert r.content == data[int(r.headers["content-range"].split()[1].split("-")[0]) :]
    no_traceback(server)


@pytest.mark.parametrize("param", ["per_page", "page"])
@pytest.mark.parametrize("value", ["9" * 30, "9" * 5000, "-" + "9" * 30])
def test_huge_paging_numbers_are_4xx_or_clamped(server: Server, param: str, value: str) -> None:
    r = httpx.get(
        server.url + "/repos/octo/app/actions/caches",
        params={param: value},
        headers=auth(server.admin_token()),
    )
    assert r.status_code < 500, r.text
    no_traceback(server)


# --- 4. log injection ----------------------------------------------------------------------------
def test_control_characters_in_keys_cannot_forge_log_lines(server: Server) -> None:
    tok = server.token()
    forged = "\r\nFAKE 2026-01-01 INFO runcache.services.cache: committed"
    # NUL is refused outright (PostgreSQL cannot store it); every other separator is accepted and escaped.
    nul = httpx.post(server.url + V1 + "caches", json={"key": "a\x00b", "version": VERSION}, headers=auth(tok))
    assert nul.status_code == 400
    for i, sep in enumerate(["\r\n", "\n", "\r", "\u2028", "\u2029", "\x85", "\x1b[2J"]):
        key = f"inj{i}{forged.replace(chr(13) + chr(10), sep)}"
        r = httpx.post(
            server.url + V1 + "caches", json={"key": key, "version": VERSION, "cacheSize": 4}, headers=auth(tok)
        )
        assert r.status_code == 201, r.text
        cid = r.json()["cacheId"]
        r = httpx.patch(
            f"{server.url}{V1}caches/{cid}",
            content=b"data",
            headers={**auth(tok), "Content-Range": "bytes 0-3/*", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 204
        assert httpx.post(f"{server.url}{V1}caches/{cid}", json={"size": 4}, headers=auth(tok)).status_code == 204
    assert server.log_path is not None
    raw = server.log_path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    # Every separator Python's splitlines() knows, so a log viewer that splits on any of them sees no forgery.
    lines = text.splitlines()
    committed = [ln for ln in lines if "committed entry" in ln]
    assert len(committed) == 7, lines
    assert not [ln for ln in lines if ln.lstrip("\r").startswith("FAKE")], lines
    assert b"\x00" not in raw and b"\x1b" not in raw
    assert "inj0\\r\\nFAKE" in text  # escaped, still readable


# --- 5. idle sockets and connection limits -------------------------------------------------------
def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed its side (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def _idle_sockets(url: str, count: int, first_bytes: bytes) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(first_bytes)
        socks.append(s)
    return socks


def _recv_until(sock: socket.socket, end: bytes) -> bytes:
    """A whole small response: its head and body may come in separate segments."""
    sock.settimeout(5)
    got = b""
    while not got.endswith(end):
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


def test_idle_socket_flood_neither_starves_requests_nor_lives_forever(tmp_path: Path) -> None:
    srv = Server(tmp_path / "d", env={"RUNCACHE_HEADER_TIMEOUT": "3", "RUNCACHE_MAX_CONNECTIONS": "100"}).start()
    socks: list[socket.socket] = []
    try:
        socks = _idle_sockets(srv.url, 300, b"GET /healthz HT")
        opened = time.monotonic()
        # Real requests are served at once although the flood is three times the connection limit.
        assert httpx.get(srv.url + "/healthz", timeout=3).status_code == 200
        r = httpx.get(
            srv.url + V1 + "cache", params={"keys": "nothing", "version": VERSION}, headers=auth(srv.token()), timeout=3
        )
        assert r.status_code == 204
        # Over the limit, the oldest idle connections make room, long before their header timeout.
        time.sleep(0.5)
        assert time.monotonic() - opened < 2.5
        assert sum(_closed_by_server(s) for s in socks) >= 190
        # And the rest are closed once the header timeout passes.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_closed_by_server(s) for s in socks):
            time.sleep(0.2)
        assert all(_closed_by_server(s) for s in socks)
        assert httpx.get(srv.url + "/healthz", timeout=3).status_code == 200
        no_traceback(srv)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_half_sent_request_on_a_kept_alive_connection_times_out(tmp_path: Path) -> None:
    srv = Server(tmp_path / "d", env={"RUNCACHE_HEADER_TIMEOUT": "2"}).start()
    try:
        (s,) = _idle_sockets(srv.url, 1, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(s, b'{"status":"ok"}').startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost:")  # the next request, never finished
        started = time.monotonic()
        s.settimeout(8)
        try:
            rest = s.recv(4096)
        except TimeoutError:
            rest = b"still open"
        except ConnectionResetError:
            rest = b""
        assert rest == b"" and time.monotonic() - started < 6
        # A request that arrives in pieces within the timeout is served normally.
        (s2,) = _idle_sockets(srv.url, 1, b"GET /hea")
        time.sleep(0.5)
        s2.sendall(b"lthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _recv_until(s2, b'{"status":"ok"}').startswith(b"HTTP/1.1 200")
        s.close()
        s2.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_guarded_protocol_on_both_of_uvicorns_parsers(parser: str) -> None:
    """uvicorn falls back to h11 without httptools: the deadline and the eviction must hold on both."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from runcache.server.serve import bind, guarded_protocol

    async def app(scope: dict, receive: object, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    base = H11Protocol if parser == "h11" else HttpToolsProtocol
    config = uvicorn.Config(
        app, http=guarded_protocol(1.0, 5, base), limit_concurrency=6, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        socks = _idle_sockets(url, 12, b"GET / HT")
        assert httpx.get(url, timeout=3).text == "ok"
        time.sleep(0.3)
        assert sum(_closed_by_server(s) for s in socks) >= 7  # evicted long before the 1 s deadline
        (kept,) = _idle_sockets(url, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _recv_until(kept, b"ok").startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET / HTTP/1.1\r\nHo")
        time.sleep(1.8)
        assert all(_closed_by_server(s) for s in [*socks, kept])
        socks.append(kept)
    finally:
        for s in socks:
            s.close()
        server.should_exit = True
        thread.join(10)


# --- 6. download headers -------------------------------------------------------------------------
def test_downloads_say_nosniff_on_every_answer(server: Server) -> None:
    data = b"<html><script>alert(1)</script></html>"
    url = _saved_download_url(server, data)
    answers = [
        httpx.get(url),
        httpx.head(url),
        httpx.get(url, headers={"Range": "bytes=0-5"}),
        httpx.get(url, headers={"Range": f"bytes={len(data) + 10}-"}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 206, 416]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.status_code, dict(r.headers))


def test_every_response_says_nosniff_errors_included(server: Server) -> None:
    tok = server.token()
    answers = [
        httpx.get(server.url + "/healthz"),
        httpx.get(server.url + "/runcache/archives/1?sp=r&se=1&sig=bad"),  # Azure-style XML error
        httpx.post(server.url + "/_apis/artifactcache/caches", json={}, headers={"Authorization": f"Bearer {tok}"}),
        httpx.post(server.url + "/twirp/github.actions.results.api.v1.CacheService/Nope", json={}),
        httpx.get(server.url + "/repos/o/r/actions/caches"),
        httpx.get(server.url + "/no/such/page"),
    ]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)
