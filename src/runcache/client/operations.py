"""`save` and `restore` with actions/cache semantics: the logic behind the CLI commands."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from runcache.client.archive import (
    READ_SIZE,
    ArchiveError,
    IterReader,
    compression_method,
    create_archive,
    open_decompressed,
)
from runcache.client.interrupt import Interrupted
from runcache.client.pipeline import StageError, background
from runcache.client.transfer import CacheClient, CacheServiceError
from runcache.core.errors import InvalidRequest
from runcache.core.keys import fold, validate_key, validate_lookup_keys
from runcache.core.version import cache_version

if TYPE_CHECKING:
    from types import ModuleType

    from runcache.client.extract import ExtractLimits

# The extractor (runcache.client.extract) and the path globbing (runcache.client.paths) are imported when
# they are first needed: a restore needs neither before its lookup, a miss or --lookup-only not at all, and
# a save never extracts.

Progress = Callable[[int], None]


@dataclass
class RestoreResult:
    primary_key: str
    matched_key: str = ""
    cache_hit: str = ""  # "true" exact hit, "false" restore-key/prefix hit, "" miss: the action's outputs
    restored: bool = False
    bytes: int = 0
    seconds: float = 0.0
    warning: str = ""
    unsafe: bool = False
    unwritable: bool = False  # the destination could not be written: a local problem, not a miss

    def outputs(self) -> dict[str, str]:
        out = {"cache-hit": self.cache_hit, "cache-primary-key": self.primary_key}
        if self.matched_key:
            out["cache-matched-key"] = self.matched_key
        return out

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "outputs": self.outputs()}


@dataclass
class SaveResult:
    key: str
    saved: bool = False
    bytes: int = 0
    seconds: float = 0.0
    warning: str = ""
    paths: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def path_lines(values: list[str]) -> list[str]:
    """The action's `path` input: one path per line, trimmed, blanks dropped, `! x` written `!x`."""
    lines: list[str] = []
    for value in values:
        for line in value.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("!"):
                line = "!" + line[1:].lstrip()
            lines.append(line)
    if not lines:
        raise InvalidRequest("Input required and not supplied: path")
    return lines


def key_lines(values: list[str]) -> list[str]:
    return [line.strip() for v in values for line in v.splitlines() if line.strip()]


def restore(
    client: CacheClient,
    *,
    paths: list[str],
    key: str,
    restore_keys: list[str],
    workspace: Path,
    lookup_only: bool = False,
    cross_os: bool = False,
    limits: ExtractLimits | None = None,
    progress: Progress | None = None,
    cwd: Path | None = None,
) -> RestoreResult:
    """`cwd` is where relative patterns resolve (the action's working directory); default the process's."""
    started = time.monotonic()
    lines = path_lines(paths)
    keys = validate_lookup_keys([key, *restore_keys])
    result = RestoreResult(primary_key=key)
    version = cache_version(lines, compression_method(), windows=os.name == "nt", cross_os=cross_os)
    extract: ModuleType | None = None  # set once loaded: until then none of its exceptions can be raised
    try:
        hit = client.lookup(keys, version)
        if hit is None:
            return result
        result.matched_key = hit.key
        exact = fold(hit.key) == fold(key)
        if lookup_only:
            result.cache_hit = "true" if exact else "false"
            return result
        download = client.open_download(hit.url)
        tar_stream = open_decompressed(IterReader(_counting(download, progress)))
        # Hashing and decompression run on their own thread (both release the GIL), extraction on this one.
        decompressed = background(_read_all(tar_stream), depth=16, name="decompress")
        from runcache.client import extract
        from runcache.client.paths import restore_roots

        extract.extract_tar_stream(
            IterReader(decompressed),
            workspace=workspace,
            allowed_roots=restore_roots(lines, cwd),
            limits=limits or extract.ExtractLimits(),
            before_commit=download.verify,
        )
        result.bytes = download.received
        result.restored = True
        result.cache_hit = "true" if exact else "false"
    except KeyboardInterrupt as exc:
        if result.restored or isinstance(exc, Interrupted):
            raise
        if extract is not None and isinstance(exc, extract.InterruptedAfterCommit):
            raise Interrupted(f"the restore of key {key} was stopped after its files were in place") from exc
        # The extraction is all-or-nothing: stopped before its final renames, it undid everything.
        raise Interrupted(f"the restore of key {key} was stopped; nothing was changed") from exc
    except _refusals(extract) as exc:
        assert extract is not None
        result.matched_key = ""
        result.unsafe = isinstance(exc, extract.UnsafeArchiveError)
        result.warning = f"Failed to restore: {exc}"
    except (CacheServiceError, ArchiveError, StageError) as exc:
        result.matched_key = ""
        result.warning = f"Failed to restore: {exc}"
    except OSError as exc:
        result.matched_key = ""
        result.unwritable = True
        result.warning = f"Failed to restore: {_unwritable(exc)}; nothing was changed"
    finally:
        result.seconds = time.monotonic() - started
    return result


def _refusals(extract: ModuleType | None) -> tuple[type[Exception], ...]:
    """The extractor's refusals of an archive; none before it is loaded (an empty tuple matches nothing)."""
    return () if extract is None else (extract.UnsafeArchiveError, extract.CorruptArchiveError)


def _unwritable(exc: OSError) -> str:
    """The destination's problem in words (a bare `[Errno 30]` tells a user nothing)."""
    where = f" {exc.filename}" if exc.filename else ""
    reasons = {
        errno.EROFS: "is on a read-only file system",
        errno.EACCES: "is not writable by this user",
        errno.EPERM: "is not writable by this user",
        errno.EXDEV: "is on another file system than its parent (a mount point inside a cache path)",
        errno.ENOSPC: "is on a full disk",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot write{where}: it {reason}" if where else f"cannot write the restored files: {reason}"


def _read_all(stream: BinaryIO) -> Iterator[bytes]:
    while block := stream.read(READ_SIZE):
        yield block


def _counting(download, progress: Progress | None):
    for chunk in download:
        if progress:
            progress(len(chunk))
        yield chunk


def save(
    client: CacheClient,
    *,
    paths: list[str],
    key: str,
    workspace: Path,
    cross_os: bool = False,
    progress: Progress | None = None,
    cwd: Path | None = None,
) -> SaveResult:
    started = time.monotonic()
    lines = path_lines(paths)
    validate_key(key)
    result = SaveResult(key=key)
    from runcache.client.paths import resolve_cache_paths

    members = resolve_cache_paths(lines, workspace, cwd)
    result.paths = members
    if not members:
        result.warning = (
            "Path Validation Error: Path(s) specified in the action for caching do(es) not exist, "
            "hence no cache is being saved."
        )
        return result
    compression = compression_method()
    version = cache_version(lines, compression, windows=os.name == "nt", cross_os=cross_os)
    stream = create_archive(workspace, members, compression)
    try:
        result.bytes = client.save(key, version, stream, progress)
        result.saved = True
    except (CacheServiceError, ArchiveError, OSError) as exc:
        result.warning = f"Failed to save: {exc}"
    finally:
        # Stopped early (Ctrl-C, a failed upload), the archiver must not keep tar running until exit.
        stream.close()
        result.seconds = time.monotonic() - started
    return result
