"""A server killed in the middle of an upload leaves no visible entry and no leaked temp files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from helpers import Server, run_client


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_kill_during_upload_leaves_nothing_visible(tmp_path: Path, protocol: str) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir).start()
    ws = tmp_path / "ws"
    (ws / "big").mkdir(parents=True)
    with open(ws / "big" / "blob.bin", "wb") as fh:
        for _ in range(400):
            fh.write(os.urandom(1024 * 1024))
    token = server.token()
    client = run_client(
        server, protocol, "save", workspace=ws, token=token, paths=["big"], key="crash-1", background=True
    )
    uploads = data_dir / "uploads"
    # Wait until bytes are landing in staging, then kill the server without any chance to clean up.
    deadline = time.time() + 120
    while time.time() < deadline:
        staged = sum(f.stat().st_size for f in uploads.rglob("*") if f.is_file()) if uploads.exists() else 0
        if staged > 20 * 1024 * 1024:
            break
        time.sleep(0.02)
    else:
        pytest.fail("upload never started")
    server.kill()
    client.wait(120)
    assert any(uploads.rglob("*")), "the kill should have left staged bytes behind to clean up"

    restarted = Server(data_dir).start()
    try:
        assert not any(uploads.rglob("*")), "restart must remove temp files of dead uploads"
        miss = run_client(
            restarted,
            protocol,
            "restore",
            workspace=ws,
            token=token,
            paths=["big"],
            key="crash-1",
            restore_keys=["crash"],
            lookup_only=True,
        )
        assert miss.result["matchedKey"] is None, miss.output
        # The key is free again: a new save succeeds and is restorable.
        (ws / "big" / "blob.bin").write_bytes(b"small now")
        saved = run_client(restarted, protocol, "save", workspace=ws, token=token, paths=["big"], key="crash-1")
        assert saved.result["cacheId"] > 0, saved.output
        hit = run_client(
            restarted, protocol, "restore", workspace=ws, token=token, paths=["big"], key="crash-1", lookup_only=True
        )
        assert hit.result["matchedKey"] == "crash-1"
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == 1 and blobs[0].stat().st_size < 1024 * 1024
    finally:
        restarted.stop()
