"""Azure Blob storage with direct transfers (issue 13): archive bytes go between runner and storage.

Azurite (tests/azurite.py) is the storage account. One server with `--blobs azure://… --transfers direct`:
- the real @actions/cache 6.3.0 v2 saves with the Azure SDK straight into the account (CreateCacheEntry's
  write SAS; past 128 MiB, so as 64 MiB blocks and a block list) and restores from a read SAS,
  byte-identical, while runcache's own blob routes carry no archive byte (its access log has no
  `PUT /runcache/uploads` and no `GET /runcache/archives`); v1 chunks are relayed into staged blocks and
  restored from a read SAS; the runcache CLI round-trips on both protocols;
- a SAS is refused by the storage when tampered with or expired, and a write SAS neither reads its own blob
  nor reads or writes any other; the server's log never holds a signature it handed out;
- a finalize whose size differs from the stored blob, or with nothing stored, leaves no visible entry, and an
  upload never finalized is deleted with its reservation;
- the CLI's direct saves carry the archive's SHA-256 as blob metadata, which the server records at finalize:
  a blob changed behind runcache's back fails the CLI's check on a direct and on a proxied download, and the
  destination stays as it was;
- two replicas behind nginx over PostgreSQL + Azurite pass a v1 and a v2 save/restore through the balancer.

Needs Azurite, PostgreSQL and nginx (scripts/setup --dev); a missing one fails the module, never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import pytest

from azurite import Azurite
from cluster import Replicas, replicas_on
from direct import blob_route_hits, cli_runner, client_ok, other_path, tree, with_query, workspace
from helpers import RUNCACHE, ClientRun, Server, run_client
from pg import Cluster
from wire import sha256, v1_lookup, v1_restore, v1_save, v2_create, v2_finalize, v2_restore, v2_url

SECRET = "azure-direct-secret"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("azure-direct") / "data",
        extra_args=[
            "--blobs",
            f"azure://{azurite.container}/direct-{uuid.uuid4().hex[:12]}",
            "--transfers",
            "direct",
            "--url-ttl",
            "120",
            "--log-level",
            "info",
        ],
        env={**azurite.env, "RUNCACHE_SECRET": SECRET},
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _log(server: Server) -> str:
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace")


def _prefix(server: Server) -> str:
    """The server's blob prefix in the container (`--blobs azure://container/prefix`)."""
    return server.extra_args[server.extra_args.index("--blobs") + 1].split("/", 3)[3]


def _is_azurite(url: str, azurite: Azurite) -> None:
    assert url.startswith(azurite.endpoint + "/"), url
    assert "sig=" in url and "sv=" in url, url


# --- the real client and the CLI ----------------------------------------------------------------------------
def test_real_client_v2_saves_and_restores_through_the_storage_only(
    direct: Server, azurite: Azurite, tmp_path: Path
) -> None:
    # Past the SDK's 128 MiB single-shot size: it uploads 64 MiB blocks in parallel, then the block list.
    ws, before = workspace(tmp_path, big=132 * MIB)
    token = direct.token()
    key = f"az-v2-{uuid.uuid4().hex[:8]}"
    hits = blob_route_hits(direct)
    saved = run_client(direct, "v2", "save", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(saved, ClientRun)
    client_ok(saved)
    assert '"cacheId":-1' not in saved.output, saved.output[-4000:]
    shutil.rmtree(ws / "deps")
    run = run_client(direct, "v2", "restore", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(run, ClientRun)
    client_ok(run)
    assert run.result, run.output[-4000:]
    assert tree(ws / "deps") == before
    assert blob_route_hits(direct) == hits, "archive bytes went through the runcache server"
    assert "committed direct upload" in _log(direct)
    container = azurite.service().get_container_client(azurite.container)
    big = [n for n, size in azurite.blobs(_prefix(direct) + "/").items() if size > 128 * MIB]
    assert len(big) == 1, azurite.blobs(_prefix(direct) + "/")
    committed, _ = container.get_blob_client(big[0]).get_block_list("committed")
    assert [b.size for b in committed][:2] == [64 * MIB, 64 * MIB], committed


def test_real_client_v1_round_trip(direct: Server, azurite: Azurite, tmp_path: Path) -> None:
    """v1 chunks are relayed by the server into staged blocks (the v1 protocol has no upload URL); the
    restore follows `archiveLocation`, a read SAS on the account."""
    ws, before = workspace(tmp_path)
    token = direct.token()
    key = f"az-v1-{uuid.uuid4().hex[:8]}"
    saved = run_client(direct, "v1", "save", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(saved, ClientRun)
    client_ok(saved)
    downloads = blob_route_hits(direct)[1]
    shutil.rmtree(ws / "deps")
    run = run_client(direct, "v1", "restore", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(run, ClientRun)
    client_ok(run)
    assert tree(ws / "deps") == before
    assert blob_route_hits(direct)[1] == downloads
    # The same path in raw calls: chunks relayed into the account, the location a read SAS on it.
    data = os.urandom(100_000)
    v1_save(direct, token, f"{key}-raw", data)
    location = v1_lookup(direct, token, f"{key}-raw").json()["archiveLocation"]
    _is_azurite(location, azurite)
    assert httpx.get(location).content == data


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_cli_round_trip(direct: Server, azurite: Azurite, protocol: str, tmp_path: Path) -> None:
    # v2: more than one 32 MiB CLI chunk, so the save is parallel Put Block + Put Block List on the SAS.
    ws, before = workspace(tmp_path, big=(40 if protocol == "v2" else 5) * MIB)
    cli = cli_runner(direct, ws, tmp_path / "home", protocol)
    key = f"az-cli-{protocol}-{uuid.uuid4().hex[:8]}"

    uploads, downloads = blob_route_hits(direct)
    saved = cli("save", "--path", "deps", "--key", key)
    assert saved.returncode == 0, saved.stderr
    shutil.rmtree(ws / "deps")
    got = cli("restore", "--path", "deps", "--key", key)
    assert got.returncode == 0, got.stderr
    assert "cache-hit=true" in got.stdout
    assert tree(ws / "deps") == before
    after = blob_route_hits(direct)
    assert after[1] == downloads
    if protocol == "v2":
        assert after[0] == uploads, "a v2 save went through the runcache server"
        container = azurite.service().get_container_client(azurite.container)
        big = [n for n, size in azurite.blobs(_prefix(direct) + "/").items() if 40 * MIB < size < 128 * MIB]
        assert len(big) == 1, azurite.blobs(_prefix(direct) + "/")
        blob = container.get_blob_client(big[0])
        committed, _ = blob.get_block_list("committed")
        assert len(committed) >= 2, committed
        # Put Block List gave the blob the archive's digest.
        assert blob.get_blob_properties().metadata["sha256"] == sha256(blob.download_blob().readall())


def _archives(azurite: Azurite, prefix: str) -> list[str]:
    """The committed archives under the server's prefix (uploads in flight live deeper), oldest entry first."""
    names = [n for n in azurite.blobs(prefix + "/") if "/" not in n[len(prefix) + 1 :]]
    return sorted(names, key=lambda n: int(n.rsplit("/", 1)[1]))


def test_cli_saves_carry_their_digest_and_a_changed_archive_is_refused(azurite: Azurite, tmp_path: Path) -> None:
    """The digest travels with the blob: a download straight from the storage gets it as x-ms-meta-sha256, a
    proxied one from the entry, which recorded it at finalize. Bytes changed behind runcache's back (here: the
    blob of another save put in its place, a valid archive) fail the CLI's check, and the destination stays
    as it was, on both download paths."""
    from runcache.client.archive import compression_method
    from runcache.core.version import cache_version
    from runcache.store.azure import AzureBlobStore

    prefix = f"digest-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    env = {**azurite.env, "RUNCACHE_SECRET": SECRET}
    blobs = ["--blobs", f"azure://{azurite.container}/{prefix}"]
    ws, before = workspace(tmp_path)
    key, other = f"az-digest-{uuid.uuid4().hex[:8]}", f"az-other-{uuid.uuid4().hex[:8]}"
    server = Server(data, extra_args=[*blobs, "--transfers", "direct"], env=env).start()
    try:
        cli = cli_runner(server, ws, tmp_path / "home")
        assert cli("save", "--path", "deps", "--key", key).returncode == 0
        (ws / "deps" / "lib0.bin").write_bytes(os.urandom(290_000))  # a smaller archive (padded below)
        assert cli("save", "--path", "deps", "--key", other).returncode == 0
        mine, theirs = _archives(azurite, prefix)
        container = azurite.service().get_container_client(azurite.container)
        digests = {}
        for name in (mine, theirs):
            blob = container.get_blob_client(name)
            digests[name] = blob.get_blob_properties().metadata["sha256"]
            assert digests[name] == sha256(blob.download_blob().readall())  # one Put Blob, with the digest
        assert f"sha256={digests[mine]}" in _log(server)
        # Another valid archive in place of this entry's, as long (a zstd skippable frame pads it, which
        # decompressors pass over) so that no size check tells: written with the seal's lease (the account
        # key's holder can), its metadata kept, so only the digest can tell.
        store = AzureBlobStore.from_url(f"azure://{azurite.container}/{prefix}", azurite.env)
        name = mine.rsplit("/", 1)[1]
        swapped = container.get_blob_client(theirs).download_blob().readall()
        pad = azurite.blobs(mine)[mine] - len(swapped) - 8
        assert pad >= 0
        swapped += b"\x50\x2a\x4d\x18" + pad.to_bytes(4, "little") + bytes(pad)
        container.get_blob_client(mine).upload_blob(
            swapped, overwrite=True, metadata={"sha256": digests[mine]}, lease=store._lease_id(name)
        )

        shutil.rmtree(ws / "deps")
        (ws / "deps").mkdir()
        (ws / "deps" / "mine.txt").write_text("kept\n")
        kept = tree(ws / "deps")
        got = cli("restore", "--path", "deps", "--key", key)
        assert "does not match the entry's " + digests[mine] in got.stderr, got.stderr
        assert "cache-hit=true" not in got.stdout
        assert tree(ws / "deps") == kept
    finally:
        server.stop()

    # The same entries through a server that streams archives itself: the digest comes from the entry.
    server = Server(data, extra_args=blobs, env=env).start()
    try:
        cli = cli_runner(server, ws, tmp_path / "home")
        url = v2_url(server, server.token(), key, cache_version(["deps"], compression_method()))
        assert "/runcache/archives/" in url
        assert httpx.head(url).headers["x-ms-meta-sha256"] == digests[mine]
        got = cli("restore", "--path", "deps", "--key", key)
        assert "does not match the entry's " + digests[mine] in got.stderr, got.stderr
        assert tree(ws / "deps") == kept
        # An archive whose bytes are what was saved restores, checked against its recorded digest.
        got = cli("restore", "--path", "deps", "--key", other)
        assert got.returncode == 0 and "cache-hit=true" in got.stdout, got.stderr
        restored = tree(ws / "deps")
        assert restored["lib1.bin"] == before["lib1.bin"] and restored["lib0.bin"] != before["lib0.bin"]
    finally:
        server.stop()


# --- what a SAS allows ---------------------------------------------------------------------------------------
def _direct_put(url: str, data: bytes) -> httpx.Response:
    return httpx.put(url, content=data, headers={"x-ms-blob-type": "BlockBlob"})


def test_a_write_sas_writes_its_blob_and_nothing_else(direct: Server, azurite: Azurite) -> None:
    token = direct.token()
    saved_key = f"az-sas-saved-{uuid.uuid4().hex[:8]}"
    created = v2_create(direct, token, saved_key)
    assert created["ok"], created
    saved_url = created["signed_upload_url"]
    _is_azurite(saved_url, azurite)
    data = os.urandom(50_000)
    assert _direct_put(saved_url, data).status_code == 201
    assert v2_finalize(direct, token, saved_key, len(data))["ok"]

    key = f"az-sas-{uuid.uuid4().hex[:8]}"
    created = v2_create(direct, token, key)
    assert created["ok"], created
    url = created["signed_upload_url"]
    assert dict(parse_qsl(urlsplit(url).query))["sp"] == "cw", url  # create + write only
    # Another blob: neither written nor read with this signature (the committed entry's, or any name).
    other = v2_url(direct, token, saved_key)
    assert _direct_put(other_path(url, other), b"overwritten").status_code == 403
    assert httpx.get(other_path(url, other)).status_code == 403
    assert httpx.get(other).content == data
    # Its own blob: written, never read, listed or deleted.
    assert _direct_put(url, b"mine").status_code == 201
    assert httpx.get(url).status_code == 403
    assert httpx.head(url).status_code == 403
    assert httpx.delete(url).status_code == 403
    container = urlunsplit(urlsplit(url)._replace(path=urlsplit(url).path.rsplit("/", 2)[0]))
    assert httpx.get(with_query(container, restype="container", comp="list")).status_code == 403
    # Tampered: a changed signature, a longer lifetime, more permissions.
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    assert _direct_put(with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:]), b"x").status_code == 403
    assert _direct_put(with_query(url, se="2099-01-01T00:00:00Z"), b"x").status_code == 403
    assert httpx.get(with_query(url, sp="rcw")).status_code == 403
    # A read SAS does not write.
    assert _direct_put(other, b"overwritten").status_code == 403
    assert httpx.get(other).content == data
    # What the server handed out never reaches its log.
    assert sig not in _log(direct)
    assert dict(parse_qsl(urlsplit(other).query))["sig"] not in _log(direct)


def test_a_sas_expires(azurite: Azurite) -> None:
    from runcache.store.azure import AzureBlobStore

    store = AzureBlobStore.from_url(f"azure://{azurite.container}/expiry-{uuid.uuid4().hex[:8]}", azurite.env)
    # A few seconds of life, so a loaded machine still uses them in time; then past their expiry.
    signed = time.monotonic()
    upload, read = store.upload_url("1", 4), store.download_url("1", 4)
    assert upload is not None and _direct_put(upload, b"short-lived").status_code == 201
    assert read is not None and httpx.get(read).content == b"short-lived"
    time.sleep(max(0.0, signed + 5.5 - time.monotonic()))
    assert httpx.get(read).status_code == 403
    assert _direct_put(upload, b"too late").status_code == 403
    for ttl in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="SAS URL lives"):
            store.upload_url("1", ttl)


# --- finalize and the janitor ----------------------------------------------------------------------------
def test_a_finalize_of_another_size_or_of_nothing_leaves_no_entry(direct: Server) -> None:
    token = direct.token()
    key = f"az-size-{uuid.uuid4().hex[:8]}"
    created = v2_create(direct, token, key)
    assert created["ok"], created
    fin = v2_finalize(direct, token, key, 10)
    assert not fin["ok"] and "no archive" in fin["message"], fin
    url = created["signed_upload_url"]
    assert _direct_put(url, os.urandom(10_000)).status_code == 201
    for size in (10_001, 9_999):
        fin = v2_finalize(direct, token, key, size)  # a twirp invalid_argument, as for a staged upload
        assert not fin.get("ok") and "the stored archive has 10000 bytes" in fin.get("msg", ""), fin
    assert v1_lookup(direct, token, key).status_code == 204
    # A refused finalize leaves the blob to its upload URL: the client may write it again.
    data = os.urandom(12_000)
    assert _direct_put(url, data).status_code == 201
    first = v2_finalize(direct, token, key, len(data))
    assert first["ok"], first
    assert v2_finalize(direct, token, key, len(data)) == first  # a retry gets the same entry
    # Finalized: the upload URL, still within its lifetime, can no longer change the entry's bytes.
    assert _direct_put(url, b"rewritten after the finalize").status_code == 412
    assert v2_restore(direct, token, key) == data == v1_restore(direct, token, key)


def test_an_upload_never_finalized_or_given_up_loses_its_blob(azurite: Azurite, tmp_path: Path) -> None:
    """The janitor's pass over expired reservations removes a direct upload's blob with the row: the bytes
    the client wrote never became an entry, and the server never saw them arrive."""
    from runcache.core.scopes import Identity, build_scopes
    from runcache.services.cache import CacheService
    from runcache.store.azure import AzureBlobStore
    from runcache.store.azureuploads import AzureUploadStore
    from runcache.store.metadata import MetadataStore

    blobs = AzureBlobStore.from_url(f"azure://{azurite.container}/janitor-{uuid.uuid4().hex[:8]}", azurite.env)
    metadata = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
    service = CacheService(
        metadata, blobs, AzureUploadStore(blobs), node_id="t", reservation_ttl=1, direct_upload_ttl=60
    )
    identity = Identity("octo/app", build_scopes("refs/heads/main", default_branch="main"))
    entry = service.reserve(identity, "never-finalized", "v" * 64)
    url = service.direct_upload_url(entry)
    assert url is not None and _direct_put(url, b"abandoned bytes").status_code == 201
    assert blobs.contains(str(entry.id))
    assert service.expire_idle_uploads() == 0  # direct uploads are not judged by bytes the server never sees
    time.sleep(2.1)
    assert service.expire_uploads() == 1
    assert not blobs.contains(str(entry.id))
    assert metadata.get(entry.id) is None
    assert not AzureUploadStore(blobs).exists(entry.id)
    # Given up (the management API, a v1 DELETE): the blob goes with the row, not only with the reservation.
    other = service.reserve(identity, "given-up", "v" * 64)
    url = service.direct_upload_url(other)
    assert url is not None and _direct_put(url, b"given-up bytes").status_code == 201
    service.abandon_upload(other)
    assert not blobs.contains(str(other.id)) and metadata.get(other.id) is None


def test_direct_transfers_need_azure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*RUNCACHE, "serve", "--data-dir", str(tmp_path / "d"), "--port", "0", "--transfers", "direct"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--transfers direct needs" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# --- replicas ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster, azurite: Azurite) -> Iterator[Replicas]:
    blobs = f"azure://{azurite.container}/replicas-{uuid.uuid4().hex[:12]}"
    base = tmp_path_factory.mktemp("azure-replicas")
    with replicas_on(base, pg_cluster, blobs, azurite.env, ["--transfers", "direct"]) as cluster:
        yield cluster


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_two_replicas_behind_nginx_save_and_restore(replicas: Replicas, protocol: str, tmp_path: Path) -> None:
    front = replicas.front
    ws, before = workspace(tmp_path, big=3 * MIB)
    token = replicas.token()
    key = f"az-replicas-{protocol}-{uuid.uuid4().hex[:8]}"
    # v1: 1 MiB chunks, four at a time, so chunks of one upload reach both replicas.
    env = {"CACHE_UPLOAD_CHUNK_SIZE": "1", "CACHE_UPLOAD_CONCURRENCY": "4"} if protocol == "v1" else {}
    saved = run_client(front, protocol, "save", workspace=ws, token=token, paths=["deps"], key=key, extra_env=env)
    assert isinstance(saved, ClientRun)
    client_ok(saved)
    shutil.rmtree(ws / "deps")
    got = run_client(front, protocol, "restore", workspace=ws, token=token, paths=["deps"], key=key)
    assert isinstance(got, ClientRun)
    client_ok(got)
    assert tree(ws / "deps") == before
    lines = replicas.balancer.lines() if replicas.balancer else []
    assert not [ln for ln in lines if ln.uri.startswith(("/runcache/archives/", "/runcache/uploads/"))], (
        "archive bytes went through the balancer"
    )
    if protocol == "v1":
        chunks = {replicas.index_of(ln.upstreams[-1]) for ln in lines if ln.method == "PATCH" and ln.upstreams}
        assert chunks == {0, 1}, chunks


def test_v1_save_of_raw_bytes_across_replicas(replicas: Replicas) -> None:
    front = replicas.front
    token = replicas.token()
    data = os.urandom(2 * MIB + 5)
    key = f"az-replicas-raw-{uuid.uuid4().hex[:8]}"
    v1_save(front, token, key, data)
    assert v1_restore(front, token, key) == data == v2_restore(front, token, key)
