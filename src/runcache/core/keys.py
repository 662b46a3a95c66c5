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


# --- column limits ----------------------------------------------------------------------------------
# The metadata columns' sizes (store/models.py). SQLite ignores them, PostgreSQL raises DataError (a 500)
# for a longer value, so every value is checked here first and an oversize one is the caller's error.
MAX_REPOSITORY_LENGTH = 256
MAX_SCOPE_LENGTH = 512
MAX_VERSION_LENGTH = 512
MAX_NODE_LENGTH = 128
MAX_OWNER_LENGTH = 64


def check_text(what: str, value: str, limit: int) -> str:
    """A value the database can store: at most `limit` characters, and text PostgreSQL accepts (no NUL,
    no lone surrogates from a JSON escape), so it fails here as a 4xx rather than in the driver."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string.")
    if len(value) > limit:
        raise InvalidRequest(f"{what} is longer than {limit} characters ({len(value)}).")
    if "\x00" in value:
        raise InvalidRequest(f"{what} must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid Unicode text.") from None
    return value


def check_repository(repository: str) -> str:
    # The folded name is stored too (repository_policies.repository_folded): lower() may lengthen it.
    check_text("Repository name", repository, MAX_REPOSITORY_LENGTH)
    check_text("Repository name", fold_repository(repository), MAX_REPOSITORY_LENGTH)
    return repository


def check_owner_name(owner: str) -> str:
    """A repository owner used as a filter (`owner/` prefix of repository names)."""
    return check_text("Owner name", owner, MAX_REPOSITORY_LENGTH)


def check_scope(scope: str) -> str:
    return check_text("Scope", scope, MAX_SCOPE_LENGTH)


def check_key_text(key: str, *, what: str = "Key") -> str:
    """A key or key prefix as stored and compared: the key and its folded form (key_folded) must fit;
    lower() can lengthen a key (`İ` becomes two characters)."""
    check_text(what, key, MAX_KEY_LENGTH)
    check_text(f"{what} (lower-cased)", fold(key), MAX_KEY_LENGTH)
    return key


def check_version_text(version: str) -> str:
    return check_text("Version", version, MAX_VERSION_LENGTH)


def check_node(node: str) -> str:
    return check_text("Node id", node, MAX_NODE_LENGTH)


def check_upload_owner(owner: str | None) -> str | None:
    """The id of the token that reserved an upload (its jti)."""
    return None if owner is None else check_text("Token id", owner, MAX_OWNER_LENGTH)
