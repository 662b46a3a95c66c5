"""The protocol client's upload shapes against a real server: streamed Put Blob, staged blocks, v1 chunks."""

from __future__ import annotations

import hashlib
import os

import pytest

from helpers import Server
from runcache.client import transfer
from runcache.client.transfer import CHUNK_SIZE, CacheClient

# Every test taking `server` runs on the embedded default and on scale-out (tests/conftest.py).
BOTH_BACKENDS = True


def payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize(
    ("protocol", "azure"), [("v2", False), ("v2", True), ("v1", False)], ids=["put-blob", "blocks", "v1-chunks"]
)
def test_multi_chunk_upload_shapes_round_trip(server: Server, monkeypatch, protocol: str, azure: bool) -> None:
    # Blocks are what real Azure Storage gets; forcing the host check exercises that path here.
    monkeypatch.setattr(transfer, "_is_azure", lambda url: azure)
    data = payload(2 * CHUNK_SIZE + 12345)
    sent: list[int] = []
    with CacheClient(server.url, server.token(), protocol) as client:
        size = client.save("shape-key", "v" * 64, iter([data[:1000], data[1000:]]), sent.append)
        assert size == len(data) and sum(sent) == len(data)
        hit = client.lookup(["shape-key"], "v" * 64)
        assert hit is not None and hit.key == "shape-key"
        download = client.open_download(hit.url)
        got = b"".join(download)
        download.verify()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    log = server.log_path.read_text() if server.log_path else ""
    assert ("put block list of 3 blocks" in log) == azure
