"""Blob store on an S3-compatible object store: blob `name` is the object `<prefix>/<name>` in one bucket.

Configured by `--blobs s3://bucket/prefix`; the endpoint, region and credentials come from the environment
the way every boto3 program reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION or
AWS_REGION, AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3), plus RUNCACHE_S3_ENDPOINT for a runcache-only
endpoint, and RUNCACHE_S3_PUBLIC_ENDPOINT for the address runners use in presigned download URLs when it
is not the one the server uses (an internal name, a private network). The client is boto3's synchronous
one: the service calls the store from worker threads, and `open_range`, the one call made on the event
loop, moves each blocking read to a thread.

Integrity: every object carries its SHA-256 as metadata `sha256`. A small blob goes up in one PUT whose
ChecksumSHA256 is the expected digest, so the server itself refuses bytes that do not match; a large one
goes up as a multipart upload in which each part carries its own ChecksumSHA256 (the server checks what
it received) while we hash the whole stream and abort, before completing, if it differs from the
expected digest (S3 offers SHA-256 only per part for multipart objects, never over the whole object).

No overwrite: writes are conditional (If-None-Match: *), which S3, MinIO, SeaweedFS and others honour. A
server that answers 501 NotImplemented to the condition makes the store fall back, for its lifetime, to a
HEAD before the write; then two writers of one name in the same instant could both pass the HEAD and the
later write would win. runcache names blobs by entry id under an exclusive commit claim, so that window
only matters to a second runcache pointed at the same bucket and prefix with another database.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from runcache.store.blobs import BlobMissing, BlobStats
from runcache.store.parts import ObjectBlobStore, fixed_parts, send_parts

MIB = 1024 * 1024
# S3's floor for every part but the last, and its ceiling on the number of parts.
MIN_PART = 5 * MIB
MAX_PARTS = 10_000
# Blobs up to one part go up in a single PUT; larger ones in parts of this size (memory: one part).
DEFAULT_PART = 8 * MIB
_READ = MIB
# SigV4's ceiling on a presigned URL's lifetime (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in _MISSING or status == 404


def _exists_error(exc: ClientError) -> bool:
    # 412 is the answer to If-None-Match: *; 409 is what some servers send for a concurrent conditional write.
    return _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


# Answers of a server with no room for the bytes. HTTP 507 means exactly that, whatever the code (MinIO's
# XMinioStorageFull at its free-space floor); the codes are what servers send for it, some with another
# status: a full volume (InsufficientStorage), an exhausted bucket or user quota (Ceph RGW's QuotaExceeded
# is a 403, MinIO's XMinioAdminBucketQuotaExceeded a 400). SeaweedFS with no free volume left answers a
# bare 500 InternalError ("please try again"), indistinguishable from any other failure: it stays one.
_FULL_CODES = {"InsufficientStorage", "XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded"}


def out_of_space(exc: BaseException) -> str | None:
    """The S3 server's answer when it means "no space for these bytes" (parts.full_store), else None."""
    if not isinstance(exc, ClientError):
        return None
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status == 507 or _code(exc) in _FULL_CODES:
        return f"{_code(exc) or 'error'} (HTTP {status})"
    return None


def _not_implemented(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) == "NotImplemented" or status == 501


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def make_client(env: dict[str, str] | None = None, *, checksums: bool = True) -> Any:
    """A boto3 S3 client as boto3 configures itself from the environment, with RUNCACHE_S3_* on top."""
    env = dict(os.environ if env is None else env)
    options: dict[str, Any] = {
        # Parallel HEADs and concurrent downloads each hold a connection.
        "max_pool_connections": 32,
        "retries": {"mode": "standard", "max_attempts": 5},
        # Presigned URLs in SigV4 (expiry bound into the signature; the only kind most servers accept).
        "signature_version": "s3v4",
    }
    style = env.get("RUNCACHE_S3_ADDRESSING_STYLE", "")
    if style:
        options["s3"] = {"addressing_style": style}
    if not checksums:
        # Servers without the flexible-checksum headers reject botocore's default CRC32 on every write.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    kwargs: dict[str, Any] = {"config": Config(**options)}
    # Taken from `env` explicitly (the same variables boto3 reads from the process environment), so a
    # caller's env is obeyed; profiles, instance roles and web identity stay boto3's own chain.
    endpoint = env.get("RUNCACHE_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")  # botocore reads only the first
    if region:
        kwargs["region_name"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        kwargs["aws_secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        kwargs["aws_session_token"] = env.get("AWS_SESSION_TOKEN") or None
    return boto3.session.Session().client("s3", **kwargs)


class S3BlobStore(ObjectBlobStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        part_size: int = DEFAULT_PART,
        checksums: bool = True,
        concurrency: int = 4,
        presigner: Any = None,
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"S3 parts must be at least {MIN_PART} bytes, got {part_size}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else make_client(checksums=checksums)
        self.part_size = part_size
        self.checksums = checksums
        self.concurrency = max(1, concurrency)
        self.conditional = True  # turned off for good if the server answers If-None-Match with 501
        # Presigning is local computation; a client of its own only when runners reach another endpoint.
        self.presigner = presigner if presigner is not None else self.client

    @classmethod
    def from_url(cls, url: str, env: dict[str, str] | None = None) -> S3BlobStore:
        """`s3://bucket/prefix`. RUNCACHE_S3_CHECKSUMS=0 leaves out SHA-256 checksum headers, for servers
        that do not know them (the digest is still kept as metadata and checked while uploading)."""
        env = dict(os.environ if env is None else env)
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"blob store URL must look like s3://bucket/prefix, got {url!r}")
        checksums = env.get("RUNCACHE_S3_CHECKSUMS", "1").lower() not in ("0", "false", "no", "off")
        public = env.get("RUNCACHE_S3_PUBLIC_ENDPOINT", "").strip()
        presigner = make_client({**env, "RUNCACHE_S3_ENDPOINT": public}, checksums=checksums) if public else None
        client = make_client(env, checksums=checksums)
        return cls(parts.netloc, parts.path, client=client, checksums=checksums, presigner=presigner)

    def check(self) -> None:
        """Fail at start-up, in one line, when the bucket cannot be reached, rather than at the first save."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise ValueError(
                f"S3 bucket {self.bucket!r} at {self.client.meta.endpoint_url}: {_code(exc) or exc}"
            ) from exc

    def key(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid blob name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    # -- writes ---------------------------------------------------------------------------------------

    out_of_space = staticmethod(out_of_space)

    def _put_stream(self, name: str, chunks: Iterable[bytes], *, size: int, sha256: str | None) -> str:
        key = self.key(name)
        # Also with conditional writes: refuse before sending gigabytes, not at the final request.
        if self.contains(name):
            raise FileExistsError(f"blob {key} already exists in bucket {self.bucket}")
        # Within S3's 10,000 parts for any size (10 GB at 8 MiB is 1,280 parts).
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        if size <= part_size:
            return self._put_single(key, chunks, size, sha256)
        return self._put_multipart(key, chunks, size, sha256, part_size)

    def _put_single(self, key: str, chunks: Iterable[bytes], size: int, sha256: str | None) -> str:
        body = b"".join(fixed_parts(chunks, max(size, 1) + 1))  # at most one part's worth (+1: see a longer source)
        actual = hashlib.sha256(body).hexdigest()
        if len(body) != size or (sha256 is not None and actual != sha256):
            raise ValueError(f"{key}: staged bytes ({len(body)}) do not match size {size} and SHA-256 {sha256}")
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "Metadata": {"sha256": actual}}
        if self.checksums:
            args["ChecksumSHA256"] = _b64(bytes.fromhex(actual))  # the server checks the digest
        self._conditional_write(key, self.client.put_object, args)
        return actual

    def _put_multipart(self, key: str, chunks: Iterable[bytes], size: int, sha256: str | None, part_size: int) -> str:
        # The object's `sha256` metadata is set at creation: only when the digest is known in advance.
        create: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Metadata": {"sha256": sha256} if sha256 else {}}
        if self.checksums:
            create["ChecksumAlgorithm"] = "SHA256"
        upload_id = self.client.create_multipart_upload(**create)["UploadId"]
        try:
            sent = send_parts(
                chunks, part_size, lambda n, part: self._upload_part(key, upload_id, n + 1, part), self.concurrency
            )
            if sent.size != size or (sha256 is not None and sent.sha256 != sha256):
                raise ValueError(f"{key}: staged bytes ({sent.size}) do not match size {size} and SHA-256 {sha256}")
            parts = {"Parts": sent.results}
            complete = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "MultipartUpload": parts}
            self._conditional_write(key, self.client.complete_multipart_upload, complete)
            return sent.sha256
        except BaseException:
            # Uncompleted parts cost storage until aborted (see docs/deployment.md for the lifecycle rule
            # that catches what a crash leaves).
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _upload_part(self, key: str, upload_id: str, number: int, chunk: bytes) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number}
        part: dict[str, Any] = {"PartNumber": number}
        if self.checksums:
            # The server refuses a part whose bytes do not hash to this (BadDigest).
            args["ChecksumSHA256"] = part["ChecksumSHA256"] = _b64(hashlib.sha256(chunk).digest())
        part["ETag"] = self.client.upload_part(**args, Body=chunk)["ETag"]
        return part

    def _conditional_write(self, key: str, call: Any, args: dict[str, Any]) -> None:
        if self.conditional:
            try:
                call(**args, IfNoneMatch="*")
                return
            except ClientError as exc:
                if _exists_error(exc):
                    raise FileExistsError(f"blob {key} already exists in bucket {self.bucket}") from exc
                if not _not_implemented(exc):
                    raise
            # The server does not do conditional writes: HEAD-then-write from now on (module docstring).
            self.conditional = False
        if self._head(key) is not None:
            raise FileExistsError(f"blob {key} already exists in bucket {self.bucket}")
        call(**args)

    # -- reads ----------------------------------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def size(self, name: str) -> int | None:
        head = self._head(self.key(name))
        return None if head is None else int(head["ContentLength"])

    def download_url(self, name: str, ttl: int) -> str | None:
        if not 1 <= ttl <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"a presigned URL lives 1 to {MAX_PRESIGN_SECONDS} seconds, not {ttl}")
        # GET only: the signature covers the method, the key and the expiry, so the URL can neither
        # write nor read another object, and it stops working after `ttl` seconds.
        return self.presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(name)}, ExpiresIn=ttl
        )

    def contains(self, name: str) -> bool:
        return self._head(self.key(name)) is not None

    async def open_range(self, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) streamed from one ranged GET, a MiB per read, each read in a worker thread."""
        key = self.key(name)
        if start >= end:
            if not await anyio.to_thread.run_sync(self.contains, name):
                raise BlobMissing(name)
            return
        try:
            resp = await anyio.to_thread.run_sync(
                lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            )
        except ClientError as exc:
            if _missing(exc):
                raise BlobMissing(name) from exc
            raise
        body = resp["Body"]
        try:
            remaining = end - start
            while remaining:
                chunk = await anyio.to_thread.run_sync(body.read, min(_READ, remaining))
                if not chunk:
                    raise BlobMissing(f"{name}: object is shorter than recorded")
                remaining -= len(chunk)
                yield chunk
        finally:
            # An unfinished body would otherwise keep its connection out of the pool until collected.
            body.close()

    # -- listing, deletion, statistics ----------------------------------------------------------------

    def _listing(self) -> Iterator[tuple[str, dict[str, Any]]]:
        prefix = self._list_prefix()
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if name and "/" not in name:  # anything deeper is not ours
                    yield name, obj

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if not _missing(exc):
                raise

    def names(self) -> list[str]:
        return [n for n, _ in self._listing()]

    def names_with_age(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for name, obj in self._listing():
            yield name, now - obj["LastModified"].timestamp()

    def stats(self) -> BlobStats:
        count = total = 0
        for _, obj in self._listing():
            count += 1
            total += int(obj["Size"])
        return BlobStats(count, total)
