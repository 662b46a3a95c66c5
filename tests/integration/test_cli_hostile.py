"""End to end: a hostile or corrupted entry on the server is a reported failure that changes nothing."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import httpx
import zstandard

from helpers import RUNCACHE, Server
from runcache.core.version import ZSTD, cache_version

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"


def put_entry(server: Server, token: str, key: str, version: str, archive: bytes) -> None:
    h = {"Authorization": f"Bearer {token}"}
    url = httpx.post(server.url + TWIRP + "CreateCacheEntry", json={"key": key, "version": version}, headers=h).json()[
        "signed_upload_url"
    ]
    httpx.put(url, content=archive, headers={"x-ms-blob-type": "BlockBlob"}).raise_for_status()
    fin = httpx.post(
        server.url + TWIRP + "FinalizeCacheEntryUpload",
        json={"key": key, "version": version, "size_bytes": str(len(archive))},
        headers=h,
    ).json()
    assert fin["ok"], fin


def tar_zst(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def restore(server: Server, ws: Path, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNCACHE_URL": server.url, "RUNCACHE_TOKEN": token, "GITHUB_WORKSPACE": str(ws)}
    return subprocess.run(
        [*RUNCACHE, "restore", "--path", "deps", "--key", "evil", "--json", *extra],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_escaping_archive_is_refused_and_nothing_changes(server: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "deps").mkdir(parents=True)
    (ws / "deps" / "keep.txt").write_text("mine\n")
    token = server.token()
    archive = tar_zst([file_member("deps/new.txt", b"fine"), file_member("../outside.txt", b"pwned")])
    put_entry(server, token, "evil", cache_version(["deps"], ZSTD), archive)
    r = restore(server, ws, token)
    assert r.returncode == 0, r.stderr  # a warning, as in the action
    assert '"cache-hit": ""' in r.stdout and '"unsafe": true' in r.stdout
    assert not (tmp_path / "outside.txt").exists()
    assert sorted(p.name for p in (ws / "deps").iterdir()) == ["keep.txt"]
    assert restore(server, ws, token, "--strict").returncode == 3


def test_corrupted_blob_fails_the_digest_check(server: Server, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    token = server.token()
    archive = tar_zst([file_member("deps/a.txt", b"original")])
    put_entry(server, token, "evil", cache_version(["deps"], ZSTD), archive)
    # Flip the archive on the server's disk behind its back (same size, different bytes).
    blob = next(p for p in (server.data_dir / "blobs").rglob("*") if p.is_file())
    tampered = tar_zst([file_member("deps/a.txt", b"tampered")])
    assert len(tampered) == len(archive)
    blob.write_bytes(tampered)
    r = restore(server, ws, token)
    assert '"cache-hit": ""' in r.stdout and "does not match" in r.stdout
    assert not (ws / "deps").exists()
