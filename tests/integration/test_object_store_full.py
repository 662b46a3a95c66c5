"""An object store out of space: every save path answers 507 (twirp resource_exhausted), never 500.

The store is a real one that fills up: an Azurite holding at most 4 MiB of blob data (`--extentMemoryLimit`),
behind a runcache server with `--blobs azure://…` (uploads in flight in the container too). Azurite refuses a
write past its limit with 409 MemoryExtentStoreAtSizeLimit. Saved entries stay byte-identical and restorable;
a save refused for space leaves no entry and frees its key at once (the next save of it may reserve).

S3: a SeaweedFS with one volume of 1 MiB fills up too, but answers the write it cannot place with a bare
500 InternalError ("please try again"), which says nothing about space (see store/s3.py): there the save
is refused as a failure, and what must hold is that it leaves no entry and loses no saved one. The S3
rule for servers that do say "full" is tested on botocore's own parsing of their answers in
tests/unit/test_object_store_errors.py.

Needs Azurite and SeaweedFS (scripts/setup --dev); a missing one fails the module, never skips it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from azurite import Azurite, AzuriteMissing
from direct import cli_runner, workspace
from helpers import Server
from s3server import S3Missing, SeaweedFS
from wire import (
    block_id,
    put_block_list,
    sha256,
    twirp,
    v1_commit,
    v1_lookup,
    v1_patch,
    v1_reserve,
    v1_restore,
    v1_save,
    v2_create,
    v2_restore,
    v2_save,
    v2_url,
)

KIB = 1024


@pytest.fixture(scope="module")
def small_azurite() -> Iterator[Azurite]:
    try:
        azurite = Azurite(memory_mb=4).start()
    except AzuriteMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield azurite
    finally:
        azurite.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_azurite: Azurite) -> Iterator[Server]:
    blobs = f"azure://{small_azurite.container}/full-{uuid.uuid4().hex[:8]}"
    srv = Server(tmp_path_factory.mktemp("store-full") / "data", extra_args=["--blobs", blobs], env=small_azurite.env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _fill(azurite: Azurite) -> int:
    """Write filler blobs straight into the account until it takes not one more byte; the bytes written."""
    container = azurite.service().get_container_client(azurite.container)
    written, size = 0, 1024 * KIB
    while size:
        try:
            container.upload_blob(f"filler/{uuid.uuid4().hex}", os.urandom(size))
            written += size
        except Exception as exc:
            assert "MemoryExtentStoreAtSizeLimit" in str(exc), exc
            size //= 4
    # Really full: a single byte is refused.
    with pytest.raises(Exception, match="MemoryExtentStoreAtSizeLimit"):
        container.upload_blob(f"filler/{uuid.uuid4().hex}", b"x")
    return written


def _put_blob(url: str, data: bytes) -> httpx.Response:
    return httpx.put(url, content=data, headers={"x-ms-blob-type": "BlockBlob"}, timeout=60)


def _full(r: httpx.Response) -> None:
    assert r.status_code == 507, (r.status_code, r.text)
    assert "out of space" in r.text and "MemoryExtentStoreAtSizeLimit" in r.text, r.text


def _key_is_free(server: Server, token: str, key: str) -> None:
    """Nothing holds the key: a new reservation gets it (and gives it back at once)."""
    again = v2_create(server, token, key)
    assert again["ok"], again
    assert httpx.delete(again["signed_upload_url"], timeout=30).status_code == 202


def test_a_full_store_answers_507_on_every_path_and_loses_nothing(
    server: Server, small_azurite: Azurite, tmp_path: Path
) -> None:
    token = server.token()
    run = uuid.uuid4().hex[:8]
    # Two entries saved while there is room (v1 chunks; a v2 Put Blob).
    saved_v1, saved_v2 = os.urandom(300 * KIB), os.urandom(300 * KIB)
    v1_save(server, token, f"saved-v1-{run}", saved_v1)
    v2_save(server, token, f"saved-v2-{run}", saved_v2)
    # Uploads whose bytes landed while there was room, to be committed once there is none.
    put_key, patch_key, block_key = f"commit-v2-{run}", f"commit-v1-{run}", f"blocks-{run}"
    put_upload = v2_create(server, token, put_key)
    assert put_upload["ok"], put_upload
    staged = os.urandom(300 * KIB)
    assert _put_blob(put_upload["signed_upload_url"], staged).status_code == 201
    reserved = v1_reserve(server, token, patch_key, len(staged))
    assert reserved.status_code == 201, reserved.text
    patch_id = reserved.json()["cacheId"]
    assert v1_patch(server, token, patch_id, 0, staged).status_code == 204
    block_upload = v2_create(server, token, block_key)
    assert block_upload["ok"], block_upload
    block_url = block_upload["signed_upload_url"]
    first = httpx.put(f"{block_url}&comp=block&blockid={block_id(0)}", content=staged, timeout=60)
    assert first.status_code == 201, first.text

    assert _fill(small_azurite) > 0

    # Commit, v2: the blob cannot be written. No entry; the key is free again.
    fin = twirp(
        server, "FinalizeCacheEntryUpload", {"key": put_key, "version": "a" * 64, "size_bytes": str(len(staged))}, token
    )
    _full(fin)
    assert fin.json()["code"] == "resource_exhausted", fin.text
    assert v1_lookup(server, token, put_key).status_code == 204
    _key_is_free(server, token, put_key)
    # Commit, v1: likewise.
    _full(v1_commit(server, token, patch_id, len(staged)))
    assert v1_lookup(server, token, patch_key).status_code == 204
    assert v1_reserve(server, token, patch_key, None).status_code == 201
    # Put Block List: the list itself finds no room. The upload is dropped (as for a body), its key free.
    listed = put_block_list(block_url, [block_id(0)])
    _full(listed)
    assert listed.headers["x-ms-error-code"] == "InsufficientStorage", listed.headers
    _key_is_free(server, token, block_key)
    # Bodies: a Put Blob, a Put Block, a v1 chunk. Each upload is dropped at once, its key free again.
    for kind in ("blob", "block"):
        key = f"body-{kind}-{run}"
        created = v2_create(server, token, key)
        assert created["ok"], created
        url = created["signed_upload_url"]
        if kind == "blob":
            _full(_put_blob(url, os.urandom(64 * KIB)))
        else:
            _full(httpx.put(f"{url}&comp=block&blockid={block_id(0)}", content=os.urandom(64 * KIB), timeout=60))
        _key_is_free(server, token, key)
    chunk_key = f"body-chunk-{run}"
    reserved = v1_reserve(server, token, chunk_key, 64 * KIB)
    assert reserved.status_code == 201, reserved.text
    _full(v1_patch(server, token, reserved.json()["cacheId"], 0, os.urandom(64 * KIB)))
    assert v1_reserve(server, token, chunk_key, 64 * KIB).status_code == 201  # dropped: the key was free

    # The runcache CLI says why its save failed.
    ws, _ = workspace(tmp_path)
    cli = cli_runner(server, ws, tmp_path / "home")
    got = cli("save", "--path", "deps", "--key", f"cli-{run}")
    assert "507" in got.stderr and "out of space" in got.stderr, got.stderr

    # What was saved before is untouched, on both protocols, and with its recorded digest.
    assert v1_restore(server, token, f"saved-v1-{run}") == saved_v1
    assert v2_restore(server, token, f"saved-v2-{run}") == saved_v2
    for key, data in ((f"saved-v1-{run}", saved_v1), (f"saved-v2-{run}", saved_v2)):
        head = httpx.get(v2_url(server, token, key), timeout=60)
        assert head.headers["x-ms-meta-sha256"] == sha256(data)
    log = server.log_path.read_text(errors="replace") if server.log_path else ""
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]


@pytest.fixture(scope="module")
def small_seaweed() -> Iterator[SeaweedFS]:
    try:
        s3 = SeaweedFS(volume_mb=1, volumes=1).start()
    except S3Missing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield s3
    finally:
        s3.stop()


def test_a_full_seaweedfs_refuses_the_save_and_loses_nothing(small_seaweed: SeaweedFS, tmp_path: Path) -> None:
    blobs = f"s3://{small_seaweed.bucket}/full-{uuid.uuid4().hex[:8]}"
    server = Server(tmp_path / "data", extra_args=["--blobs", blobs], env=small_seaweed.env).start()
    try:
        token = server.token()
        saved: dict[str, bytes] = {}
        refused: tuple[str, httpx.Response] | None = None
        for i in range(12):  # 12 x 2 x 200 KiB (staged, then the blob) is far past the volume's 1 MiB
            key, data = f"s3-full-{i}", os.urandom(200 * KIB)
            created = v2_create(server, token, key)
            assert created["ok"], created
            put = _put_blob(created["signed_upload_url"], data)
            if put.status_code != 201:
                refused = key, put
                break
            body = {"key": key, "version": "a" * 64, "size_bytes": str(len(data))}
            fin = twirp(server, "FinalizeCacheEntryUpload", body, token)
            if fin.status_code != 200:
                refused = key, fin
                break
            assert fin.json()["ok"], fin.text
            saved[key] = data
        assert refused is not None, "the store never filled up"
        assert saved, "the store was full before the first save"
        key, answer = refused
        assert answer.status_code in (500, 507), answer.text
        assert v1_lookup(server, token, key).status_code == 204
        for key, data in saved.items():
            assert v2_restore(server, token, key) == data == v1_restore(server, token, key)
    finally:
        server.stop()
