"""A store's "no space" answers become StorageFull (507), on S3 and on Azure, and nothing else does.

The answers come over HTTP from a stand-in server, in the exact shapes real servers send (MinIO's 507
XMinioStorageFull, Ceph RGW's 403 QuotaExceeded, …), and go through the real SDK clients (botocore's
parsing and retries, azure-core's), so the rule is checked on the exceptions production code receives.
A real full store (Azurite at its memory limit) is tests/integration/test_object_store_full.py; SeaweedFS
with no free volume answers a bare 500 InternalError, which no rule can tell from any other failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from helpers import StandIn, serve_stand_in
from runcache.core.errors import StorageFull
from runcache.server.errors import classify
from runcache.store.s3 import MIN_PART, S3BlobStore, make_client
from runcache.store.s3uploads import S3UploadStore

MIB = 1024 * 1024


class _Store(StandIn):
    """Reads, listings and deletes succeed (empty); every write that carries bytes gets `refusal`."""

    refusal: tuple[int, str] = (507, "XMinioStorageFull")
    azure = False
    only_comp: str | None = None  # Azure: refuse only this kind of PUT (comp=…); the others succeed
    empty_ok = True  # an empty object needs no room (Azurite at its limit takes one)
    writes: list[str]

    def _drain(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while size := int(self.rfile.readline().split(b";")[0], 16):
                total += len(self.rfile.read(size + 2)) - 2
            self.rfile.readline()
            return total
        return len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def _refuse(self) -> None:
        status, code = self.refusal
        self.writes.append(f"{self.command} {self.path}")
        if self.azure:
            body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>no room</Message></Error>'
            self.send_response(status)
            self.send_header("x-ms-error-code", code)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        # MinIO's body, field for field.
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
            + code
            + "</Code><Message>Storage backend has reached its minimum free drive threshold.</Message>"
            + "<Key>k</Key><BucketName>b</BucketName><Resource>/b/k</Resource><RequestId>1</RequestId></Error>"
        )
        self.reply(status, body.encode(), "application/xml")

    def do_HEAD(self) -> None:
        # Only an upload's `created` marker exists.
        self.reply(200 if urlsplit(self.path).path.endswith("/created") else 404)

    def do_GET(self) -> None:
        if self.azure:
            listing = b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs /></EnumerationResults>'
            self.reply(200, listing, "application/xml")
            return
        empty = '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>0</KeyCount>'
        self.reply(200, (empty + "<IsTruncated>false</IsTruncated></ListBucketResult>").encode(), "application/xml")

    def do_POST(self) -> None:
        self._drain()
        query = self._query()
        if "uploads" in query:
            xml = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>u1</UploadId>"
            self.reply(200, (xml + "</InitiateMultipartUploadResult>").encode(), "application/xml")
        elif "delete" in query:
            self.reply(200, b"<DeleteResult></DeleteResult>", "application/xml")
        else:
            self._refuse()

    def do_PUT(self) -> None:
        size = self._drain()
        other = self.only_comp is not None and self._query().get("comp", [""])[0] != self.only_comp
        if other or (size == 0 and self.empty_ok):
            self.reply(201)
            return
        self._refuse()

    def do_DELETE(self) -> None:
        self.writes.append(f"DELETE {self.path}")
        self.reply(204)


@pytest.fixture
def store_server() -> Iterator[tuple[type[_Store], str]]:
    handler = type("Store", (_Store,), {"writes": []})
    httpd, url = serve_stand_in(handler)
    try:
        yield handler, url
    finally:
        httpd.shutdown()


def _s3(url: str) -> tuple[S3BlobStore, S3UploadStore]:
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}
    client = make_client({**env, "RUNCACHE_S3_ENDPOINT": url, "RUNCACHE_S3_ADDRESSING_STYLE": "path"})
    blobs = S3BlobStore("b", "p", client=client, part_size=MIN_PART)
    return blobs, S3UploadStore("b", "p", client=client, part_size=MIN_PART)


FULL = [
    pytest.param((507, "XMinioStorageFull"), id="minio-full-disk"),
    pytest.param((507, "InsufficientStorage"), id="507"),
    pytest.param((403, "QuotaExceeded"), id="ceph-quota"),
    pytest.param((400, "XMinioAdminBucketQuotaExceeded"), id="minio-bucket-quota"),
]
NOT_FULL = [
    pytest.param((403, "AccessDenied"), id="access-denied"),
    pytest.param((400, "EntityTooLarge"), id="entity-too-large"),
]


@pytest.mark.parametrize("refusal", FULL)
def test_s3_full_answers_are_storage_full_on_every_write(
    store_server: tuple[type[_Store], str], refusal: tuple[int, str]
) -> None:
    handler, url = store_server
    handler.refusal = refusal
    blobs, uploads = _s3(url)
    # A blob in one PUT, and one in parts (the first part is refused; the multipart upload is aborted).
    with pytest.raises(StorageFull, match=rf"out of space \({refusal[1]} \(HTTP {refusal[0]}\)\)") as got:
        blobs.put_stream("1", [b"small"], size=5, sha256=None)
    assert isinstance(got.value.__cause__, ClientError)
    assert classify(got.value)[:2] == (507, "resource_exhausted")
    big = os.urandom(MIN_PART + MIB)
    with pytest.raises(StorageFull):
        blobs.put_stream("2", [big], size=len(big), sha256=None)
    assert any(w.startswith("DELETE /b/p/2?uploadId=u1") for w in handler.writes), handler.writes
    # Uploads in flight: a reservation (where even an empty object is refused), and a body (whose upload
    # is then to be dropped).
    handler.empty_ok = False
    with pytest.raises(StorageFull):
        uploads.create(7)
    handler.empty_ok = True
    writer = uploads.whole_writer(8, cap=1 << 30)
    writer.write(b"body")
    assert not uploads.dropped_for_space(8)
    with pytest.raises(StorageFull):
        writer.finish()
    assert uploads.dropped_for_space(8)
    uploads.discard(8)
    assert not uploads.dropped_for_space(8)


@pytest.mark.parametrize("refusal", NOT_FULL)
def test_s3_other_refusals_stay_what_they_are(store_server: tuple[type[_Store], str], refusal: tuple[int, str]) -> None:
    handler, url = store_server
    handler.refusal = refusal
    blobs, uploads = _s3(url)
    with pytest.raises(ClientError, match=refusal[1]):
        blobs.put_stream("1", [b"small"], size=5, sha256=None)
    writer = uploads.whole_writer(8, cap=1 << 30)
    writer.write(b"body")
    with pytest.raises(ClientError, match=refusal[1]):
        writer.finish()
    assert not uploads.dropped_for_space(8)


def _azure(url: str):
    from azure.storage.blob import BlobServiceClient

    from runcache.store.azure import AzureBlobStore
    from runcache.store.azureuploads import AzureUploadStore

    # No retries: azure-core retries 5xx answers with backoff, which would only slow this test down.
    service = BlobServiceClient(
        f"{url}/acct", credential={"account_name": "acct", "account_key": "a2V5"}, retry_total=0
    )
    blobs = AzureBlobStore("c", "p", service=service)
    return blobs, AzureUploadStore(blobs)


@pytest.mark.parametrize(
    ("refusal", "full"),
    [
        pytest.param((507, "InsufficientStorage"), True, id="507"),
        pytest.param((409, "MemoryExtentStoreAtSizeLimit"), True, id="azurite-at-limit"),
        pytest.param((403, "AuthorizationPermissionMismatch"), False, id="permission"),
    ],
)
def test_azure_full_answers_are_storage_full(
    store_server: tuple[type[_Store], str], refusal: tuple[int, str], full: bool
) -> None:
    handler, url = store_server
    handler.refusal, handler.azure = refusal, True
    blobs, uploads = _azure(url)
    expected = StorageFull if full else Exception
    with pytest.raises(expected) as got:
        blobs.put_stream("1", [b"small"], size=5, sha256=None)
    assert isinstance(got.value, StorageFull) == full, got.value
    writer = uploads.whole_writer(8, cap=1 << 30)
    writer.write(b"body")
    with pytest.raises(expected) as got:
        writer.finish()
    assert isinstance(got.value, StorageFull) == full, got.value
    assert uploads.dropped_for_space(8) == full


def test_azure_blob_already_there_is_still_no_full_store(store_server: tuple[type[_Store], str]) -> None:
    """A 409 that is not about space keeps its meaning: the commit's "blob exists" stays FileExistsError."""
    handler, url = store_server
    handler.azure = True
    blobs, _ = _azure(url)
    handler.refusal, handler.only_comp = (409, "BlobAlreadyExists"), "blocklist"
    with pytest.raises(FileExistsError):
        blobs.put_stream("1", [b"small"], size=5, sha256=None)
