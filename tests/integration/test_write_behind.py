"""Upload write-behind through the real server: a 1 MiB window, so every upload below hands ranges to the
kernel's writeback while it is still being written. Bytes must come back identical, also after a kill -9,
and a full disk must still answer 507 with nothing committed lost."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import httpx
from test_integrity_faults import small_volume, small_volume_server, staged, wait_for  # noqa: F401 - fixture

from helpers import Server
from wire import (
    put_block_list,
    put_blocks,
    v1_commit,
    v1_patch,
    v1_reserve,
    v1_restore,
    v1_save,
    v2_create,
    v2_finalize,
    v2_restore,
    v2_save,
)

MiB = 1024 * 1024
WINDOW = {"RUNCACHE_WRITE_BEHIND_MIB": "1"}


def test_uploads_written_behind_come_back_identical_also_after_a_kill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = Server(data_dir, env=WINDOW).start()
    try:
        tok = srv.token()
        # v1 chunks out of order, each longer than a window and not a multiple of it.
        body = os.urandom(7 * MiB + 12345)
        cid = v1_reserve(srv, tok, "v1-chunks", len(body)).json()["cacheId"]
        cuts = [0, 3 * MiB + 1, 5 * MiB, len(body)]
        for a, b in reversed(list(itertools.pairwise(cuts))):
            assert v1_patch(srv, tok, cid, a, body[a:b]).status_code == 204
        assert v1_commit(srv, tok, cid, len(body)).status_code == 204
        whole = os.urandom(9 * MiB + 7)
        v2_save(srv, tok, "v2-blob", whole)
        small = os.urandom(1000)
        v1_save(srv, tok, "v1-small", small)
        blocks = [os.urandom(3 * MiB + 5), os.urandom(2 * MiB), os.urandom(MiB - 1)]
        created = v2_create(srv, tok, "v2-blocks")
        ids = put_blocks(created["signed_upload_url"], blocks)
        assert put_block_list(created["signed_upload_url"], ids).status_code == 201
        assert v2_finalize(srv, tok, "v2-blocks", sum(map(len, blocks)))["ok"]

        def check(server: Server) -> None:
            assert v1_restore(server, tok, "v1-chunks") == body
            assert v2_restore(server, tok, "v2-blob") == whole
            assert v1_restore(server, tok, "v1-small") == small
            assert v2_restore(server, tok, "v2-blocks") == b"".join(blocks)

        check(srv)
        srv.stop(signal.SIGKILL)
        assert "Traceback" not in srv.log_path.read_text()  # type: ignore[union-attr]
        srv = Server(data_dir, env=WINDOW).start()
        check(srv)
    finally:
        srv.stop()


def test_a_full_disk_under_write_behind_answers_507_and_keeps_what_was_committed(
    small_volume: Path,  # noqa: F811 - the fixture imported above
) -> None:
    srv = small_volume_server(small_volume, **WINDOW)
    try:
        tok = srv.token()
        kept = os.urandom(3 * MiB)
        v1_save(srv, tok, "kept", kept)
        cid = v1_reserve(srv, tok, "huge-v1", None).json()["cacheId"]
        for i in range(20):
            r = v1_patch(srv, tok, cid, i * 8 * MiB, os.urandom(8 * MiB))
            if r.status_code != 204:
                assert r.status_code == 507 and "cache storage full" in r.json()["message"], r.text
                break
        else:
            raise AssertionError("160 MiB fit on a 64 MiB volume")
        created = v2_create(srv, tok, "huge-v2")
        put = httpx.put(
            created["signed_upload_url"],
            content=(os.urandom(MiB) for _ in range(80)),
            headers={"x-ms-blob-type": "BlockBlob"},
            timeout=60,
        )
        assert put.status_code == 507 and b"cache storage full" in put.content
        assert wait_for(lambda: staged(srv.data_dir) == [])
        assert v1_restore(srv, tok, "kept") == kept
        after = os.urandom(2 * MiB)
        v2_save(srv, tok, "after", after)
        assert v2_restore(srv, tok, "after") == after
        assert "Traceback" not in srv.log_path.read_text()  # type: ignore[union-attr]
    finally:
        srv.stop()
