"""Key rules shared by every protocol: what a valid key is and how keys compare."""

from __future__ import annotations

from collections.abc import Sequence

from runcache.core.errors import InvalidRequest

MAX_KEY_LENGTH = 512
MAX_KEYS_PER_LOOKUP = 10
_VERSION_HEX_LENGTH = 64


def validate_key(key: str) -> str:
    """Reject keys the real client would reject, with the client's own wording."""
    if not isinstance(key, str) or key == "":
        raise InvalidRequest("Key Validation Error: a key is required.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"Key Validation Error: {key} cannot be larger than {MAX_KEY_LENGTH} characters.")
    if "," in key:
        raise InvalidRequest(f"Key Validation Error: {key} cannot contain commas.")
    return key


def validate_lookup_keys(keys: Sequence[str]) -> list[str]:
    """Primary key first, then restore keys; at most ten in all."""
    keys = [k for k in keys]
    if not keys:
        raise InvalidRequest("Key Validation Error: at least one key is required.")
    if len(keys) > MAX_KEYS_PER_LOOKUP:
        raise InvalidRequest(f"Key Validation Error: Keys are limited to a maximum of {MAX_KEYS_PER_LOOKUP}.")
    return [validate_key(k) for k in keys]


def validate_version(version: str) -> str:
    """The version is opaque to the server but must be present; the client always sends 64 hex chars."""
    if not isinstance(version, str) or not version:
        raise InvalidRequest("Version Validation Error: a cache version is required.")
    if len(version) > 512:
        raise InvalidRequest("Version Validation Error: version is too long.")
    return version


def fold(key: str) -> str:
    """Keys match case-insensitively (GitHub's service does); the stored case is what is returned."""
    return key.lower()


def fold_repository(name: str) -> str:
    """Repository and owner names compare case-insensitively, as on GitHub (`Octo/App` is `octo/app`).

    ASCII lower-casing on purpose: the database's lower() must agree with it, and GitHub names are ASCII."""
    return name.lower()


def key_matches_prefix(stored_key: str, prefix: str) -> bool:
    return fold(stored_key).startswith(fold(prefix))
