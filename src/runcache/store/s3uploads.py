"""Uploads in flight kept in the S3 bucket beside the blobs (`--blobs s3://bucket/prefix`), so every
replica sees every upload. The layout and its rules are store/objectuploads.py's; here is how S3 holds
them: a body that outgrows one part goes up as a multipart upload (each part with its own ChecksumSHA256),
and an object appears only when its upload completes.

No replica holds state another needs: a replica killed mid-request loses that request's body only (its
unfinished multipart upload is aborted when the upload is discarded; a bucket lifecycle rule for
incomplete multipart uploads catches the rest, see docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from runcache.core.errors import InvalidRequest
from runcache.store.objectuploads import CHANGED_WHILE_COMMITTING, ObjectUploadStore, Piece, StoredObject
from runcache.store.s3 import DEFAULT_PART, MIN_PART, _b64, _missing, out_of_space

_READ = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


class _MultipartSink:
    """One body into one object: a single PUT, or a multipart upload once it outgrows a part."""

    def __init__(self, store: S3UploadStore, key: str) -> None:
        self._store = store
        self._key = key
        self._mpu: str | None = None
        self._parts: list[dict[str, Any]] = []

    def send(self, part: bytes) -> None:
        s3 = self._store
        if self._mpu is None:
            create = {"ChecksumAlgorithm": "SHA256"} if s3.checksums else {}
            self._mpu = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=self._key, **create)["UploadId"]
        number = len(self._parts) + 1
        args: dict[str, Any] = {"Bucket": s3.bucket, "Key": self._key, "UploadId": self._mpu, "PartNumber": number}
        listed: dict[str, Any] = {"PartNumber": number}
        if s3.checksums:
            args["ChecksumSHA256"] = listed["ChecksumSHA256"] = _b64(hashlib.sha256(part).digest())
        listed["ETag"] = s3.client.upload_part(**args, Body=part)["ETag"]
        self._parts.append(listed)

    def complete(self, tail: bytes) -> None:
        s3 = self._store
        if self._mpu is None:
            s3.client.put_object(Bucket=s3.bucket, Key=self._key, Body=tail)
            return
        if tail:
            self.send(tail)
        s3.client.complete_multipart_upload(
            Bucket=s3.bucket, Key=self._key, UploadId=self._mpu, MultipartUpload={"Parts": self._parts}
        )
        self._mpu = None

    def abort(self) -> None:
        if self._mpu is not None:
            with contextlib.suppress(Exception):
                self._store.client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key, UploadId=self._mpu)
            self._mpu = None


class S3UploadStore(ObjectUploadStore):
    out_of_space = staticmethod(out_of_space)

    def __init__(
        self, bucket: str, prefix: str, *, client: Any, part_size: int = DEFAULT_PART, checksums: bool = True
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"S3 parts must be at least {MIN_PART} bytes, got {part_size}")
        super().__init__(prefix)
        self.bucket = bucket
        self.client = client
        self.part_size = part_size
        self.checksums = checksums

    def _list(self, prefix: str, *, in_flight: bool = False) -> Iterable[StoredObject]:
        # Bodies in flight are multipart uploads, which no object listing shows (see _in_flight).
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield StoredObject(obj["Key"], int(obj["Size"]), obj["ETag"], obj["LastModified"])

    def _put_small(self, upload_id: int, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(upload_id, name), Body=text.encode())

    def _get_small(self, upload_id: int, name: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(upload_id, name))["Body"]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        with contextlib.closing(body):
            return body.read(64 * 1024 * 1024).decode()

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def exists(self, upload_id: int) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(upload_id, "created"))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def _sink(self, key: str) -> _MultipartSink:
        return _MultipartSink(self, key)

    def _read_range(self, piece: Piece) -> Iterator[bytes]:
        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=piece.key, Range=f"bytes={piece.start}-{piece.end - 1}", IfMatch=piece.etag
            )["Body"]
        except ClientError as exc:
            raise InvalidRequest(CHANGED_WHILE_COMMITTING) from exc
        with contextlib.closing(body):
            remaining = piece.end - piece.start
            while remaining and (chunk := body.read(min(_READ, remaining))):
                remaining -= len(chunk)
                yield chunk

    def _multipart_uploads(self, upload_id: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.key(upload_id, "")
        )
        for page in pages:
            found.extend(page.get("Uploads", []))
        return found

    def _in_flight(self, upload_id: int) -> tuple[int, datetime | None]:
        received, newest = 0, None
        for mpu in self._multipart_uploads(upload_id):
            newest = mpu["Initiated"] if newest is None else max(newest, mpu["Initiated"])
            parts = self.client.list_parts(Bucket=self.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
            for part in parts.get("Parts", []):
                received += int(part["Size"])
                newest = max(newest, part["LastModified"])
        return received, newest

    def _abort_in_flight(self, upload_id: int) -> None:
        for mpu in self._multipart_uploads(upload_id):
            with contextlib.suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=mpu["Key"], UploadId=mpu["UploadId"])
