"""`runcache restore` start-up: what the command loads before its lookup, and the download's hand-over.

A small restore is mostly start-up (docs/client.md), so these guard the imports and the shutdown that
were cut from it; timings belong to bench/client.py, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from runcache.client import transfer
from runcache.client.transfer import CacheServiceError, Download, _Hashed

# What `runcache restore` imports up to its lookup: the CLI, its command module, and what cmd_restore imports.
RESTORE_IMPORTS = """
import sys
from runcache.cli import build_parser
build_parser("restore")
import runcache.cli.cache, runcache.client.config, runcache.client.interrupt
import runcache.client.operations, runcache.client.progress, runcache.client.transfer
print(json.dumps(sorted(sys.modules)))
"""

# Needed only once an archive is on its way (the extractor, the path globbing), by a save (tar's job), on a
# terminal (rich), or never (httpx's command-line tool and what it pulls in).
NOT_BEFORE_LOOKUP = [
    "runcache.client.extract",
    "runcache.client.paths",
    "runcache.client.hashfiles",
    "runcache.core.hashfiles",
    "subprocess",
    "gzip",
    "rich",
    "httpx._main",
    "click",
    "pygments",
    "runcache.server",
    "runcache.store.metadata",
]


def _modules_after(code: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, env=env, check=True
    ).stdout
    return set(json.loads(out))


def test_restore_loads_nothing_before_its_lookup_that_it_does_not_need_yet() -> None:
    loaded = _modules_after(RESTORE_IMPORTS)
    assert "httpx" in loaded and "runcache.client.operations" in loaded  # the probe did import the command
    assert sorted(m for m in NOT_BEFORE_LOOKUP if m in loaded) == []


def test_the_command_freezes_the_heap_before_shutdown_but_a_caller_keeps_its_gc() -> None:
    # Run as the command (argv=None), main() freezes: shutdown then skips full collections over every import.
    # Called as a function it must not: the caller's garbage would never be collected again.
    code = (
        "import gc, sys\nfrom runcache.cli import main\n"
        "before = gc.get_freeze_count()\n"
        "main(['hash-files', 'no-such-file-*'])\n"
        "called = gc.get_freeze_count()\n"
        "sys.argv = ['runcache', 'hash-files', 'no-such-file-*']\n"
        "main()\n"
        "print(json.dumps([before, called, gc.get_freeze_count()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, env=env)
    before, called, after = json.loads(out.stdout.splitlines()[-1])
    assert before == 0 and called == 0
    assert after > 0


def _download(pieces: list[bytes], size: int | None, sha: str | None) -> Download:
    hashed = _Hashed(iter(pieces))
    return Download(size, sha, iter(hashed), hashed)


def test_download_pieces_are_joined_up_to_the_read_size_and_hashed_on_the_way() -> None:
    data = os.urandom(3 * transfer.DOWNLOAD_PIECE + 12345)
    socket_reads = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    download = _download(socket_reads, len(data), hashlib.sha256(data).hexdigest())
    got = list(download)
    assert b"".join(got) == data
    # Whole 64 KiB reads, as many as fit: the decompressor's reads then take each piece without a copy.
    assert all(transfer.DOWNLOAD_PIECE - 65536 < len(c) <= transfer.DOWNLOAD_PIECE for c in got[:-1])
    assert len(got) == 4
    download.verify()
    assert download.received == len(data) and download.sha256 == hashlib.sha256(data).hexdigest()


def test_download_verify_refuses_a_wrong_digest_a_short_body_and_an_unread_rest() -> None:
    data = b"x" * 5000
    wrong = _download([data], len(data), "0" * 64)
    list(wrong)
    with pytest.raises(CacheServiceError, match="does not match"):
        wrong.verify()

    short = _download([data], len(data) + 1, None)
    list(short)
    with pytest.raises(CacheServiceError, match="Incomplete download"):
        short.verify()

    # No Content-Length, and the reader stopped early: the digest taken ahead of it vouches for nothing.
    piece = b"y" * transfer.DOWNLOAD_PIECE
    partial = _download([piece, piece], None, hashlib.sha256(piece + piece).hexdigest())
    next(iter(partial))
    next(partial.chunks)  # the download thread went on and hashed the rest
    assert partial.hashed.hashed == 2 * len(piece) and partial.received == len(piece)
    with pytest.raises(CacheServiceError, match="Incomplete download"):
        partial.verify()


def test_a_client_reads_plain_sockets_in_mebibyte_pieces() -> None:
    # Fails when httpcore changes its read size (or renames the constant): the tweak then no longer applies,
    # and the download thread's per-read cost should be measured again (docs/client.md).
    from httpcore._sync import http11

    with transfer.CacheClient("http://127.0.0.1:9/", "token"):
        assert http11.HTTP11Connection.READ_NUM_BYTES == transfer.SOCKET_READ
