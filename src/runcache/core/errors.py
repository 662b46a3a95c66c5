"""Domain errors raised by the cache rules; protocol handlers map them to wire errors."""

from __future__ import annotations


class CacheError(Exception):
    """Base class: every rule violation carries a message meant for the client's log."""


class InvalidRequest(CacheError):
    """The request itself is malformed (bad key, bad size, bad range)."""


class NotFound(CacheError):
    """An id, upload or entry that does not exist (or is not visible to the caller)."""


class AlreadyExists(CacheError):
    """(scope, key, version) is taken by a committed entry or an upload in progress."""


class ReadDenied(CacheError):
    """The caller's token grants no readable scope. Message starts with the client's stable prefix."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"cache read denied: {detail}")


class WriteDenied(CacheError):
    """The caller's token grants no writable scope. Message starts with the client's stable prefix."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"cache write denied: {detail}")


class Unauthenticated(CacheError):
    """No token, or a token that does not verify."""


class IncompleteUpload(CacheError):
    """Commit of an upload whose bytes do not cover exactly the declared size."""


class EntryTooLarge(InvalidRequest):
    """An upload larger than the entry size limit or the repository's storage limit."""


class StorageFull(CacheError):
    """The server's volume is at its free-space floor: no new bytes until space is freed."""


class TooManyUploads(CacheError):
    """The repository has as many uploads in flight as it may have."""


class UploadBusy(CacheError):
    """A commit while bytes are still arriving for the upload (the commit must wait for them)."""


class UploadElsewhere(CacheError):
    """Bytes or a commit for an upload staged on another replica (upload staging is per replica)."""
