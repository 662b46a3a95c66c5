"""Blob store on Azure Blob Storage: blob `name` is the block blob `<prefix>/<name>` in one container.

Configured by `--blobs azure://container/prefix`; the account comes from the environment the way Azure
tools read it: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY (endpoint
`https://<account>.blob.core.windows.net`, or RUNCACHE_AZURE_ENDPOINT for another one: Azurite, a sovereign
cloud, a private endpoint). RUNCACHE_AZURE_PUBLIC_ENDPOINT is the account URL runners use in SAS URLs when
it is not the one the server uses. SAS URLs are signed with the account key, locally: no request.

The client is the SDK's synchronous one: the service calls the store from worker threads, and `open_range`,
the one call made on the event loop, moves each blocking read to a thread.

Integrity: every blob carries its SHA-256 as metadata `sha256`, and each request body carries a
transactional MD5 the service checks (`validate_content`). A blob goes up as staged blocks while we hash
the stream; the block list is committed only when size and digest match, so a wrong upload never becomes
a blob. No overwrite: the commit is conditional (If-None-Match: *).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import (
    BlobLeaseClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    generate_blob_sas,
)

from runcache.store.blobs import BlobMissing, BlobReport, BlobStats
from runcache.store.parts import ObjectBlobStore, send_parts

MIB = 1024 * 1024
# Azure's ceiling on the blocks of one blob, and on one block's size.
MAX_BLOCKS = 50_000
MAX_BLOCK_SIZE = 4000 * MIB
DEFAULT_BLOCK = 8 * MIB
# Reads: one ranged GET per chunk of this size (memory per download: one chunk).
_READ = 4 * MIB
# A SAS URL lives at most this long (a short-lived credential handed to runners; the server's default is 600 s).
MAX_SAS_SECONDS = 7 * 24 * 3600
# SAS start time this far back: a runner's or the storage's clock a little behind ours still accepts it.
_CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_SUFFIX = "blob.core.windows.net"
_SHA256 = re.compile(r"[0-9a-f]{64}")

# The SDK logs every request and response at INFO: one line per block or range would drown the server's own
# log, so only its warnings and errors get through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def block_id(n: int) -> str:
    # All block ids of one blob must have the same length; the SDK base64-encodes them on the wire.
    return f"{n:08d}"


# Azure Storage's published error codes name no full account or container (capacity is a per-account
# scalability target); what does say "no room": HTTP 507 from anything speaking the Blob API, and Azurite's
# in-memory store at its --extentMemoryLimit, which answers 409 with this code.
_FULL_CODES = {"MemoryExtentStoreAtSizeLimit"}


def out_of_space(exc: BaseException) -> str | None:
    """The storage's answer when it means "no space for these bytes" (parts.full_store), else None. Checked
    by code before any other reading of the error: Azurite's is a 409, which the SDK raises as
    ResourceExistsError, and a commit would otherwise take it for "the blob exists"."""
    if not isinstance(exc, HttpResponseError):
        return None
    if exc.status_code == 507 or exc.error_code in _FULL_CODES:
        return f"{exc.error_code or exc.reason or 'error'} (HTTP {exc.status_code})"
    return None


def make_service(env: dict[str, str] | None = None) -> BlobServiceClient:
    """A BlobServiceClient from AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY."""
    env = dict(os.environ if env is None else env)
    options: dict[str, Any] = {"max_single_get_size": _READ, "max_chunk_get_size": _READ, "retry_total": 5}
    conn = env.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    endpoint = env.get("RUNCACHE_AZURE_ENDPOINT", "").strip()
    if conn:
        if endpoint:
            options["account_url"] = endpoint
        return BlobServiceClient.from_connection_string(conn, **options)
    account, key = env.get("AZURE_STORAGE_ACCOUNT", "").strip(), env.get("AZURE_STORAGE_KEY", "").strip()
    if not account or not key:
        raise ValueError(
            "azure:// blobs need AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY"
        )
    url = endpoint or f"https://{account}.{DEFAULT_SUFFIX}"
    return BlobServiceClient(url, credential={"account_name": account, "account_key": key}, **options)


def _account_key(service: BlobServiceClient) -> tuple[str, str] | None:
    cred = service.credential
    name, key = getattr(cred, "account_name", None), getattr(cred, "account_key", None)
    return (name, key) if name and key else None


class AzureBlobStore(ObjectBlobStore):
    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        service: BlobServiceClient,
        block_size: int = DEFAULT_BLOCK,
        concurrency: int = 4,
        public_endpoint: str = "",
    ) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"Azure blocks are 1 to {MAX_BLOCK_SIZE} bytes, got {block_size}")
        self.service = service
        self.container_name = container
        self.container: ContainerClient = service.get_container_client(container)
        self.prefix = prefix.strip("/")
        self.block_size = block_size
        self.concurrency = max(1, concurrency)
        # The account URL in SAS URLs: where runners reach the account (may differ from the server's route).
        self.public_endpoint = (public_endpoint or service.url).rstrip("/")
        # Lease ids of sealed blobs derive from the account key: every replica computes the same one, and a
        # holder of an upload URL cannot (a known lease id would let it write the sealed blob again).
        signer = _account_key(service)
        secret = hashlib.sha256(("runcache-lease\0" + (signer[1] if signer else service.url)).encode()).digest()
        self._lease_namespace = uuid.UUID(bytes=secret[:16])

    @classmethod
    def from_url(cls, url: str, env: dict[str, str] | None = None) -> AzureBlobStore:
        """`azure://container/prefix`, the account from the environment (module docstring)."""
        env = dict(os.environ if env is None else env)
        parts = urlsplit(url)
        if parts.scheme != "azure" or not parts.netloc:
            raise ValueError(f"blob store URL must look like azure://container/prefix, got {url!r}")
        public = env.get("RUNCACHE_AZURE_PUBLIC_ENDPOINT", "").strip()
        return cls(parts.netloc, parts.path, service=make_service(env), public_endpoint=public)

    def check(self) -> None:
        """Fail at start-up, in one line, when the container cannot be reached, rather than at the first save."""
        try:
            self.container.get_container_properties()
        except HttpResponseError as exc:
            code = exc.error_code or exc.reason or exc
            raise ValueError(f"Azure container {self.container_name!r} at {self.service.url}: {code}") from exc

    def key(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid blob name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _blob(self, name: str) -> Any:
        return self.container.get_blob_client(self.key(name))

    # -- writes ---------------------------------------------------------------------------------------

    out_of_space = staticmethod(out_of_space)

    def _put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        blob = self._blob(name)
        # Also with the conditional commit: refuse before sending gigabytes, not at the final request.
        if self.contains(name):
            raise FileExistsError(f"blob {blob.blob_name} already exists in container {self.container_name}")
        # Within Azure's 50,000 blocks for any size.
        block = max(self.block_size, -(-size // MAX_BLOCKS))

        def stage(n: int, part: bytes) -> str:
            # Staged blocks are invisible until the list is committed.
            blob.stage_block(block_id(n), part, validate_content=True)
            return block_id(n)

        sent = send_parts(chunks, block, stage, self.concurrency)
        ids, actual = sent.results, sent.sha256
        if sent.size != size or (sha256 is not None and actual != sha256):
            # Nothing was committed: the staged blocks are dropped by the service (uncommitted blocks expire).
            raise ValueError(
                f"{blob.blob_name}: staged bytes ({sent.size}) do not match size {size} and SHA-256 {sha256}"
            )
        try:
            blob.commit_block_list(ids, metadata={"sha256": actual}, match_condition=MatchConditions.IfMissing)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            if out_of_space(exc) is not None:
                raise  # a full store's 409 (Azurite), not a blob already there: full_store reports it
            raise FileExistsError(f"blob {blob.blob_name} already exists in container {self.container_name}") from exc
        return actual

    # -- reads ----------------------------------------------------------------------------------------

    def _properties(self, name: str) -> Any | None:
        try:
            return self._blob(name).get_blob_properties()
        except ResourceNotFoundError:
            return None

    def size(self, name: str) -> int | None:
        props = self._properties(name)
        return None if props is None else int(props.size)

    def report(self, name: str) -> BlobReport | None:
        """Size, ETag and content MD5 of a committed blob, as the storage reports them; None when absent."""
        props = self._properties(name)
        if props is None:
            return None
        md5 = props.content_settings.content_md5
        claimed = (props.metadata or {}).get("sha256", "")
        return BlobReport(
            int(props.size),
            str(props.etag).strip('"'),
            base64.b64encode(md5).decode() if md5 else None,
            # Only a well-formed digest: it goes into the entry and out again in a response header.
            claimed if _SHA256.fullmatch(claimed) else None,
        )

    def _lease_id(self, name: str) -> str:
        return str(uuid.uuid5(self._lease_namespace, self.key(name)))

    def seal(self, name: str) -> BlobReport | None:
        """Take an infinite lease on a blob a client uploaded, then report it: from then on a write needs the
        lease id, so an upload URL still within its lifetime can no longer change what was checked. None
        (and no lease) when there is no such blob."""
        try:
            self._blob(name).acquire_lease(lease_duration=-1, lease_id=self._lease_id(name))
        except ResourceNotFoundError:
            return None
        return self.report(name)

    def unseal(self, name: str) -> None:
        """Give a sealed blob back to its upload URL (a finalize refused it: the client may write it again)."""
        with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
            BlobLeaseClient(self._blob(name), lease_id=self._lease_id(name)).release()

    def _sas_url(self, name: str, ttl: int, permission: BlobSasPermissions) -> str | None:
        if not 1 <= ttl <= MAX_SAS_SECONDS:
            raise ValueError(f"a SAS URL lives 1 to {MAX_SAS_SECONDS} seconds, not {ttl}")
        signer = _account_key(self.service)
        if signer is None:
            return None  # no account key to sign with (a SAS connection string): the server streams
        now = datetime.now(UTC)
        key = self.key(name)
        # A service SAS on one blob (sr=b): the signature covers the blob's path, the permissions and the
        # expiry, so the URL reaches no other blob, does nothing else, and stops working after `ttl`.
        token = generate_blob_sas(
            signer[0],
            self.container_name,
            key,
            account_key=signer[1],
            permission=permission,
            expiry=now + timedelta(seconds=ttl),
            start=now - _CLOCK_SKEW,
            protocol="https,http" if self.public_endpoint.startswith("http://") else "https",
        )
        return f"{self.public_endpoint}/{quote(self.container_name)}/{quote(key)}?{token}"

    def download_url(self, name: str, ttl: int) -> str | None:
        return self._sas_url(name, ttl, BlobSasPermissions(read=True))

    def upload_url(self, name: str, ttl: int) -> str | None:
        """A write-only SAS URL (create + write: Put Blob, Put Block, Put Block List; no read, list or delete)
        for exactly this blob, valid `ttl` seconds; None when this account cannot sign one."""
        return self._sas_url(name, ttl, BlobSasPermissions(create=True, write=True))

    def contains(self, name: str) -> bool:
        return self._properties(name) is not None

    async def open_range(self, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end): ranged GETs of a few MiB, each in a worker thread."""
        if start >= end:
            if not await anyio.to_thread.run_sync(self.contains, name):
                raise BlobMissing(name)
            return
        blob = self._blob(name)
        try:
            stream = await anyio.to_thread.run_sync(
                lambda: blob.download_blob(offset=start, length=end - start, max_concurrency=1)
            )
        except ResourceNotFoundError as exc:
            raise BlobMissing(name) from exc
        chunks = stream.chunks()
        remaining = end - start
        while remaining:
            try:
                chunk = await anyio.to_thread.run_sync(next, chunks, b"")
            except ResourceNotFoundError as exc:
                raise BlobMissing(name) from exc
            if not chunk:
                raise BlobMissing(f"{name}: blob is shorter than recorded")
            remaining -= len(chunk)
            yield chunk

    # -- listing, deletion, statistics ----------------------------------------------------------------

    def _listing(self) -> Iterator[tuple[str, Any]]:
        prefix = self._list_prefix()
        for blob in self.container.list_blobs(name_starts_with=prefix):
            name = blob.name[len(prefix) :]
            if name and "/" not in name:  # anything deeper is not ours (uploads in flight live there)
                yield name, blob

    def delete(self, name: str) -> None:
        blob = self._blob(name)
        try:
            blob.delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            if exc.error_code != "LeaseIdMissing":
                raise
            # A sealed blob (a direct upload): our lease id deletes it.
            with contextlib.suppress(ResourceNotFoundError):
                blob.delete_blob(delete_snapshots="include", lease=self._lease_id(name))

    def names(self) -> list[str]:
        return [n for n, _ in self._listing()]

    def names_with_age(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for name, blob in self._listing():
            yield name, now - blob.last_modified.timestamp()

    def stats(self) -> BlobStats:
        count = total = 0
        for _, blob in self._listing():
            count += 1
            total += int(blob.size)
        return BlobStats(count, total)
