"""``runcache hash-files``: the runner's ``hashFiles()`` evaluated natively (the I/O part).

The rules (pattern parsing, matching, how digests combine) live in
:mod:`runcache.core.hashfiles`; this module walks the workspace in the runner's order
and hashes the selected files on a thread pool.

Order is what decides the hash, so the walk mirrors @actions/glob's globGenerator: the
search roots one after another, each walked depth-first pre-order with a directory's
entries sorted by their raw bytes (libuv's scandir uses strcmp), pruning entries that no
pattern could match below. Hashing may then run in any order because each file's digest
goes into its own slot and the slots are combined in walk order.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import posixpath
import pwd
import stat
import threading
from collections.abc import Iterator, Sequence
from typing import TypeAlias

from runcache.core.hashfiles import (
    FILE_MATCH,
    GlobPlan,
    HashFilesError,
    Segments,
    combine_digests,
    directory_base,
    from_js,
    is_lossy_in_js,
    needs_js_conversion,
    parse_hashfiles_args,
    to_js,
)

__all__ = ["HashFilesError", "hash_files", "homedir_js", "list_hashed_files", "sorted_entries"]

# One read buffer per worker: os.read(fd, big) would malloc (and for 1 MiB, mmap) a
# fresh buffer for every small file; readv into a reused one avoids that.
_BLOCK_SIZE = 1 << 20
# Files a worker takes at a time: small enough to balance a few huge files, large enough
# that taking them costs little next to hashing them.
_CHUNK = 16
_MAX_WORKERS = 8

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


# What the walk hands to the hashers: (path, needs_stat). needs_stat is True when the walk
# did not already establish that the path is a regular file: a symlink seen without
# following (the runner's statSync follows it, skips it if it is a directory and fails if
# it dangles) or a special file. Plain tuples: a dataclass costs ~1 us per file here.
_Candidate: TypeAlias = tuple[str, bool]


def homedir_js() -> str:
    # node's os.homedir(): $HOME when set, even if empty (which then fails), else passwd.
    home = os.environ.get("HOME")
    if home is None:
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            home = ""
    return to_js(home)


def _resolve_workspace(workspace: str | os.PathLike[str] | None) -> str:
    if workspace is None:
        # Inside a workflow the runner hashes relative to github.workspace, whatever the
        # step's working-directory is.
        workspace = os.environ.get("GITHUB_WORKSPACE") or os.getcwd()
    # node runs with cwd = workspace and reads process.cwd(), which getcwd resolves.
    real = os.path.realpath(os.fspath(workspace))
    if not os.path.isdir(real):
        raise HashFilesError(f"Workspace '{workspace}' is not a directory")
    return real


def _join(base: str, name: str) -> str:
    return "/" + name if base == "/" else base + "/" + name


def sorted_entries(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = list(it)
    # strcmp order. For ASCII the str order is the same and much cheaper; code point order
    # also equals UTF-8 byte order, except for surrogate-escaped (invalid UTF-8) bytes.
    if "".join([e.name for e in entries]).isascii():
        entries.sort(key=lambda e: e.name)
    else:
        entries.sort(key=lambda e: os.fsencode(e.name))
    return entries


def _walk(plan: GlobPlan, workspace: str, follow: bool) -> Iterator[_Candidate]:
    """The files hashFiles() would hash, in its order (symlinked directories not yet dropped)."""
    ws_prefix = workspace + "/"  # the runner's startsWith(`${workspace}${path.sep}`)

    def may_hold_workspace_files(norm: str) -> bool:
        # Files outside the workspace are skipped unread, so a directory that is neither
        # inside nor above the workspace cannot contribute. The runner still walks it (and
        # would fail on, say, an unreadable directory there); we do not.
        return norm == workspace or norm.startswith(ws_prefix) or workspace.startswith(norm + "/") or norm == "/"

    # All search roots are checked before any is walked, as globGenerator does; a missing
    # one is skipped, any other lstat error fails.
    roots: list[tuple[str, str]] = []
    for search_path in plan.search_paths:
        path = from_js(search_path)
        try:
            os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HashFilesError(f"Cannot access search path '{path}': {exc}") from exc
        roots.append((search_path, path))

    match = plan.match
    partial_match = plan.partial_match
    for search_path, root_path in roots:
        # Stack items: (path, JS segments, DirEntry or None for the root, parent's real
        # path, real paths of the ancestor directories) - the last two only when following.
        stack: list[tuple[str, Segments, os.DirEntry[str] | None, str, tuple[str, ...]]] = [
            (root_path, tuple(search_path.split("/")), None, "", ())
        ]
        pop = stack.pop
        push = stack.append
        while stack:
            path, segs, entry, parent_real, chain = pop()
            kind = match(segs)
            if not kind and not partial_match(segs):
                continue

            real = ""
            try:
                if entry is None:
                    mode = os.lstat(path).st_mode
                    if follow:
                        try:
                            mode = os.stat(path).st_mode
                        except FileNotFoundError:
                            continue  # omitBrokenSymbolicLinks
                    is_dir = stat.S_ISDIR(mode)
                    is_regular = stat.S_ISREG(mode)
                    if follow and is_dir:
                        real = os.path.realpath(path)
                else:
                    if is_lossy_in_js(entry.name):
                        if follow:
                            continue
                        raise HashFilesError(f"ENOENT: no such file or directory, lstat '{path}' (name is not UTF-8)")
                    if follow and entry.is_symlink():
                        try:
                            mode = os.stat(path).st_mode
                        except FileNotFoundError:
                            continue  # omitBrokenSymbolicLinks
                        is_dir = stat.S_ISDIR(mode)
                        is_regular = stat.S_ISREG(mode)
                        if is_dir:
                            real = os.path.realpath(path)
                    else:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        is_regular = not is_dir and entry.is_file(follow_symlinks=False)
                        if follow and is_dir:
                            real = _join(parent_real, entry.name)
            except OSError as exc:
                raise HashFilesError(f"Cannot stat '{path}': {exc}") from exc

            if is_dir:
                if follow:
                    if real in chain:
                        continue  # symlink cycle: neither yielded nor descended
                    chain = (*chain, real)
                norm = path if entry is not None else posixpath.normpath(path)
                if not may_hold_workspace_files(norm):
                    continue
                try:
                    entries = sorted_entries(path)
                except OSError as exc:
                    raise HashFilesError(f"Cannot read directory '{path}': {exc}") from exc
                base = directory_base(segs)
                prefix = "/" if norm == "/" else norm + "/"
                for child in reversed(entries):
                    name = child.name
                    name_js = to_js(name) if needs_js_conversion(name) else name
                    push((prefix + name, (*base, name_js), child, real, chain))
            elif kind & FILE_MATCH and path.startswith(ws_prefix):
                yield (path, not is_regular)


def _digest(path: str, needs_stat: bool, buf: bytearray, view: memoryview) -> bytes | None:
    """sha256 of one file's content, or None for a directory reached through a symlink."""
    try:
        if needs_stat:
            mode = os.stat(path).st_mode
            if stat.S_ISDIR(mode):
                return None
            if not stat.S_ISREG(mode):
                # The runner would read it: a socket fails, a FIFO blocks until its 120 s
                # timeout, a device may never end. Fail instead of hanging.
                raise HashFilesError(f"'{path}' is not a regular file")
        fd = os.open(path, _OPEN_FLAGS)
        try:
            h = hashlib.sha256()
            while n := os.readv(fd, (buf,)):
                h.update(view[:n])
        finally:
            os.close(fd)
    except OSError as exc:
        raise HashFilesError(f"Cannot hash '{path}': {exc}") from exc
    return h.digest()


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    # Measured on a warm cache: one thread per core is best; more threads only trade the
    # GIL back and forth over the per-file Python work. Two at least, so reading one file
    # overlaps hashing another even on one core.
    return max(2, min(_MAX_WORKERS, cpus))


def _digest_all(candidates: Sequence[_Candidate], workers: int | None = None) -> list[bytes | None]:
    """Digests in candidate order, computed on ``workers`` threads.

    The walk is finished first on purpose: run alongside the hashers, its pure-Python
    loop holds the GIL and the hashers queue behind it for whole switch intervals, which
    measured slower than walking and then hashing.
    """
    total = len(candidates)
    results: list[bytes | None] = [None] * total
    if workers is None:
        workers = _default_workers()
    if total <= _CHUNK or workers <= 1:
        buf = bytearray(_BLOCK_SIZE)
        view = memoryview(buf)
        for i, (path, needs_stat) in enumerate(candidates):
            results[i] = _digest(path, needs_stat, buf, view)
        return results

    chunks = itertools.count()  # next() on it is atomic under the GIL
    errors: list[BaseException] = []

    def worker() -> None:
        buf = bytearray(_BLOCK_SIZE)
        view = memoryview(buf)
        try:
            while not errors:
                start = next(chunks) * _CHUNK
                if start >= total:
                    return
                for i in range(start, min(start + _CHUNK, total)):
                    path, needs_stat = candidates[i]
                    results[i] = _digest(path, needs_stat, buf, view)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"hashfiles-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _plan(
    patterns: Sequence[str], workspace: str | os.PathLike[str] | None, follow: bool
) -> tuple[GlobPlan, str, bool]:
    invocation = parse_hashfiles_args([to_js(p) for p in patterns])
    ws = _resolve_workspace(workspace)
    plan = GlobPlan.create(invocation.patterns, cwd=to_js(ws), homedir=homedir_js)
    return plan, ws, follow or invocation.follow_symbolic_links


def hash_files(
    patterns: list[str],
    workspace: str | os.PathLike[str] | None = None,
    follow_symbolic_links: bool = False,
) -> str:
    """The value ``hashFiles(*patterns)`` has in a workflow step; ``''`` when nothing matches.

    ``patterns`` are the hashFiles() arguments as written, so the first one may be
    ``--follow-symbolic-links``; ``follow_symbolic_links=True`` has the same effect. Like
    the runner, symbolic links are *not* followed by default: a linked file is still
    hashed, a linked directory is not descended into, and a matched dangling link fails.
    ``workspace`` defaults to ``$GITHUB_WORKSPACE``, else the current directory.

    Raises :class:`HashFilesError` wherever the runner fails the step instead of
    returning a value (bad option, ``..`` in a pattern, a matched dangling link, I/O
    errors).
    """
    plan, ws, follow = _plan(patterns, workspace, follow_symbolic_links)
    digests = _digest_all(list(_walk(plan, ws, follow)))
    return combine_digests(d for d in digests if d is not None)


def list_hashed_files(
    patterns: list[str],
    workspace: str | os.PathLike[str] | None = None,
    follow_symbolic_links: bool = False,
) -> list[str]:
    """The files :func:`hash_files` hashes, in hash order, relative to the workspace."""
    plan, ws, follow = _plan(patterns, workspace, follow_symbolic_links)
    selected: list[str] = []
    for path, needs_stat in _walk(plan, ws, follow):
        if needs_stat:
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise HashFilesError(f"Cannot stat '{path}': {exc}") from exc
            if stat.S_ISDIR(mode):
                continue
        selected.append(path[len(ws) + 1 :])
    return selected
