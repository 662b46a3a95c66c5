"""Which blob store a server uses: `Settings.blobs` (`--blobs`), by default the local disk store."""

from __future__ import annotations

from pathlib import Path

from runcache.config import Settings
from runcache.store.blobs import BlobStore
from runcache.store.disk import DiskBlobStore


def blob_store_for(settings: Settings) -> BlobStore:
    """Empty: `<data-dir>/blobs` on local disk. `s3://bucket/prefix`: an S3-compatible bucket, checked
    at start-up so a wrong endpoint, bucket or credential stops the server rather than the first save.
    Anything else is a local directory."""
    spec = settings.blobs.strip()
    if not spec:
        return DiskBlobStore(settings.data_dir / "blobs")
    if spec.startswith("s3://"):
        from runcache.store.s3 import S3BlobStore  # boto3 loads only for servers that use it

        store = S3BlobStore.from_url(spec)
        store.check()
        return store
    if "://" in spec:
        raise ValueError(f"--blobs must be a directory or s3://bucket/prefix, got {spec!r}")
    return DiskBlobStore(Path(spec).expanduser())
