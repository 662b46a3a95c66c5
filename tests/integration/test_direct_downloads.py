"""`--downloads direct` (issue 10): restores fetch archives from the object store with a presigned URL.

One server on PostgreSQL + SeaweedFS with `--downloads direct`, and RUNCACHE_S3_PUBLIC_ENDPOINT naming the
object store by another address than the server's own (`localhost` where the server uses `127.0.0.1`), as a
deployment whose runners reach the store by a public name does. What is checked:
- the real @actions/cache 6.3.0 (v1 `archiveLocation`, v2 `signed_download_url`) and the runcache CLI restore
  byte-identical archives from a URL on the public endpoint, and the server's own archive route serves
  none of those bytes (its access log has no archive GET);
- the URL is GET-only for exactly one object and for its lifetime: a changed signature, another object's
  key, a PUT, and an expired URL are refused by the object store itself;
- a directory blob store cannot be combined with direct downloads: the server refuses to start and says why.

Needs PostgreSQL and SeaweedFS (scripts/setup --dev); a missing one fails the module, never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from direct import blob_route_hits, cli_runner, client_ok, other_path, tree, with_query, workspace
from helpers import RUNCACHE, ClientRun, Server, run_client
from pg import Cluster
from s3server import SeaweedFS
from wire import v1_lookup, v1_restore, v2_restore, v2_save, v2_url

SECRET = "direct-downloads-secret"


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster, seaweed: SeaweedFS) -> Iterator[Server]:
    db = pg_cluster.create_database("direct")
    public = seaweed.endpoint.replace("127.0.0.1", "localhost")
    server = Server(
        tmp_path_factory.mktemp("direct") / "data",
        extra_args=[
            "--database-url",
            pg_cluster.url(db).replace("postgresql+psycopg://", "postgresql://"),
            "--blobs",
            f"s3://{seaweed.bucket}/direct-{uuid.uuid4().hex[:12]}",
            "--downloads",
            "direct",
            "--url-ttl",
            "120",
            "--log-level",
            "info",
        ],
        env={**seaweed.env, "RUNCACHE_SECRET": SECRET, "RUNCACHE_S3_PUBLIC_ENDPOINT": public},
    ).start()
    try:
        yield server
    finally:
        server.stop()
        pg_cluster.drop_database(db)


def _archive_gets(server: Server) -> int:
    return blob_route_hits(server)[1]


def _public_host(url: str, seaweed: SeaweedFS) -> None:
    assert urlsplit(url).netloc == urlsplit(seaweed.endpoint).netloc.replace("127.0.0.1", "localhost"), url


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_real_client_restores_from_the_object_store(
    direct: Server, seaweed: SeaweedFS, protocol: str, tmp_path: Path
) -> None:
    ws, before = workspace(tmp_path)
    token = direct.token()
    key = f"direct-{protocol}-{uuid.uuid4().hex[:8]}"
    saved = run_client(direct, protocol, "save", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(saved, ClientRun)
    client_ok(saved)
    gets = _archive_gets(direct)
    shutil.rmtree(ws / "deps")
    run = run_client(direct, protocol, "restore", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(run, ClientRun)
    client_ok(run)
    assert run.result, run.output[-4000:]
    assert tree(ws / "deps") == before
    assert _archive_gets(direct) == gets, "the archive's bytes went through the runcache server"


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_cli_round_trip_with_direct_downloads(direct: Server, protocol: str, tmp_path: Path) -> None:
    ws, before = workspace(tmp_path)
    cli = cli_runner(direct, ws, tmp_path / "home", protocol)
    key = f"direct-cli-{protocol}-{uuid.uuid4().hex[:8]}"

    saved = cli("save", "--path", "deps", "--key", key)
    assert saved.returncode == 0, saved.stderr
    gets = _archive_gets(direct)
    shutil.rmtree(ws / "deps")
    got = cli("restore", "--path", "deps", "--key", key)
    assert got.returncode == 0, got.stderr
    assert "cache-hit=true" in got.stdout
    assert tree(ws / "deps") == before
    assert _archive_gets(direct) == gets


def test_both_protocols_hand_out_the_public_endpoint(direct: Server, seaweed: SeaweedFS) -> None:
    token = direct.token()
    key = f"direct-wire-{uuid.uuid4().hex[:8]}"
    data = os.urandom(100_000)
    v2_save(direct, token, key, data)
    hit = v1_lookup(direct, token, key)
    assert hit.status_code == 200, hit.text
    for url in (hit.json()["archiveLocation"], v2_url(direct, token, key)):
        _public_host(url, seaweed)
    gets = _archive_gets(direct)
    assert v1_restore(direct, token, key) == data == v2_restore(direct, token, key)
    # A range of it, as a resuming or parallel client asks for.
    part = httpx.get(v2_url(direct, token, key), headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert _archive_gets(direct) == gets


def test_a_direct_url_reads_one_object_and_nothing_else(direct: Server) -> None:
    token = direct.token()
    keys = [f"direct-scope-{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
    for key in keys:
        v2_save(direct, token, key, os.urandom(1000))
    url, other = (v2_url(direct, token, k) for k in keys)
    assert url != other
    assert httpx.get(url).status_code == 200
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    tampered = with_query(url, **{"X-Amz-Signature": ("0" if signature[0] != "0" else "1") + signature[1:]})
    assert httpx.get(tampered).status_code == 403
    # The same signature on another object's path, or with a longer lifetime, or for a write: refused.
    assert httpx.get(other_path(url, other)).status_code == 403
    assert httpx.get(with_query(url, **{"X-Amz-Expires": "604800"})).status_code == 403
    assert httpx.put(url, content=b"overwritten").status_code == 403
    assert httpx.get(url).status_code == 200


def test_a_direct_url_expires(seaweed: SeaweedFS) -> None:
    from runcache.store.s3 import S3BlobStore

    store = S3BlobStore.from_url(f"s3://{seaweed.bucket}/expiry-{uuid.uuid4().hex[:8]}", seaweed.env)
    store.put_stream("1", [b"short-lived"], size=11, sha256=None)
    # A few seconds of life: enough to be used at once on a loaded machine, short enough to wait out.
    ttl = 4
    signed_at = time.time()
    url = store.download_url("1", ttl)
    assert url is not None
    assert httpx.get(url).content == b"short-lived"
    time.sleep(max(0.0, signed_at + ttl + 1.5 - time.time()))
    assert httpx.get(url).status_code == 403
    for ttl in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="presigned URL lives"):
            store.download_url("1", ttl)


def test_direct_downloads_need_an_object_store(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*RUNCACHE, "serve", "--data-dir", str(tmp_path / "d"), "--port", "0", "--downloads", "direct"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--downloads direct needs an object store" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cli_refuses_an_object_changed_in_the_store(direct: Server, seaweed: SeaweedFS, tmp_path: Path) -> None:
    """Bytes swapped in the bucket behind runcache's back (same size, metadata kept): the direct download
    no longer matches the SHA-256 recorded with the object, and the restore fails without touching the
    destination (the step goes on as on a miss)."""
    ws, _ = workspace(tmp_path)
    cli = cli_runner(direct, ws, tmp_path / "home")
    key = f"direct-tamper-{uuid.uuid4().hex[:8]}"

    assert cli("save", "--path", "deps", "--key", key).returncode == 0
    listed = httpx.get(
        f"{direct.url}/repos/octo/app/actions/caches",
        params={"key": key},
        headers={"Authorization": f"Bearer {direct.admin_token()}"},
    ).json()
    entry_id = listed["actions_caches"][0]["id"]
    s3 = seaweed.client()
    stored = seaweed.keys("direct-")
    object_key = next(k for k in stored if k.endswith(f"/{entry_id}"))
    head = s3.head_object(Bucket=seaweed.bucket, Key=object_key)
    assert head["Metadata"].get("sha256"), "the store records each object's SHA-256"
    body = bytearray(s3.get_object(Bucket=seaweed.bucket, Key=object_key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=seaweed.bucket, Key=object_key, Body=bytes(body), Metadata=head["Metadata"])

    shutil.rmtree(ws / "deps")
    got = cli("restore", "--path", "deps", "--key", key)
    # As actions/cache: a failed restore is a warning and a miss, not a failed step.
    assert "does not match the entry's" in got.stdout + got.stderr
    assert "cache-hit=true" not in got.stdout
    assert not (ws / "deps").exists()
