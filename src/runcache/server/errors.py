"""Mapping of domain errors to each protocol's status codes and body shapes."""

from __future__ import annotations

from runcache.core.errors import (
    AlreadyExists,
    CacheError,
    EntryTooLarge,
    IncompleteUpload,
    InvalidRequest,
    NotFound,
    ReadDenied,
    StorageFull,
    TooManyUploads,
    Unauthenticated,
    UploadBusy,
    UploadElsewhere,
    WriteDenied,
)

# (HTTP status, twirp code, Azure error code)
_TABLE: list[tuple[type[CacheError], int, str, str]] = [
    (Unauthenticated, 401, "unauthenticated", "AuthenticationFailed"),
    (ReadDenied, 403, "permission_denied", "AuthorizationPermissionMismatch"),
    (WriteDenied, 403, "permission_denied", "AuthorizationPermissionMismatch"),
    (NotFound, 404, "not_found", "BlobNotFound"),
    (AlreadyExists, 409, "already_exists", "BlobAlreadyExists"),
    (UploadBusy, 409, "failed_precondition", "ConditionNotMet"),
    (UploadElsewhere, 409, "failed_precondition", "ConditionNotMet"),
    # Azure has no code for a full store (a real account does not fill up); the 507 reason phrase says it.
    (StorageFull, 507, "resource_exhausted", "InsufficientStorage"),
    (TooManyUploads, 429, "resource_exhausted", "ServerBusy"),
    (EntryTooLarge, 413, "invalid_argument", "RequestBodyTooLarge"),
    (IncompleteUpload, 400, "failed_precondition", "InvalidBlobOrBlock"),
    (InvalidRequest, 400, "invalid_argument", "InvalidInput"),
]


def classify(exc: CacheError) -> tuple[int, str, str]:
    for cls, status, twirp, azure in _TABLE:
        if isinstance(exc, cls):
            return status, twirp, azure
    return 500, "internal", "InternalError"
