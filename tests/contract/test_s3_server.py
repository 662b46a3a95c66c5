"""End to end on S3: a real runcache server keeps its archives in a bucket of a real S3 server (SeaweedFS)
and serves both cache protocols from it."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from helpers import Server
from s3server import SeaweedFS
from wire import auth, v1_restore, v1_save, v2_restore, v2_save, v2_url

PREFIX = "ci/cache"
MIB = 1024 * 1024


def test_save_restore_and_delete_with_blobs_in_s3(tmp_path: Path, seaweed: SeaweedFS) -> None:
    server = Server(
        tmp_path / "data", extra_args=["--blobs", f"s3://{seaweed.bucket}/{PREFIX}"], env=seaweed.env
    ).start()
    try:
        tok = server.token()
        small = b"cached bytes " * 1000
        cid = v1_save(server, tok, "Linux-v1", small)
        assert v1_restore(server, tok, "Linux-v1") == small

        # Over one S3 part (8 MiB), so the commit is a multipart upload.
        big = os.urandom(9 * MIB + 4321)
        entry = v2_save(server, tok, "Linux-v2", big)
        assert v2_restore(server, tok, "Linux-v2") == big
        # A ranged download across the part boundary, as @actions/cache's parallel downloader makes.
        lo, hi = 8 * MIB - 100, 8 * MIB + 100
        r = httpx.get(v2_url(server, tok, "Linux-v2"), headers={"Range": f"bytes={lo}-{hi - 1}"}, timeout=60)
        assert r.status_code == 206, r.text
        assert r.content == big[lo:hi]

        # The archives are objects under the prefix, not files in the data directory.
        objects = seaweed.keys(PREFIX + "/")
        assert objects == {f"{PREFIX}/{cid}": len(small), f"{PREFIX}/{entry}": len(big)}
        assert not list((tmp_path / "data").rglob(f"blobs/**/{entry}"))

        admin = server.admin_token()
        gone = httpx.delete(server.url + f"/repos/octo/app/actions/caches/{cid}", headers=auth(admin))
        assert gone.status_code in (200, 204), gone.text
        assert seaweed.keys(PREFIX + "/") == {f"{PREFIX}/{entry}": len(big)}
    finally:
        server.stop()


def test_a_wrong_bucket_stops_the_server_at_start(tmp_path: Path, seaweed: SeaweedFS) -> None:
    server = Server(tmp_path / "data", extra_args=["--blobs", "s3://no-such-bucket/x"], env=seaweed.env)
    with pytest.raises(RuntimeError, match="no-such-bucket"):
        server.start()
