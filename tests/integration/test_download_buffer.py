"""The download reads ahead of the extraction by up to its buffer (RUNCACHE_DOWNLOAD_BUFFER_MIB), no further.

A restore whose extraction is in a slow stretch (many small files) must keep the link busy: bytes the socket
did not read while the extractor was slow cannot be made up later at the same link speed. The read-ahead is
also the memory a restore may hold, so it must stop at the buffer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from helpers import RUNCACHE, Server
from runcache.client.transfer import DOWNLOAD_PIECE, CacheClient, Download

MiB = 1024 * 1024
VERSION = "b" * 64


def _settled(download: Download, timeout: float = 15.0) -> int:
    """How far the download thread has read once it stops advancing (bytes hashed on the download thread)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = download.hashed.hashed
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.5:
            return now
        time.sleep(0.05)
    return download.hashed.hashed


def test_a_download_reads_ahead_of_a_stalled_consumer_up_to_its_buffer_and_no_further(server: Server) -> None:
    data = os.urandom(40 * MiB)
    with CacheClient(server.url, server.token()) as client:
        client.save("read-ahead", VERSION, iter([data]), None)
        for buffer in (4 * MiB, 16 * MiB):
            with CacheClient(server.url, server.token(), download_buffer=buffer) as reader:
                hit = reader.lookup(["read-ahead"], VERSION)
                assert hit is not None
                download = reader.open_download(hit.url)
                pieces = iter(download)
                first = next(pieces)  # the thread starts with the first read; then the consumer stalls
                ahead = _settled(download) - len(first)
                # Pieces are at most DOWNLOAD_PIECE and at least half of it on a fast link; one more is in
                # hand while the thread waits for room.
                assert buffer // 2 <= ahead <= buffer + 2 * DOWNLOAD_PIECE, (buffer, ahead)
                got = first + b"".join(pieces)
                download.verify()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_a_bad_download_buffer_setting_is_a_usage_error_before_anything_is_fetched(server: Server, tmp_path) -> None:
    env = {**os.environ, "RUNCACHE_URL": server.url, "RUNCACHE_TOKEN": server.token()}
    for bad in ("0", "-5", "lots", "4097", "1.5"):
        proc = subprocess.run(
            [*RUNCACHE, "restore", "--path", "x", "--key", "k"],
            cwd=tmp_path,
            env={**env, "RUNCACHE_DOWNLOAD_BUFFER_MIB": bad},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "RUNCACHE_DOWNLOAD_BUFFER_MIB must be a whole number of MiB from 1 to 4096" in proc.stderr, bad
        assert not (tmp_path / "x").exists()
