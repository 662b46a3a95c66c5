"""The BlobStore contract, run against every backend: the local disk store and the S3 store on a real
S3 server (SeaweedFS, tests/s3server.py). A backend passes only if the service could not tell them apart."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from botocore.exceptions import ClientError

from azurite import Azurite
from runcache.store.azure import AzureBlobStore
from runcache.store.blobs import BlobMissing, BlobStore
from runcache.store.disk import DiskBlobStore
from runcache.store.s3 import MIN_PART, S3BlobStore
from s3server import SeaweedFS

MIB = 1024 * 1024


@pytest.fixture(params=["disk", "s3", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "disk":
        return DiskBlobStore(tmp_path / "blobs")
    if request.param == "azure":
        azurite: Azurite = request.getfixturevalue("azurite")
        # Small blocks, so a few MiB already go up as several staged blocks.
        return AzureBlobStore(
            azurite.container, f"t-{uuid.uuid4().hex[:12]}", service=azurite.service(), block_size=MIB
        )
    seaweed: SeaweedFS = request.getfixturevalue("seaweed")
    # A fresh prefix per test: the tests share one bucket but never see each other's objects.
    return S3BlobStore(seaweed.bucket, f"t-{uuid.uuid4().hex[:12]}", client=seaweed.client(), part_size=MIN_PART)


def staged(tmp_path: Path, data: bytes, name: str | None = None) -> Path:
    p = tmp_path / (name or f"staged-{uuid.uuid4().hex}")
    p.write_bytes(data)
    return p


def split(tmp_path: Path, data: bytes, sizes: list[int]) -> list[Path]:
    assert sum(sizes) == len(data)
    out, at = [], 0
    for n in sizes:
        out.append(staged(tmp_path, data[at : at + n]))
        at += n
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(store: BlobStore, name: str, start: int, end: int) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in store.open_range(name, start, end)])

    return anyio.run(collect)


def test_put_file_round_trip_and_consumes_the_file(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = staged(tmp_path, data)
    store.put_file("101", path, size=len(data), sha256=sha(data))
    assert not path.exists()  # the store took ownership
    assert store.size("101") == len(data)
    assert store.contains("101")
    assert read(store, "101", 0, len(data)) == data
    assert read(store, "101", 1000, 1001) == data[1000:1001]
    assert read(store, "101", 5, 5) == b""


def test_empty_blob(store: BlobStore, tmp_path: Path) -> None:
    path = staged(tmp_path, b"")
    store.put_file("7", path, size=0, sha256=sha(b""))
    assert store.size("7") == 0
    assert read(store, "7", 0, 0) == b""


def test_put_parts_smaller_than_the_s3_minimum(store: BlobStore, tmp_path: Path) -> None:
    # Azure-sized blocks well under 5 MiB, in a blob over one part: the S3 store must merge them.
    data = os.urandom(6 * MIB + 12345)
    sizes = [MIB] * 6 + [12345]
    paths = split(tmp_path, data, sizes)
    store.put_parts("202", paths, size=len(data), sha256=sha(data))
    assert not any(p.exists() for p in paths)
    assert store.size("202") == len(data)
    assert read(store, "202", 0, len(data)) == data
    # Across a staged-block boundary and across the S3 part boundary (5 MiB).
    for lo, hi in [(MIB - 10, MIB + 10), (MIN_PART - 1, MIN_PART + 1), (MIN_PART, len(data))]:
        assert read(store, "202", lo, hi) == data[lo:hi]


def test_put_parts_of_several_parts(store: BlobStore, tmp_path: Path) -> None:
    # ≥ 10 MiB, blocks of mixed sizes (tiny, larger than a part, ragged) make three S3 parts or more.
    data = os.urandom(11 * MIB + 777)
    sizes = [100, 7 * MIB, 3 * MIB - 100, MIB, 777]
    paths = split(tmp_path, data, sizes)
    store.put_parts("303", paths, size=len(data), sha256=sha(data))
    assert store.size("303") == len(data)
    assert hashlib.sha256(read(store, "303", 0, len(data))).hexdigest() == sha(data)
    for boundary in (100, 7 * MIB + 100, 10 * MIB, 2 * MIN_PART):
        assert read(store, "303", boundary - 3, boundary + 3) == data[boundary - 3 : boundary + 3]
    assert read(store, "303", len(data) - 1, len(data)) == data[-1:]


def test_large_put_file_goes_up_in_parts(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(10 * MIB + 1)
    store.put_file("404", staged(tmp_path, data), size=len(data), sha256=sha(data))
    assert read(store, "404", 0, len(data)) == data


def test_wrong_digest_or_size_is_refused_and_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(1000)
    with pytest.raises(ValueError):
        store.put_file("5", staged(tmp_path, data), size=len(data) + 1, sha256=sha(data))
    assert not store.contains("5")
    if isinstance(store, S3BlobStore):  # the disk store trusts staging's digest; S3 checks it on the wire
        big = os.urandom(6 * MIB)
        for blob, name in ((data, "6"), (big, "8")):
            with pytest.raises(ValueError):
                store.put_file(name, staged(tmp_path, blob), size=len(blob), sha256=sha(b"other"))
            assert not store.contains(name)


def test_missing_blob(store: BlobStore) -> None:
    assert store.size("999") is None
    assert not store.contains("999")
    with pytest.raises(BlobMissing):
        read(store, "999", 0, 10)
    with pytest.raises(BlobMissing):
        read(store, "999", 0, 0)
    store.delete("999")  # deleting what is not there is not an error


def test_download_url_is_the_blob_or_none(store: BlobStore, tmp_path: Path) -> None:
    """A store either has no URLs of its own (the server streams its bytes) or hands out one that GETs
    exactly this blob, whole or by range, and nothing else; the lifetime is bounded."""
    data = os.urandom(200_000)
    store.put_file("7", staged(tmp_path, data), size=len(data), sha256=sha(data))
    url = store.download_url("7", 60)
    if isinstance(store, DiskBlobStore):
        assert url is None
        return
    assert url is not None
    assert httpx.get(url).content == data
    part = httpx.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    if isinstance(store, S3BlobStore):
        assert httpx.head(url).status_code == 403  # signed for GET only
    store.put_file("8", staged(tmp_path, b"other"), size=5, sha256=sha(b"other"))
    assert httpx.get(url.replace("/7?", "/8?")).status_code == 403
    with pytest.raises(ValueError):
        store.download_url("7", 0)


def test_contains_many(store: BlobStore, tmp_path: Path) -> None:
    for n in ("1", "2", "3"):
        store.put_file(n, staged(tmp_path, n.encode()), size=1, sha256=sha(n.encode()))
    assert store.contains_many(["1", "3", "4", "5"]) == {"1", "3"}
    assert store.contains_many([]) == set()
    # Past the HEAD batch the S3 store lists the prefix instead: same answer.
    many = [str(i) for i in range(1, 60)]
    assert store.contains_many(many) == {"1", "2", "3"}


def test_delete_names_and_stats(store: BlobStore, tmp_path: Path) -> None:
    store.put_file("11", staged(tmp_path, b"abc"), size=3, sha256=sha(b"abc"))
    parts = split(tmp_path, b"defgh", [2, 3])
    store.put_parts("12", parts, size=5, sha256=sha(b"defgh"))
    assert sorted(store.names()) == ["11", "12"]
    ages = dict(store.names_with_age())
    assert set(ages) == {"11", "12"}
    assert all(-5 < age < 120 for age in ages.values()), ages  # seconds since stored (server clock)
    stats = store.stats()
    assert (stats.count, stats.bytes) == (2, 8)
    store.delete("11")
    assert not store.contains("11")
    assert store.names() == ["12"]
    with pytest.raises(BlobMissing):
        read(store, "11", 0, 3)


def test_an_existing_blob_is_never_overwritten(store: BlobStore, tmp_path: Path) -> None:
    store.put_file("21", staged(tmp_path, b"first"), size=5, sha256=sha(b"first"))
    with pytest.raises(FileExistsError):
        store.put_file("21", staged(tmp_path, b"other"), size=5, sha256=sha(b"other"))
    store.put_parts("22", split(tmp_path, b"first", [2, 3]), size=5, sha256=sha(b"first"))
    with pytest.raises((FileExistsError, OSError)):
        store.put_parts("22", split(tmp_path, b"other", [2, 3]), size=5, sha256=sha(b"other"))
    assert read(store, "21", 0, 5) == b"first"
    assert read(store, "22", 0, 5) == b"first"


def test_conditional_write_refuses_a_blob_that_appears_during_the_upload(seaweed: SeaweedFS, tmp_path: Path) -> None:
    """The HEAD before an upload cannot see a writer that finishes first; If-None-Match on the final
    request must. Another writer's object lands between our parts and our CompleteMultipartUpload."""
    client = seaweed.client()
    store = S3BlobStore(seaweed.bucket, f"t-{uuid.uuid4().hex[:12]}", client=client, part_size=MIN_PART)
    real_upload_part = client.upload_part
    raced = []

    def upload_part(**kwargs: object) -> dict:
        out = real_upload_part(**kwargs)
        if not raced:
            raced.append(True)
            client.put_object(Bucket=seaweed.bucket, Key=store.key("31"), Body=b"winner")
        return out

    client.upload_part = upload_part
    data = os.urandom(6 * MIB)
    path = staged(tmp_path, data)
    with pytest.raises(FileExistsError):
        store.put_file("31", path, size=len(data), sha256=sha(data))
    assert path.exists()  # not consumed: the commit failed
    assert read(store, "31", 0, 6) == b"winner"
    assert store.conditional  # the server honoured If-None-Match: no fallback to HEAD-then-PUT


def s3_store(seaweed: SeaweedFS, client: object = None, **kwargs: object) -> S3BlobStore:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return S3BlobStore(seaweed.bucket, prefix, client=client or seaweed.client(), part_size=MIN_PART, **kwargs)


def test_without_conditional_writes_the_store_heads_before_writing(seaweed: SeaweedFS, tmp_path: Path) -> None:
    """A server that answers If-None-Match with 501: the store falls back to HEAD-then-write, for good."""
    client = seaweed.client()
    store = s3_store(seaweed, client)
    real = {"put_object": client.put_object, "complete_multipart_upload": client.complete_multipart_upload}
    refused: list[str] = []

    def no_conditions(op: str):
        def call(**kwargs: object) -> dict:
            if "IfNoneMatch" in kwargs:
                refused.append(op)
                error = {"Error": {"Code": "NotImplemented"}, "ResponseMetadata": {"HTTPStatusCode": 501}}
                raise ClientError(error, op)
            return real[op](**kwargs)

        return call

    for op in real:
        setattr(client, op, no_conditions(op))
    store.put_file("41", staged(tmp_path, b"first"), size=5, sha256=sha(b"first"))
    assert refused == ["put_object"] and not store.conditional
    big = os.urandom(6 * MIB)
    store.put_file("42", staged(tmp_path, big), size=len(big), sha256=sha(big))
    assert refused == ["put_object"]  # no second attempt at a condition once refused
    assert read(store, "42", 0, len(big)) == big
    with pytest.raises(FileExistsError):
        store.put_file("41", staged(tmp_path, b"other"), size=5, sha256=sha(b"other"))
    assert read(store, "41", 0, 5) == b"first"


def test_from_url_and_environment(seaweed: SeaweedFS, tmp_path: Path) -> None:
    """`s3://bucket/prefix` plus boto3's own variables, or RUNCACHE_S3_ENDPOINT; checksum headers can be
    turned off for stores that reject them, and the digest is still checked and kept as metadata."""
    env = {k: v for k, v in seaweed.env.items() if not k.startswith("AWS_ENDPOINT")}
    env |= {"RUNCACHE_S3_ENDPOINT": seaweed.endpoint, "RUNCACHE_S3_CHECKSUMS": "0"}
    store = S3BlobStore.from_url(f"s3://{seaweed.bucket}/a/b-{uuid.uuid4().hex[:8]}/", env)
    assert store.prefix.startswith("a/b-") and not store.prefix.endswith("/")
    assert not store.checksums
    store.check()
    data = os.urandom(9 * MIB)
    store.part_size = MIN_PART
    store.put_file("51", staged(tmp_path, data), size=len(data), sha256=sha(data))
    assert read(store, "51", MIN_PART - 2, MIN_PART + 2) == data[MIN_PART - 2 : MIN_PART + 2]
    head = seaweed.client().head_object(Bucket=seaweed.bucket, Key=store.key("51"))
    assert head["Metadata"]["sha256"] == sha(data)
    with pytest.raises(ValueError, match="no-such-bucket"):
        S3BlobStore.from_url("s3://no-such-bucket/x", env).check()
    for bad in ("s3:///x", "http://bucket/x"):
        with pytest.raises(ValueError):
            S3BlobStore.from_url(bad, env)


def test_abandoned_reads_give_their_connections_back(seaweed: SeaweedFS, tmp_path: Path) -> None:
    """Downloads dropped after their first chunk (more of them than the client pool's 32 connections) leave
    the store working: each ends without reading its body out, and a full read afterwards is intact."""
    store = s3_store(seaweed)
    data = os.urandom(4 * MIB)
    store.put_file("61", staged(tmp_path, data), size=len(data), sha256=sha(data))

    async def first_chunks() -> list[bytes]:
        out = []
        with anyio.fail_after(60):
            for _ in range(40):
                async with contextlib.aclosing(store.open_range("61", 0, len(data))) as chunks:
                    async for chunk in chunks:
                        out.append(chunk)
                        break
        return out

    got = anyio.run(first_chunks)
    assert all(c == data[: len(c)] for c in got)
    assert read(store, "61", 0, len(data)) == data


def test_azure_upload_url_writes_one_blob_until_sealed(azurite: Azurite) -> None:
    """A direct upload (serve --transfers direct): the client writes through a create+write SAS; sealing the
    blob at finalize shuts that URL out while the store itself still deletes it."""
    store = AzureBlobStore(azurite.container, f"t-{uuid.uuid4().hex[:12]}", service=azurite.service())
    url = store.upload_url("5", 60)
    assert url is not None
    put = {"x-ms-blob-type": "BlockBlob"}
    assert httpx.put(url, content=b"first", headers=put).status_code == 201
    assert httpx.put(url, content=b"second", headers=put).status_code == 201  # not sealed yet: rewritable
    report = store.seal("5")
    assert report is not None and report.size == 6 and report.etag
    assert store.seal("5") == report  # sealing again (a retried finalize, another replica) is the same
    assert httpx.put(url, content=b"third", headers=put).status_code == 412
    assert read(store, "5", 0, 6) == b"second"
    store.unseal("5")
    assert httpx.put(url, content=b"fourth", headers=put).status_code == 201
    store.seal("5")
    store.delete("5")
    assert not store.contains("5")
    assert store.seal("6") is None and store.report("6") is None


def test_azure_read_sas_answers_what_the_real_client_asks_on_azure_hosts(azurite: Azurite, tmp_path: Path) -> None:
    """On *.blob.core.windows.net @actions/cache downloads concurrently: a HEAD for the size, then ranged GETs
    (downloadCacheHttpClientConcurrent); the read SAS allows both, and nothing that writes."""
    store = AzureBlobStore(azurite.container, f"t-{uuid.uuid4().hex[:12]}", service=azurite.service())
    data = os.urandom(100_000)
    store.put_file("9", staged(tmp_path, data), size=len(data), sha256=sha(data))
    url = store.download_url("9", 60)
    assert url is not None
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert head.headers["x-ms-meta-sha256"] == sha(data)  # what the runcache CLI checks a download against
    part = httpx.get(url, headers={"Range": "bytes=99000-99999"})
    assert part.status_code == 206 and part.content == data[99_000:]
    assert httpx.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403
    assert httpx.delete(url).status_code == 403
