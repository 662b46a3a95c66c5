"""The UploadStore contract, run against every backend: local staging (one replica's disk) and the shared
store in an S3 bucket (SeaweedFS, tests/s3server.py). The service must not be able to tell them apart."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

import pytest

from azurite import Azurite
from runcache.core.errors import EntryTooLarge, IncompleteUpload, InvalidRequest
from runcache.store.azure import AzureBlobStore
from runcache.store.azureuploads import AzureUploadStore
from runcache.store.s3 import MIN_PART
from runcache.store.s3uploads import S3UploadStore
from runcache.store.staging import Staging
from runcache.store.uploads import UploadStore
from s3server import SeaweedFS

CAP = 64 * 1024 * 1024
MAX_BLOCKS = 50


@pytest.fixture(params=["disk", "s3", "azure"])
def uploads(request: pytest.FixtureRequest, tmp_path: Path) -> UploadStore:
    if request.param == "disk":
        return Staging(tmp_path / "uploads")
    if request.param == "azure":
        azurite: Azurite = request.getfixturevalue("azurite")
        blobs = AzureBlobStore(azurite.container, f"u-{uuid.uuid4().hex[:12]}", service=azurite.service())
        # Blocks of 1 MiB, so a few MiB already go up as several staged blocks.
        return AzureUploadStore(blobs, block_size=1024 * 1024)
    seaweed: SeaweedFS = request.getfixturevalue("seaweed")
    # The smallest part S3 takes, so a few MiB already exercise the multipart path.
    return S3UploadStore(seaweed.bucket, f"u-{uuid.uuid4().hex[:12]}", client=seaweed.client(), part_size=MIN_PART)


def send(store: UploadStore, upload_id: int, start: int, data: bytes, *, end: int | None = None) -> None:
    writer = store.range_writer(
        upload_id, start, start + len(data) if end is None else end, cap=CAP, max_chunks=MAX_BLOCKS
    )
    try:
        for i in range(0, len(data), 1 << 20):
            writer.write(data[i : i + (1 << 20)])
        writer.finish()
    except BaseException:
        writer.abort()
        raise


def put_block(store: UploadStore, upload_id: int, block_id: str, data: bytes) -> None:
    writer = store.block_writer(upload_id, block_id, cap=CAP, max_blocks=MAX_BLOCKS)
    writer.write(data)
    writer.finish()


def bid(n: int) -> str:
    return base64.b64encode(f"block-{n:04d}".encode()).decode()


def staged_bytes(store: UploadStore, upload_id: int, size: int) -> tuple[bytes, str | None]:
    store.seal(upload_id)
    try:
        staged = store.finalize(upload_id, size)
    finally:
        store.unseal(upload_id)
    data = b"".join(staged.chunks())
    assert staged.size == size == len(data)
    return data, staged.sha256


def test_ranges_in_any_order_make_the_upload(uploads: UploadStore) -> None:
    uploads.create(1)
    data = os.urandom(3 * 1024 * 1024 + 17)
    cut = [0, 1024 * 1024, 2 * 1024 * 1024, len(data)]
    for a, b in [(1, 2), (2, 3), (0, 1)]:  # the last range first, as parallel chunks may land
        send(uploads, 1, cut[a], data[cut[a] : cut[b]])
    got, sha = staged_bytes(uploads, 1, len(data))
    assert got == data
    assert sha is None or sha == hashlib.sha256(data).hexdigest()


def test_a_range_larger_than_a_part_goes_up_in_parts(uploads: UploadStore) -> None:
    uploads.create(2)
    data = os.urandom(2 * MIN_PART + 123)
    send(uploads, 2, 0, data)
    assert staged_bytes(uploads, 2, len(data))[0] == data


def test_overlapping_retries_still_give_exact_bytes(uploads: UploadStore) -> None:
    uploads.create(3)
    data = os.urandom(400_000)
    send(uploads, 3, 0, data[:300_000])
    send(uploads, 3, 100_000, data[100_000:])  # a retried chunk overlapping what arrived
    send(uploads, 3, 0, data[:300_000])
    assert staged_bytes(uploads, 3, len(data))[0] == data


def test_a_hole_or_a_wrong_size_is_refused(uploads: UploadStore) -> None:
    uploads.create(4)
    send(uploads, 4, 0, b"a" * 1000)
    send(uploads, 4, 2000, b"c" * 1000)
    with pytest.raises(IncompleteUpload):
        uploads.finalize(4, 3000)
    send(uploads, 4, 1000, b"b" * 1000)
    with pytest.raises((IncompleteUpload, InvalidRequest)):
        uploads.finalize(4, 2500)  # fewer bytes than arrived: not this upload
    assert staged_bytes(uploads, 4, 3000)[0] == b"a" * 1000 + b"b" * 1000 + b"c" * 1000


def test_a_body_shorter_than_announced_does_not_count(uploads: UploadStore) -> None:
    uploads.create(5)
    with pytest.raises(InvalidRequest):
        send(uploads, 5, 0, b"x" * 100, end=200)
    with pytest.raises(InvalidRequest):
        send(uploads, 5, 0, b"x" * 300, end=200)  # longer than announced: refused as it arrives
    with pytest.raises(IncompleteUpload):
        uploads.finalize(5, 200)


def test_the_entry_cap_holds_while_bytes_arrive(uploads: UploadStore) -> None:
    uploads.create(6)
    writer = uploads.range_writer(6, 0, None, cap=1000, max_chunks=MAX_BLOCKS)
    with pytest.raises(EntryTooLarge):
        writer.write(b"x" * 1001)
    writer.abort()


def test_put_blob_replaces_earlier_bytes_and_knows_its_digest(uploads: UploadStore) -> None:
    uploads.create(7)
    send(uploads, 7, 0, b"old bytes that go away")
    data = os.urandom(200_000)
    writer = uploads.whole_writer(7, cap=CAP)
    writer.write(data)
    writer.finish()
    got, sha = staged_bytes(uploads, 7, len(data))
    assert got == data and sha == hashlib.sha256(data).hexdigest()


def test_blocks_in_list_order_and_unlisted_blocks_dropped(uploads: UploadStore) -> None:
    uploads.create(8)
    parts = [os.urandom(100_000 + i) for i in range(4)]
    for i, part in enumerate(parts):
        put_block(uploads, 8, bid(i), part)
    put_block(uploads, 8, bid(9), b"never listed")
    order = [2, 0, 3, 1]
    size = uploads.commit_blocks(8, [bid(i) for i in order], max_blocks=MAX_BLOCKS)
    want = b"".join(parts[i] for i in order)
    assert size == len(want)
    assert staged_bytes(uploads, 8, size)[0] == want


def test_block_list_rules(uploads: UploadStore) -> None:
    uploads.create(9)
    put_block(uploads, 9, bid(0), b"zero")
    with pytest.raises(InvalidRequest, match="never uploaded"):
        uploads.commit_blocks(9, [bid(0), bid(1)], max_blocks=MAX_BLOCKS)
    with pytest.raises(InvalidRequest, match="only once"):
        uploads.commit_blocks(9, [bid(0), bid(0)], max_blocks=MAX_BLOCKS)
    with pytest.raises(InvalidRequest, match="base64"):
        uploads.block_writer(9, "not base64!", cap=CAP, max_blocks=MAX_BLOCKS)
    assert uploads.commit_blocks(9, [bid(0)], max_blocks=MAX_BLOCKS) == 4
    # A block after the list reopens the upload: the old list no longer makes it whole.
    put_block(uploads, 9, bid(1), b"one")
    with pytest.raises((IncompleteUpload, InvalidRequest)):
        uploads.finalize(9, 4)
    assert uploads.commit_blocks(9, [bid(0), bid(1)], max_blocks=MAX_BLOCKS) == 7
    assert staged_bytes(uploads, 9, 7)[0] == b"zeroone"


def test_block_count_is_bounded(uploads: UploadStore) -> None:
    uploads.create(10)
    for i in range(3):
        writer = uploads.block_writer(10, bid(i), cap=CAP, max_blocks=3)
        writer.write(b"b")
        writer.finish()
    with pytest.raises(InvalidRequest):
        uploads.block_writer(10, bid(3), cap=CAP, max_blocks=3)
    uploads.block_writer(10, bid(0), cap=CAP, max_blocks=3).abort()  # replacing a staged block is fine


def test_progress_listing_and_discard(uploads: UploadStore) -> None:
    assert uploads.progress(11) is None and not uploads.exists(11)
    uploads.create(11)
    uploads.create(12)
    send(uploads, 11, 0, b"x" * 5000)
    put_block(uploads, 11, bid(0), b"y" * 3000)
    progress = uploads.progress(11)
    assert progress is not None and progress.received >= 5000
    assert {11, 12} <= set(uploads.upload_ids())
    uploads.discard(11)
    assert not uploads.exists(11) and uploads.progress(11) is None
    assert 11 not in uploads.upload_ids() and 12 in uploads.upload_ids()


def test_an_aborted_writer_leaves_nothing_counted(uploads: UploadStore) -> None:
    uploads.create(13)
    writer = uploads.range_writer(13, 0, None, cap=CAP, max_chunks=MAX_BLOCKS)
    writer.write(os.urandom(MIN_PART + 10))  # past one part: the S3 store has a multipart upload open
    writer.abort()
    with pytest.raises(IncompleteUpload):
        uploads.finalize(13, MIN_PART + 10)
    uploads.discard(13)
    assert 13 not in uploads.upload_ids()


def test_chunk_count_is_bounded(uploads: UploadStore) -> None:
    """Retried or tiny chunks are each stored state: past the bound the client is told to send larger ones."""
    uploads.create(14)
    for _ in range(3):
        send(uploads, 14, 0, b"same bytes again")
    with pytest.raises(InvalidRequest, match="chunks"):
        uploads.range_writer(14, 0, 16, cap=CAP, max_chunks=3)
