"""Which stores a server uses: blobs from `Settings.blobs` (`--blobs`), uploads in flight from
`Settings.uploads` (`--uploads`); by default both on the local disk."""

from __future__ import annotations

from pathlib import Path

from runcache.config import Settings
from runcache.store.blobs import BlobStore
from runcache.store.disk import DiskBlobStore
from runcache.store.staging import Staging
from runcache.store.uploads import UploadStore

UPLOAD_PLACES = ("auto", "local")


def blob_store_for(settings: Settings) -> BlobStore:
    """Empty: `<data-dir>/blobs` on local disk. `s3://bucket/prefix`: an S3-compatible bucket;
    `azure://container/prefix`: an Azure Blob Storage container; both checked at start-up so a wrong
    endpoint, bucket, container or credential stops the server rather than the first save. Anything else
    is a local directory."""
    spec = settings.blobs.strip()
    if not spec:
        return DiskBlobStore(settings.data_dir / "blobs")
    if spec.startswith("s3://"):
        from runcache.store.s3 import S3BlobStore  # boto3 loads only for servers that use it

        store = S3BlobStore.from_url(spec)
        store.check()
        return store
    if spec.startswith("azure://"):
        from runcache.store.azure import AzureBlobStore  # the Azure SDK loads only for servers that use it

        azure = AzureBlobStore.from_url(spec)
        azure.check()
        return azure
    if "://" in spec:
        raise ValueError(f"--blobs must be a directory, s3://bucket/prefix or azure://container/prefix, got {spec!r}")
    return DiskBlobStore(Path(spec).expanduser())


def upload_store_for(settings: Settings, blobs: BlobStore) -> UploadStore:
    """`auto`: in the object store (S3 bucket, Azure container) when the blobs are there (every replica
    sees every upload, so a load balancer needs no stickiness), else `<data-dir>/uploads`. `local`:
    always `<data-dir>/uploads` (then a job's calls must reach the replica that reserved its upload)."""
    place = settings.uploads.strip().lower() or "auto"
    if place not in UPLOAD_PLACES:
        raise ValueError(f"--uploads must be one of {', '.join(UPLOAD_PLACES)}, got {settings.uploads!r}")
    if place == "auto" and settings.blobs.strip().startswith("s3://"):
        from runcache.store.s3 import S3BlobStore
        from runcache.store.s3uploads import S3UploadStore

        assert isinstance(blobs, S3BlobStore)
        return S3UploadStore(blobs.bucket, blobs.prefix, client=blobs.client, checksums=blobs.checksums)
    if place == "auto" and settings.blobs.strip().startswith("azure://"):
        from runcache.store.azure import AzureBlobStore
        from runcache.store.azureuploads import AzureUploadStore

        assert isinstance(blobs, AzureBlobStore)
        return AzureUploadStore(blobs)
    return Staging(settings.data_dir / "uploads")
