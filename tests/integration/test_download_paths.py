"""Downloads through the server: the zero-copy path (os.sendfile of disk blobs, offered by runcache's uvicorn
protocol as the ASGI `http.response.zerocopy` extension) and the byte path it falls back to (object stores,
h11, TLS) must answer alike: ranges, HEAD, lengths, keep-alive, a blob deleted or cut short while it is sent,
a client that goes away, a client slower than the disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from helpers import Server, self_signed
from runcache.server.serve import bind, guarded_protocol, page_cached
from runcache.server.streams import ZEROCOPY, DownloadResponse
from runcache.store.disk import DiskBlobStore
from wire import put_block_list, put_blocks, v1_lookup, v2_create, v2_finalize, v2_save, v2_url

MIB = 1024 * 1024


def _payload(size: int) -> bytes:
    return hashlib.shake_256(b"download-paths").digest(size)


def _blob_file(data_dir: Path, size: int) -> Path:
    (found,) = [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and p.stat().st_size == size]
    return found


def _get_raw(url: str, headers: str = "", method: str = "GET") -> tuple[bytes, socket.socket]:
    """Send a request on a fresh socket; return the response head and the socket (for the body)."""
    parsed = httpx.URL(url)
    s = socket.create_connection((parsed.host, parsed.port))
    target = parsed.raw_path.decode()
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = s.recv(1)
        assert more, head
        head += more
    return head, s


# --- through runcache serve (disk store: the zero-copy path) -------------------------------------
def test_whole_ranges_and_head_answer_exactly(server: Server) -> None:
    data = _payload(3 * MIB + 123)
    tok = server.token()
    v2_save(server, tok, "dl", data)
    url = v2_url(server, tok, "dl")
    with httpx.Client() as client:  # one keep-alive connection: each response must end where it says
        r = client.get(url)
        assert r.status_code == 200 and r.content == data and r.headers["content-length"] == str(len(data))
        for wanted, lo, hi in [
            ("bytes=0-0", 0, 1),
            ("bytes=5-1048580", 5, 1048581),
            (f"bytes={len(data) - 10}-", len(data) - 10, len(data)),
            ("bytes=-7", len(data) - 7, len(data)),
            (f"bytes=1000-{len(data) * 2}", 1000, len(data)),
        ]:
            r = client.get(url, headers={"Range": wanted})
            assert r.status_code == 206, wanted
            assert r.content == data[lo:hi], wanted
            assert r.headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(data)}"
        r = client.get(url, headers={"x-ms-range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        r = client.head(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.headers["content-length"] == "10" and r.content == b""
        r = client.head(url)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(data))
        r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416
        assert client.get(url).content == data  # the connection is still in step after all that
        assert client.get(url + "0").status_code in (403, 401, 404)  # a tampered signature is still refused


def test_a_blob_of_azure_blocks_reads_across_its_files(server: Server) -> None:
    tok = server.token()
    blocks = [_payload(MIB + 1), os.urandom(7), _payload(2 * MIB)[::-1]]
    data = b"".join(blocks)
    up = v2_create(server, tok, "blocks")["signed_upload_url"]
    put_block_list(up, put_blocks(up, blocks)).raise_for_status()
    assert v2_finalize(server, tok, "blocks", len(data))["ok"]
    url = v2_url(server, tok, "blocks")
    assert httpx.get(url).content == data
    lo, hi = MIB - 3, MIB + 1 + 7 + 5  # the end of block 0, all of block 1, the start of block 2
    r = httpx.get(url, headers={"Range": f"bytes={lo}-{hi - 1}"})
    assert r.status_code == 206 and r.content == data[lo:hi]
    location = v1_lookup(server, tok, "blocks").json()["archiveLocation"]
    assert httpx.get(location).content == data


def test_a_blob_deleted_while_it_is_sent_is_sent_whole(server: Server) -> None:
    data = _payload(24 * MIB)
    tok = server.token()
    v2_save(server, tok, "deleted", data)
    url = v2_url(server, tok, "deleted")
    blob = _blob_file(server.data_dir, len(data))
    digest = hashlib.sha256()
    with httpx.stream("GET", url) as r:
        chunks = r.iter_bytes()
        digest.update(next(chunks))
        blob.unlink()  # the open file stays readable to the end
        for chunk in chunks:
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_blob_cut_short_while_it_is_sent_ends_the_connection(server: Server) -> None:
    data = _payload(24 * MIB)
    tok = server.token()
    v2_save(server, tok, "cut", data)
    url = v2_url(server, tok, "cut")
    blob = _blob_file(server.data_dir, len(data))
    head, s = _get_raw(url)
    assert head.startswith(b"HTTP/1.1 200")
    os.truncate(blob, 8 * MIB)  # root may write a read-only file; the server must not pad or hang
    got = 0
    s.settimeout(20)
    while chunk := s.recv(1 << 20):
        got += len(chunk)
    s.close()
    assert got < len(data)
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_client_gone_mid_stream_leaves_the_server_serving(server: Server) -> None:
    data = _payload(32 * MIB)
    tok = server.token()
    v2_save(server, tok, "gone", data)
    url = v2_url(server, tok, "gone")
    for _ in range(5):
        head, s = _get_raw(url)
        assert head.startswith(b"HTTP/1.1 200")
        s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        s.close()
    time.sleep(0.5)
    assert hashlib.sha256(httpx.get(url).content).digest() == hashlib.sha256(data).digest()
    assert server.log_path is not None
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def test_a_slow_client_gets_every_byte(server: Server) -> None:
    data = _payload(8 * MIB)
    tok = server.token()
    v2_save(server, tok, "slow", data)
    url = v2_url(server, tok, "slow")
    head, s = _get_raw(url, "Range: bytes=100-\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    body = bytearray()
    while len(body) < len(data) - 100:
        chunk = s.recv(256 * 1024)
        assert chunk
        body += chunk
        if len(body) < MIB:
            time.sleep(0.01)  # the server's socket fills: it must wait for room, not spin or give up
    s.close()
    assert bytes(body) == data[100:]


def test_a_blob_not_in_the_page_cache_is_sent_from_the_disk(server: Server) -> None:
    data = _payload(12 * MIB + 5)
    tok = server.token()
    v2_save(server, tok, "cold", data)
    url = v2_url(server, tok, "cold")
    fd = os.open(_blob_file(server.data_dir, len(data)), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert not page_cached(fd, 0, len(data))
        r = httpx.get(url, headers={"Range": "bytes=3-"})
        assert r.status_code == 206 and r.content == data[3:]
        assert page_cached(fd, 0, len(data))  # read on the way (off the loop), so the next one is quick
    finally:
        os.close(fd)


def test_page_cached_tells_what_a_read_would_wait_for(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(4 * MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert not page_cached(fd, 0, 4 * MIB) and not page_cached(fd, MIB, 10)
        os.pread(fd, 8192, MIB)
        assert page_cached(fd, MIB, 8192) and page_cached(fd, MIB + 5, 10)
        assert page_cached(fd, 0, 0)
    finally:
        os.close(fd)


# --- the extension itself, in process: offered only where it works; the byte path otherwise -------
class _Harness:
    """uvicorn with runcache's protocol in a thread; the app answers /disk and /generator downloads of one
    disk blob and records whether each request was offered the zero-copy extension."""

    def __init__(self, tmp: Path, base: type[asyncio.Protocol], tls: bool) -> None:
        self.zerocopy = base is HttpToolsProtocol and not tls  # what the server should offer
        self.data = _payload(5 * MIB + 17)
        self.store = DiskBlobStore(tmp / "blobs")
        self.store.put_stream("42", iter([self.data]), size=len(self.data), sha256=None)
        self.offered: list[bool] = []
        kwargs: dict[str, Any] = {}
        if tls:
            cert, key = self_signed(tmp)
            kwargs = {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}
        config = uvicorn.Config(
            self.app,
            http=guarded_protocol(5.0, 50, base),
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            **kwargs,
        )
        self.server = uvicorn.Server(config)
        sock = bind("127.0.0.1", 0)
        self.url = f"{'https' if tls else 'http'}://localhost:{sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    async def app(self, scope: dict, receive: Any, send: Any) -> None:
        self.offered.append(ZEROCOPY in scope.get("extensions", {}))
        lo, hi = (int(x) for x in scope["query_string"].decode().split("-"))

        async def generator() -> AsyncIterator[bytes]:
            async for chunk in self.store.open_range("42", lo, hi):
                yield chunk

        body = self.store.open_range("42", lo, hi) if scope["path"] == "/disk" else generator()
        response = DownloadResponse(body, status_code=200, headers={"Content-Length": str(hi - lo)})
        await response(scope, receive, send)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(params=["httptools", "h11", "httptools-tls"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Harness]:
    base = H11Protocol if request.param == "h11" else HttpToolsProtocol
    h = _Harness(tmp_path, base, tls=request.param.endswith("tls"))
    yield h
    h.stop()


def test_the_extension_is_offered_only_on_plain_httptools_and_every_path_answers_alike(harness: _Harness) -> None:
    data = harness.data
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with httpx.Client(verify=context) as client:
        for path in ("/disk", "/generator"):
            for lo, hi in [(0, len(data)), (0, 1), (MIB - 1, 3 * MIB + 5), (len(data) - 3, len(data))]:
                r = client.get(f"{harness.url}{path}?{lo}-{hi}")
                assert r.status_code == 200 and r.content == data[lo:hi], (path, lo, hi)
            r = client.head(f"{harness.url}{path}?0-{len(data)}")
            assert r.headers["content-length"] == str(len(data)) and r.content == b""
    assert set(harness.offered) == {harness.zerocopy}
