"""Safe, all-or-nothing extraction of a cache archive (spec: security-and-neighbours.md §3.3-§3.5).

Why this is hand-written instead of `tarfile.extractall(filter="data")`:
- the data filter refuses absolute symlinks, so a real virtualenv (`.venv/bin/python -> /usr/bin/python3.11`)
  could never be restored, and it has no notion of "only below these declared paths" for `../` members that
  @actions/cache legitimately writes (`~/.cache/pip` stored as `../../.cache/pip/...`);
- it is not all-or-nothing: members before a bad one stay extracted, and it has no size or count limits;
- the 3.11 parser has known DoS bugs (CVE-2024-6232 header ReDoS, CVE-2025-8194 negative-offset loop), so
  the small header parser below reads only what GNU `tar --posix` and tarfile write (ustar + pax + GNU
  longname) and fails closed on everything else, in time linear in the input.

How a restore proceeds:
1. Every member name is mapped to `normpath(workspace / name)` (absolute names stay absolute) and must be one
   of `allowed_roots` or below one. A *directory* member that is an ancestor of a root is skipped silently.
2. Members are written into a private staging directory created inside the nearest existing directory at or
   above each root (so the final move is a rename on the same filesystem). Staging never contains a symlink
   while members are written: symlinks are recorded and created only once the whole stream has been read.
3. A member whose parent is a symlink member of this archive is redirected through it only if the link is
   relative and its resolution (component by component, `..` included, at most `max_link_depth` hops) stays
   inside the allowed roots; absolute links are leaves only. Everything else written beneath a link, or
   beneath a file, is refused (C3, C5).
4. After the end-of-archive marker, `before_commit()` runs (the caller's digest check); only then is the
   staged tree moved into place. The move is planned first (refusing, before anything moves, a destination
   symlink where the archive has a directory (C4), or a destination directory where it has a non-directory),
   then executed with renames through directory fds opened with O_NOFOLLOW: new subtrees are renamed whole,
   existing directories are merged into (their own mode and mtime are kept), existing files and symlinks are
   replaced by rename (never written through, so a hardlink or symlink in the destination is never followed).
   If a rename fails, the renames already done are undone from backups kept in staging.

Threads (why the guarantees above hold unchanged): every change to the staging *namespace* - creating a
file (O_EXCL), a directory, a hardlink, removing a duplicate, the deferred symlinks, the commit's renames -
happens on the calling thread, in archive order, exactly as a single-threaded extraction does it; every
check above is made there too. What runs on the writer threads is only the body and metadata of a regular
file the calling thread has just created: it hands over the open descriptor with the bytes, and the writer
writes them, sets mode and mtime, and closes it. A descriptor writes to its inode whatever happens to its
name later (a duplicate member unlinking it, a rename), so no writer can touch a path the calling thread
did not create for it, and none can follow a link. The calling thread waits for every writer before
anything reads file contents back (a hardlink copied across filesystems) and before `before_commit()`
and the commit, so nothing moves into place unfinished; on any failure or interruption the writers stop,
their descriptors are closed and staging is removed, as before. Meanwhile decompression (the caller's
stage), member parsing and the namespace work on this thread, and file bodies on the writers overlap.

Duplicate members (C12), one rule: the last member for a path wins. A directory over a directory merges
(the later mode/mtime win); any other combination removes what the earlier member left there (a file, a
pending symlink, or a directory with everything staged under it) before creating the new member.

Metadata (C8): regular files get `(mode & 0o755) | 0o600` (owner exec bits kept, setuid/setgid/sticky and
group/other write dropped), directories `(mode & 0o755) | 0o700`; uid/gid/uname/gname are ignored (files
belong to the restoring user, even as root); mtimes are kept with nanosecond pax precision, clamped to
[0, 2**33) seconds. Directories that already exist in the destination keep their own mode and mtime.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import queue
import shutil
import stat
import struct
import sys
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zlib import adler32

import zstandard

from runcache.client.interrupt import signals_held

__all__ = [
    "DEFAULT_LIMITS",
    "CorruptArchiveError",
    "ExtractLimits",
    "ExtractReport",
    "UnsafeArchiveError",
    "extract_tar_stream",
]


@dataclass(frozen=True)
class ExtractLimits:
    max_total_bytes: int = 64 * 2**30  # file bodies + extended-header payloads, as read from the stream
    max_members: int = 2_000_000
    max_path_length: int = 4096
    max_link_depth: int = 40


DEFAULT_LIMITS = ExtractLimits()


class UnsafeArchiveError(Exception):
    """Hostile or over-limit archive; the message names the member and the rule it broke."""


class CorruptArchiveError(Exception):
    """Truncated or malformed tar stream."""


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived during the commit or the removal of staging: both were let finish, so the
    destination is complete (never half-moved) and no staging is left; the interruption is raised after."""


@dataclass(frozen=True)
class ExtractReport:
    files: int
    dirs: int
    symlinks: int
    hardlinks: int
    bytes: int


_BLOCK = 512
_CHUNK = 1 << 20  # body reads and writes
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_META = 1 << 20  # one pax header's data
_MAX_META_RUN = 8  # pax/longname headers in front of one member
_PAX_KEYS = (b"path", b"linkpath", b"size", b"mtime")  # everything else (atime, uid, uname, xattrs) is ignored
_MAX_PENDING = 128 << 20  # path bytes remembered for deferred symlinks and directory metadata
_WALK_BUDGET = 32 << 20  # path components visited while resolving symlink members, over the whole archive
_MAX_CACHE = 10_000
_MAX_TRAILER = 16 << 20  # zero padding accepted after the end-of-archive marker
_MAX_NAME = 255  # one path component
_MTIME_MAX_NS = 2**33 * 10**9 - 1
# Bodies up to this size go to the writer threads; larger ones are streamed by the calling thread (they
# would otherwise sit whole in memory), which keeps the write large and sequential anyway.
_HANDOFF_MAX = 1 << 20
_BATCH_FILES = 32  # files per hand-over: one queue round trip for many small files
_BATCH_BYTES = 1 << 20
_INFLIGHT_BYTES = 32 << 20  # bodies handed over and not yet written: the memory the writers may hold
_INFLIGHT_FILES = 256  # open descriptors handed over and not yet closed (well below a 1024 fd limit)
_WRITER_JOIN_SECONDS = 30
DEFAULT_WRITERS = 4  # what measured fastest on 2 cores (bench/client.py); more only add switching
_WFLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DFLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_STREAM_ERRORS = (zstandard.ZstdError, zlib.error, EOFError, gzip.BadGzipFile)

_REG = (b"0", b"\x00")
_LINK_TYPES = (b"1", b"2")
_META_TYPES = (b"x", b"g", b"L", b"K")
_PAX_TYPES = (b"x", b"g")
_NO_MAGIC = bytes(8)
_MEMBER_TYPES = (b"0", b"\x00", b"5", b"1", b"2")
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_SIGNED = struct.Struct("148b8x356b")  # some old tars sum the header as signed chars
_USTAR = b"ustar\x0000"
_GNU = b"ustar  \x00"
_REFUSED_TYPES = {
    b"3": "character device",
    b"4": "block device",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"S": "GNU sparse file",
    b"D": "GNU dump directory",
    b"M": "multi-volume continuation",
    b"V": "volume label",
    b"N": "GNU old long name",
}


def extract_tar_stream(
    stream: BinaryIO,
    *,
    workspace: Path,
    allowed_roots: Sequence[Path],
    limits: ExtractLimits = DEFAULT_LIMITS,
    before_commit: Callable[[], None] | None = None,
    writers: int = DEFAULT_WRITERS,
) -> ExtractReport:
    """Extract the uncompressed tar `stream` (read once, sequentially) below `allowed_roots`, all or nothing.

    Raises UnsafeArchiveError / CorruptArchiveError (destination untouched), whatever `before_commit` raises
    (destination untouched), or OSError for environment failures (renames already done are rolled back).
    Errors of the caller's decompressor (zstd, zlib, gzip) are reported as CorruptArchiveError.
    `writers` threads write small files' bodies (0: everything on the calling thread).
    """
    ex = _Extractor(workspace, allowed_roots, limits, writers)
    committed = False
    try:
        try:
            ex.read_all(_Reader(stream))
            ex.finish_staging()
            if before_commit is not None:
                before_commit()
            with signals_held():
                try:
                    ex.commit()
                    committed = True
                finally:
                    ex.cleanup()
            return ex.report()
        finally:
            try:
                with signals_held():
                    ex.cleanup()
            finally:
                # Again: an interrupt can land on the way into the first, before it holds signals, and would
                # leave staging and the writers behind. A second cleanup has nothing left to do.
                with signals_held():
                    ex.cleanup()
    except KeyboardInterrupt as exc:
        if committed and not isinstance(exc, InterruptedAfterCommit):
            raise InterruptedAfterCommit(*exc.args) from exc
        raise


# ----------------------------------------------------------------------------------------------- stream reading


class _Reader:
    """Exact-size reads over a stream whose read(n) may return fewer bytes (zstd/gzip readers do)."""

    __slots__ = ("_buf", "_pos", "_read", "consumed")

    def __init__(self, stream: BinaryIO) -> None:
        self._read = stream.read
        self._buf = b""
        self._pos = 0
        self.consumed = 0

    def _pull(self, n: int) -> bytes:
        try:
            return self._read(n)
        except _STREAM_ERRORS as exc:
            raise CorruptArchiveError(f"decompression failed at offset {self.consumed}: {exc}") from exc

    def _span(self, n: int) -> bytes | None:
        """The next n bytes when they run past the buffer (None: the stream ended first).

        Only those n bytes are copied; the last chunk pulled becomes the buffer, read from where they end.
        (Joining the rest of the buffer with whole new chunks copied every byte of the stream once more.)
        """
        parts: list[bytes | memoryview] = [memoryview(self._buf)[self._pos :]]
        have = len(self._buf) - self._pos
        while have < n:
            chunk = self._pull(_CHUNK)
            if not chunk:
                return None
            parts.append(chunk)
            have += len(chunk)
        last = parts[-1]
        used = len(last) - (have - n)
        parts[-1] = memoryview(last)[:used]
        self._buf, self._pos = bytes(last), used
        self.consumed += n
        return b"".join(parts)

    def block(self) -> bytes:
        """The next 512-byte block, or b"" at a clean end of stream."""
        p = self._pos
        if len(self._buf) - p >= _BLOCK:
            self._pos = p + _BLOCK
            self.consumed += _BLOCK
            return self._buf[p : p + _BLOCK]
        left = len(self._buf) - p
        data = self._span(_BLOCK)
        if data is None:
            if left:
                raise CorruptArchiveError(f"truncated tar header at offset {self.consumed}")
            self._buf, self._pos = b"", 0
            return b""
        return data

    def take(self, n: int) -> bytes:
        p = self._pos
        if len(self._buf) - p >= n:
            self._pos = p + n
            self.consumed += n
            return self._buf[p : p + n]
        data = self._span(n)
        if data is None:
            raise CorruptArchiveError(f"tar stream truncated at offset {self.consumed}")
        return data

    def take_padded(self, n: int) -> bytes:
        """The next n bytes, then skip the zero padding to the next 512-byte boundary (one call per member)."""
        padded = n + (-n % _BLOCK)
        p = self._pos
        if len(self._buf) - p >= padded:
            self._pos = p + padded
            self.consumed += padded
            return self._buf[p : p + n]
        data = self.take(n)
        self.copy(None, padded - n)
        return data

    def copy(self, fd: int | None, n: int) -> None:
        """Move the next n bytes to fd (None: discard), in large slices."""
        avail = len(self._buf) - self._pos
        if avail:
            k = min(avail, n)
            if fd is not None:
                _write_all(fd, memoryview(self._buf)[self._pos : self._pos + k])
            self._pos += k
            self.consumed += k
            n -= k
        while n:
            chunk = self._pull(min(n, _CHUNK))
            if not chunk:
                raise CorruptArchiveError(f"tar stream truncated at offset {self.consumed}")
            if len(chunk) > n:  # a reader that returned more than asked for: keep the rest
                self._buf, self._pos = chunk, n
                chunk = chunk[:n]
            if fd is not None:
                _write_all(fd, chunk)
            n -= len(chunk)
            self.consumed += len(chunk)

    def drain(self, limit: int) -> None:
        """After the end marker: the rest must be zero padding, at most `limit` bytes."""
        rest = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        total = 0
        while True:
            if rest.count(0) != len(rest):
                raise CorruptArchiveError(f"data after the end-of-archive marker at offset {self.consumed}")
            total += len(rest)
            self.consumed += len(rest)
            if total > limit:
                raise UnsafeArchiveError(f"more than {limit} bytes of padding after the end-of-archive marker")
            rest = self._pull(_CHUNK)
            if not rest:
                return


def _read_umask() -> int:
    """The process's umask without setting it (os.umask can only swap, racing other threads); when it cannot
    be read, every mode bit counts as possibly taken, so files are always chmod-ed as before."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o7777


def _finish_file(fd: int, mode: int, mtime: int, umask: int) -> None:
    """A written file's mode and mtime. It was created with `mode` (see _Extractor._create): only bits the umask
    took need a chmod. One rule for both the writer threads and the calling thread."""
    if mode & umask:
        os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime, mtime))


def _write_all(fd: int, data: bytes | memoryview) -> None:
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)
        while n < len(view):
            n += os.write(fd, view[n:])


# ----------------------------------------------------------------------------------------------- header parsing


def _octal(field: bytes, what: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        if field[0] == 0x80:
            return int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        raise CorruptArchiveError(f"invalid base-256 {what} in header at offset {offset}")
    digits = field.split(b"\x00", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not digits.isdigit():
        raise CorruptArchiveError(f"invalid {what} field in header at offset {offset}")
    try:
        return int(digits, 8)
    except ValueError:
        raise CorruptArchiveError(f"invalid {what} field in header at offset {offset}") from None


def _checksum_ok(hdr: bytes, chksum: int) -> bool:
    """The header's checksum: its bytes summed with the checksum field read as eight spaces.

    Why Adler-32: sum() over 512 bytes is a Python loop (~5 µs, two headers per member); the low half of
    Adler-32 is 1 + the byte sum mod 65521, exact for 256 bytes (at most 65,280), so two C calls give the
    same sum. Old tars summed signed chars: that sum is only computed when the unsigned one does not match.
    """
    unsigned = (adler32(hdr[:256]) & 0xFFFF) + (adler32(hdr[256:]) & 0xFFFF) - 2 - sum(hdr[148:156]) + 256
    return chksum == unsigned or chksum == sum(_SIGNED.unpack(hdr)) + 256


def _cstr(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    """`"%d %s=%s\\n"` records; linear, no regex (CVE-2024-6232), zero/short lengths refused (CVE-2019-20907)."""
    out: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    find = data.find
    while pos < end:
        sp = find(b" ", pos, pos + 21)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            if data[pos] == 0 and data.count(0, pos) == end - pos:
                break  # NUL padding
            raise CorruptArchiveError(f"malformed pax record length in header at offset {offset}")
        length = int(digits)
        nxt = pos + length
        if length <= sp - pos + 2 or nxt > end or data[nxt - 1] != 0x0A:
            raise CorruptArchiveError(f"malformed pax record (length {length}) in header at offset {offset}")
        key, eq, value = data[sp + 1 : nxt - 1].partition(b"=")
        if not eq or not key:
            raise CorruptArchiveError(f"malformed pax record in header at offset {offset}")
        out[key] = value
        pos = nxt
    return out


def _pax_mtime_ns(value: bytes, offset: int) -> int:
    neg = value.startswith(b"-")
    whole, _, frac = value[neg:].partition(b".")
    if len(value) > 40 or not whole.isdigit() or (frac and not frac.isdigit()):
        raise CorruptArchiveError(f"malformed pax mtime {value[:40]!r} in header at offset {offset}")
    ns = int(whole) * 10**9 + int((frac + b"000000000")[:9])
    return -ns if neg else ns


def _clamp_ns(ns: int) -> int:
    return 0 if ns < 0 else min(ns, _MTIME_MAX_NS)


# ----------------------------------------------------------------------------------------------- extraction


class _Writers:
    """Threads that write, chmod, utime and close files the calling thread created (see the module doc).

    Files are handed over in batches; the calling thread blocks when too many bytes or descriptors are
    in flight, and `settle()` waits until every file handed over is complete. The first error a writer
    meets is raised on the calling thread at its next hand-over or settle; after it (or after `close()`)
    the writers only close the descriptors they are given.

    Why no lock, Condition or queue.Queue on the calling thread: SIGINT/SIGTERM raise KeyboardInterrupt
    there between any two bytecodes, also inside threading.Condition.__enter__ right after it took its
    lock, which then stays taken for good - a writer waiting for it never ends and `close()` would wait
    for that writer forever (a real interrupted restore hung like this). So the two directions are C-level
    SimpleQueues, whose put/get either happen whole or not at all, the in-flight counts belong to the
    calling thread alone, and a batch is a list the writers *pop* from: if an interrupt lands after a batch
    was queued but before the calling thread forgot it, `close()` hands the same list over again and
    every descriptor in it is still closed exactly once.
    """

    def __init__(self, count: int, umask: int) -> None:
        self._count = count
        self.umask = umask
        self._threads: list[threading.Thread] = []
        self._work: queue.SimpleQueue[list[tuple[int, bytes, int, int]] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[int, int, BaseException | None]] = queue.SimpleQueue()
        self._bytes = 0  # in flight: handed over, completion not yet collected (calling thread only)
        self._files = 0
        self._error: BaseException | None = None
        self._stop = False  # set once by the calling thread; writers then only close descriptors
        self._failed = False  # set once by a writer; the others stop writing too
        self._batch: list[tuple[int, bytes, int, int]] = []
        self._batch_bytes = 0

    def add(self, fd: int, data: bytes, mode: int, mtime: int) -> None:
        """Take over `fd`: it is written, chmod-ed, utime-d and closed by a writer (or closed on failure)."""
        self._batch.append((fd, data, mode, mtime))
        self._batch_bytes += len(data)
        if len(self._batch) >= _BATCH_FILES or self._batch_bytes >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        batch, nbytes = self._batch, self._batch_bytes
        if not batch:
            return
        while (
            self._error is None
            and self._files
            and (self._bytes + nbytes > _INFLIGHT_BYTES or self._files + len(batch) > _INFLIGHT_FILES)
        ):
            self._collect(block=True)
        self._raise()
        if len(self._threads) < self._count:
            self._start()
        self._bytes += nbytes
        self._files += len(batch)
        self._work.put(batch)
        self._batch, self._batch_bytes = [], 0
        self._collect(block=False)
        self._raise()

    def settle(self) -> None:
        """Return once every file handed over is written and closed; raise a writer's error."""
        self.flush()
        while self._files:
            self._collect(block=True)
        self._raise()

    def _collect(self, *, block: bool) -> None:
        while True:
            try:
                nbytes, nfiles, error = self._done.get() if block else self._done.get_nowait()
            except queue.Empty:
                return
            self._bytes -= nbytes
            self._files -= nfiles
            if error is not None and self._error is None:
                self._error = error
            if block:
                return

    def _start(self) -> None:
        # Thread.start() waits on an Event (a Condition) for the thread to run: no interrupt inside it.
        with signals_held():
            t = threading.Thread(target=self._run, name=f"extract-writer-{len(self._threads)}", daemon=True)
            t.start()
            self._threads.append(t)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop: files not yet written are closed unwritten (staging is about to be removed)."""
        self._stop = True
        _close_all(self._batch)  # also correct if a writer is popping the same list (see the class doc)
        self._batch = []
        for _ in self._threads:
            self._work.put(None)
        for t in self._threads:
            # A writer finishes its current batch (at most _INFLIGHT_BYTES between them all) and then
            # only closes descriptors; the bound is for a write the kernel never returns from (a dead
            # NFS server): staging is removed anyway and that write lands in an unlinked file.
            t.join(_WRITER_JOIN_SECONDS)
        self._threads = []

    def _run(self) -> None:
        while (batch := self._work.get()) is not None:
            nbytes = nfiles = 0
            error: BaseException | None = None
            while batch:
                try:
                    fd, data, mode, mtime = batch.pop()
                except IndexError:  # the calling thread's close() emptied it meanwhile
                    break
                nbytes += len(data)
                nfiles += 1
                try:
                    if not (self._stop or self._failed or error):
                        _write_all(fd, data)
                        _finish_file(fd, mode, mtime, self.umask)
                except BaseException as exc:  # kept for the calling thread, which raises it
                    error = exc
                    self._failed = True
                finally:
                    # Not contextlib.suppress: a context manager per file is measurable at 15,000 files.
                    try:  # noqa: SIM105
                        os.close(fd)
                    except OSError:
                        pass
            self._done.put((nbytes, nfiles, error))


def _close_all(batch: list[tuple[int, bytes, int, int]]) -> None:
    while batch:
        try:
            fd = batch.pop()[0]
        except IndexError:
            return
        with contextlib.suppress(OSError):
            os.close(fd)


class _Root:
    __slots__ = ("backup", "base", "cut", "dev", "path", "staging", "tree")

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = ""  # nearest existing directory at or above `path`
        self.cut = 0
        self.dev = 0
        self.staging = ""  # private dir inside `base`; "" until the first member below this root
        self.tree = ""
        self.backup = ""

    def stage(self) -> None:
        p, is_root = self.path, True
        while True:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                p, is_root = os.path.dirname(p), False
                continue
            # The root itself must be a real directory to host staging; strict ancestors were declared by the
            # user (e.g. a symlinked home) and may be followed.
            if stat.S_ISDIR(st.st_mode) if is_root else os.path.isdir(p):
                break
            if not is_root:
                raise NotADirectoryError(f"cannot restore {self.path}: {p} exists and is not a directory")
            p, is_root = os.path.dirname(p), False
        self.base = p
        self.cut = 0 if p == "/" else len(p)
        self.staging = tempfile.mkdtemp(prefix=".runcache-restore-", dir=p)
        self.tree = self.staging + "/tree"
        self.backup = self.staging + "/backup"
        os.mkdir(self.tree, 0o700)
        os.mkdir(self.backup, 0o700)
        self.dev = os.stat(self.tree).st_dev


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/") or root == "/"


def _join(parent: str, name: str) -> str:
    return parent + name if parent == "/" else parent + "/" + name


class _Extractor:
    def __init__(self, workspace: Path, allowed_roots: Sequence[Path], limits: ExtractLimits, writers: int = 0) -> None:
        self.ws = os.path.normpath(os.fspath(workspace))
        self.ws_prefix = "" if self.ws == "/" else self.ws  # + "/" + name: a path below the workspace
        roots = sorted({os.path.normpath(os.fspath(r)) for r in allowed_roots}, key=len)
        if not os.path.isabs(self.ws) or not all(os.path.isabs(r) for r in roots):
            raise ValueError("workspace and allowed_roots must be absolute paths")
        tops: list[str] = []
        for r in roots:  # roots below another root are covered by it
            if not any(_within(r, t) for t in tops):
                tops.append(r)
        self.roots = [_Root(r) for r in tops]
        self.limits = limits
        self.max_path = limits.max_path_length
        self.links: dict[str, tuple[str, int, _Root]] = {}  # pending symlinks: path -> (target, mtime_ns, root)
        self.links_by_dir: dict[str, set[str]] = {}  # parent dir -> pending symlinks in it
        self.dirs: dict[str, tuple[_Root, int, int]] = {}  # directory members: path -> (root, mode, mtime_ns)
        self.resolved: dict[str, str] = {}  # parent dir -> parent with archive symlinks resolved
        self.files = self.ndirs = self.symlinks = self.hardlinks = self.bytes = 0
        self.members = 0
        self.read_bytes = 0  # file bodies and extended-header payloads: what max_total_bytes caps
        self.pending = 0
        self.walk_budget = _WALK_BUDGET
        self.undo: list[Callable[[], None]] = []
        self.umask = _read_umask()
        self.writers = _Writers(writers, self.umask) if writers > 0 else None

    # -- reading -------------------------------------------------------------------------------------------

    def read_all(self, rd: _Reader) -> None:
        # The per-member cost of this loop is most of a many-small-files restore's CPU (18,907 members in a
        # virtualenv): checks are kept and ordered as before, but values are read only when used (the link
        # name for links, the header mtime without a pax one) and hot helpers are bound to locals.
        lim = self.limits
        max_members, max_total = lim.max_members, lim.max_total_bytes
        max_longname = lim.max_path_length + 1
        block, take_padded, member = rd.block, rd.take_padded, self._member
        gpax: dict[bytes, bytes] = {}
        pax: dict[bytes, bytes] = {}
        longname = longlink = None
        meta_run = 0
        while True:
            offset = rd.consumed
            hdr = block()
            if not hdr:
                raise CorruptArchiveError(f"tar stream ends without an end-of-archive marker at offset {offset}")
            if hdr == _ZERO_BLOCK:
                if meta_run:
                    raise CorruptArchiveError(f"extended header without a member at offset {offset}")
                second = block()
                if second and second != _ZERO_BLOCK:
                    raise CorruptArchiveError(f"data after the end-of-archive marker at offset {offset}")
                rd.drain(_MAX_TRAILER)
                return
            if not _checksum_ok(hdr, _octal(hdr[148:156], "checksum", offset)):
                raise CorruptArchiveError(f"bad header checksum at offset {offset}")
            magic = hdr[257:265]
            if magic[:6] != b"ustar\x00" and magic != _GNU and magic != _NO_MAGIC:
                raise CorruptArchiveError(f"unknown tar header magic {magic!r} at offset {offset}")
            typ = hdr[156:157]
            size = _octal(hdr[124:136], "size", offset)

            if typ in _META_TYPES:
                meta_run += 1
                if meta_run > _MAX_META_RUN:
                    raise CorruptArchiveError(f"too many extended headers in a row at offset {offset}")
                if size < 0:
                    raise CorruptArchiveError(f"negative size in header at offset {offset}")
                cap = _MAX_META if typ in _PAX_TYPES else max_longname
                if size > cap:
                    kind = "pax header" if typ in _PAX_TYPES else "GNU long name"
                    raise UnsafeArchiveError(f"{kind} of {size} bytes at offset {offset} exceeds the {cap}-byte limit")
                self.read_bytes += size
                if self.read_bytes > max_total:
                    raise UnsafeArchiveError(f"extended headers exceed max_total_bytes={max_total}")
                data = take_padded(size)
                if typ in _PAX_TYPES:
                    records = _parse_pax(data, offset)
                    if b"GNU.sparse." in data and any(k.startswith(b"GNU.sparse.") for k in records):
                        raise UnsafeArchiveError(f"member at offset {offset}: sparse files are not supported")
                    into = pax if typ == b"x" else gpax
                    for k in _PAX_KEYS:
                        if k in records:
                            into[k] = records[k]
                elif typ == b"L":
                    longname = _cstr(data)
                else:
                    longlink = _cstr(data)
                continue

            meta_run = 0
            self.members += 1
            if self.members > max_members:
                raise UnsafeArchiveError(f"archive has more than {max_members} members (max_members)")
            merged = {**gpax, **pax} if gpax else pax
            if merged:
                if v := merged.get(b"size"):
                    if len(v) > 20 or not v.isdigit():
                        raise CorruptArchiveError(f"malformed pax size {v[:20]!r} at offset {offset}")
                    size = int(v)
                raw = merged.get(b"path") or longname
                v = merged.get(b"mtime")
                mtime = _clamp_ns(_pax_mtime_ns(v, offset)) if v else -1
            else:
                raw, mtime = longname, -1
            if size < 0:
                raise CorruptArchiveError(f"negative size in header at offset {offset}")
            if not raw:
                raw = _cstr(hdr[0:100])
                if magic == _USTAR and (prefix := _cstr(hdr[345:500])):
                    raw = prefix + b"/" + raw
            # Only link members read a link name.
            raw_link = (merged.get(b"linkpath") or longlink or _cstr(hdr[157:257])) if typ in _LINK_TYPES else b""
            if mtime < 0:
                mtime = _clamp_ns(_octal(hdr[136:148], "mtime", offset) * 10**9)
            mode = _octal(hdr[100:108], "mode", offset)
            if pax:
                pax = {}
            longname = longlink = None

            if typ in _REG and raw.endswith(b"/"):
                if typ != b"\x00":
                    raise CorruptArchiveError(f"member {raw[:200]!r}: regular file name ends with '/'")
                typ = b"5"
            if typ not in _REG and size:
                if typ in (b"1", b"2", b"5"):
                    raise CorruptArchiveError(f"member {raw[:200]!r}: non-zero size {size} for a link or directory")
                if typ in _REFUSED_TYPES:
                    raise UnsafeArchiveError(f"member {raw[:200]!r}: {_REFUSED_TYPES[typ]} is not allowed")
                raise UnsafeArchiveError(f"member {raw[:200]!r}: unsupported tar type {typ!r}")
            if self.read_bytes + size > max_total:
                raise UnsafeArchiveError(f"member {raw[:200]!r} ({size} bytes) exceeds max_total_bytes={max_total}")
            member(rd, typ, raw, raw_link, size, mode, mtime)
            self.read_bytes += size

    def _member(self, rd: _Reader, typ: bytes, raw: bytes, raw_link: bytes, size: int, mode: int, mtime: int) -> None:
        name = self._check_name(raw, raw, "name")
        if typ not in _MEMBER_TYPES:
            what = _REFUSED_TYPES.get(typ, f"tar type {typ!r}")
            raise UnsafeArchiveError(f"member {name!r}: {what} is not allowed")
        lexical = self._lexical(name)
        root = self._root_of(lexical)
        if root is None:
            if typ == b"5" and any(_within(r.path, lexical) for r in self.roots):
                return  # a parent directory of a declared path: leave it as it is
            raise UnsafeArchiveError(f"member {name!r} -> {lexical} is outside the declared paths")
        target = self._resolve_parent(lexical, name)
        if not root.staging:
            root.stage()
        if target.startswith(root.staging) and (target == root.staging or target.startswith(root.staging + "/")):
            raise UnsafeArchiveError(f"member {name!r} targets the restore's staging directory")
        staged = root.tree + target[root.cut :]
        if staged == root.tree:  # the root itself, already an existing directory
            if typ == b"5":
                self.ndirs += 1
                return
            raise UnsafeArchiveError(f"member {name!r}: {target} is an existing directory; refusing to replace it")

        if typ in _REG:
            if self.links:
                self._drop_link(target)
            mode = (mode & 0o755) | 0o600
            fd = self._create(staged, target, name, mode)
            if self.writers is not None and size <= _HANDOFF_MAX:
                try:
                    data = rd.take_padded(size)
                except BaseException:
                    os.close(fd)
                    raise
                self.writers.add(fd, data, mode, mtime)
            else:
                try:
                    rd.copy(fd, size)
                    _finish_file(fd, mode, mtime, self.umask)
                finally:
                    os.close(fd)
                rd.copy(None, -size % _BLOCK)
            self.files += 1
            self.bytes += size
        elif typ == b"5":
            self._drop_link(target)
            self._mkdir(staged, target, name)
            self._remember(len(target))
            self.dirs[target] = (root, (mode & 0o755) | 0o700, mtime)
            self.ndirs += 1
        elif typ == b"2":
            link = self._check_name(raw_link, raw, "symlink target")
            self._clear(staged, target)
            self._parent(staged, name)
            self._set_link(target, (link, mtime, root))
            self.symlinks += 1
        else:
            self._hardlink(root, raw_link, raw, name, staged, target, mtime)
            self.hardlinks += 1

    def _check_name(self, raw: bytes, member: bytes, what: str) -> str:
        if not raw:
            raise UnsafeArchiveError(f"member {member[:200]!r}: empty {what}")
        if len(raw) > self.max_path:
            raise UnsafeArchiveError(
                f"member {member[:200]!r}: {what} of {len(raw)} bytes exceeds max_path_length="
                f"{self.limits.max_path_length}"
            )
        if b"\x00" in raw:
            raise UnsafeArchiveError(f"member {member[:200]!r}: NUL byte in {what}")
        if len(raw) > _MAX_NAME and any(len(c) > _MAX_NAME for c in raw.split(b"/")):
            raise UnsafeArchiveError(f"member {member[:200]!r}: {what} has a component over {_MAX_NAME} bytes")
        return raw.decode(_FS_ENCODING, _FS_ERRORS)  # os.fsdecode without its type checks (one call per member)

    def _lexical(self, name: str) -> str:
        """normpath(join(workspace, name)), without normpath's Python loop for the usual relative name.

        A relative name with no empty, `.` or `..` component (one trailing `/` allowed) is already normal;
        anything else (absolute, `./x`, `a//b`, `../x`) goes through normpath.
        """
        if name[:1] != "/":
            body = name[:-1] if name[-1:] == "/" else name
            probe = "/" + body + "/"
            if body and "//" not in probe and "/./" not in probe and "/../" not in probe:
                return self.ws_prefix + "/" + body
        return os.path.normpath(os.path.join(self.ws, name))

    def _root_of(self, path: str) -> _Root | None:
        for r in self.roots:
            if _within(path, r.path):
                return r
        return None

    # -- symlink bookkeeping ---------------------------------------------------------------------------------

    def _remember(self, n: int) -> None:
        self.pending += n
        if self.pending > _MAX_PENDING:
            raise UnsafeArchiveError(f"symlinks and directories need more than {_MAX_PENDING} bytes of bookkeeping")

    def _set_link(self, target: str, value: tuple[str, int, _Root]) -> None:
        self._remember(len(target) + len(value[0]))
        self.links[target] = value
        self.links_by_dir.setdefault(os.path.dirname(target), set()).add(target)
        self.resolved.clear()

    def _drop_link(self, target: str) -> None:
        if self.links and self.links.pop(target, None) is not None:
            self.links_by_dir[os.path.dirname(target)].discard(target)
            self.resolved.clear()

    def _resolve_parent(self, path: str, member: str) -> str:
        """`path` with every ancestor that is a symlink member of this archive replaced by what it points to."""
        if not self.links:
            return path
        parent, _, leaf = path.rpartition("/")
        parent = parent or "/"
        done = self.resolved.get(parent)
        if done is None:
            done = self._resolve_dir(parent, member)
            if len(self.resolved) >= _MAX_CACHE:
                self.resolved.clear()
            self.resolved[parent] = done
        return _join(done, leaf)

    def _resolve_dir(self, path: str, member: str) -> str:
        root = self._root_of(path)
        if root is None:  # above every root: no archive member lives there
            return path
        done = root.path
        if done in self.links:  # the declared path itself is a symlink member: never written through
            raise UnsafeArchiveError(f"member {member!r} is written through the symlink member {done}")
        todo = deque(path[len(done) :].split("/"))
        hops = 0
        self.walk_budget -= len(todo)
        while todo:
            part = todo.popleft()
            if not part or part == ".":
                continue
            if part == "..":
                done = os.path.dirname(done)
                if not _within(done, root.path):
                    raise UnsafeArchiveError(f"member {member!r} is written through a symlink that leaves {root.path}")
                continue
            nxt = _join(done, part)
            link = self.links.get(nxt)
            if link is None:
                done = nxt
                continue
            hops += 1
            if hops > self.limits.max_link_depth:
                raise UnsafeArchiveError(
                    f"member {member!r}: symlink chain through {nxt} is longer than max_link_depth="
                    f"{self.limits.max_link_depth} (or cyclic)"
                )
            if link[0].startswith("/"):
                raise UnsafeArchiveError(
                    f"member {member!r} is written through the absolute symlink {nxt} -> {link[0]} "
                    "(absolute links are only allowed as leaves)"
                )
            parts = link[0].split("/")
            self.walk_budget -= len(parts)
            if self.walk_budget < 0:
                raise UnsafeArchiveError(f"member {member!r}: symlink resolution exceeds its work limit")
            todo.extendleft(reversed(parts))
        if self.walk_budget < 0:
            raise UnsafeArchiveError(f"member {member!r}: symlink resolution exceeds its work limit")
        return done

    # -- staging primitives ----------------------------------------------------------------------------------

    def _parent(self, staged: str, member: str) -> None:
        try:
            os.makedirs(os.path.dirname(staged), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UnsafeArchiveError(f"member {member!r}: a parent path is not a directory") from None

    def _clear(self, staged: str, target: str) -> None:
        """Last member wins: remove what an earlier member left at `target`."""
        self._drop_link(target)
        try:
            st = os.lstat(staged)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            # Forget the directory members and pending symlinks of the subtree: work proportional to the subtree
            # (staging holds no symlinks yet, so the walk stays inside it).
            for dirpath, _, _ in os.walk(staged):
                sub = target + dirpath[len(staged) :]
                self.dirs.pop(sub, None)
                for link in self.links_by_dir.pop(sub, ()):
                    self.links.pop(link, None)
                    self.resolved.clear()
            shutil.rmtree(staged)
        else:
            os.unlink(staged)

    def _create(self, staged: str, target: str, member: str, mode: int = 0o600) -> int:
        # Created with its final mode (staging is private, 0700): the chmod after it is needed only for bits
        # the umask takes away, which a usual umask (022) never does for these modes.
        try:
            return os.open(staged, _WFLAGS, mode)
        except FileExistsError:
            self._clear(staged, target)
        except (FileNotFoundError, NotADirectoryError):
            self._parent(staged, member)
        try:
            return os.open(staged, _WFLAGS, mode)
        except (FileNotFoundError, NotADirectoryError, FileExistsError):
            raise UnsafeArchiveError(f"member {member!r}: a parent path is not a directory") from None

    def _mkdir(self, staged: str, target: str, member: str) -> None:
        try:
            os.mkdir(staged, 0o700)
            return
        except FileExistsError:
            if stat.S_ISDIR(os.lstat(staged).st_mode):
                return  # directory over directory: merge
            self._clear(staged, target)
        except (FileNotFoundError, NotADirectoryError):
            self._parent(staged, member)
        try:
            os.mkdir(staged, 0o700)
        except OSError:
            raise UnsafeArchiveError(f"member {member!r}: a parent path is not a directory") from None

    def _hardlink(
        self, root: _Root, raw_link: bytes, raw: bytes, member: str, staged: str, target: str, mtime: int
    ) -> None:
        link = self._check_name(raw_link, raw, "hardlink target")
        lexical = os.path.normpath(os.path.join(self.ws, link))
        lroot = self._root_of(lexical)
        if lroot is None:
            raise UnsafeArchiveError(f"member {member!r}: hardlink target {link!r} is outside the declared paths")
        src_target = self._resolve_parent(lexical, member)
        if src_target in self.links:  # a hardlink to a symlink member: the same symlink again
            value = self.links[src_target]
            self._clear(staged, target)
            self._parent(staged, member)
            self._set_link(target, (value[0], mtime, root))
            return
        if not lroot.staging:
            raise UnsafeArchiveError(f"member {member!r}: hardlink target {link!r} is not a member of this archive")
        src = lroot.tree + src_target[lroot.cut :]
        if src == staged:
            try:
                if stat.S_ISREG(os.lstat(src).st_mode):
                    return
            except OSError:
                pass
        self._clear(staged, target)
        try:
            st = os.lstat(src)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or src == lroot.tree:
            raise UnsafeArchiveError(
                f"member {member!r}: hardlink target {link!r} is not a regular file extracted from this archive"
            )
        self._parent(staged, member)
        try:
            os.link(src, staged, follow_symlinks=False)
        except OSError:  # EXDEV between two roots, EMLINK, filesystems without hardlinks
            self._settle()  # the copy reads the source's body, which a writer may still be writing
            st = os.lstat(src)
            shutil.copyfile(src, staged, follow_symlinks=False)
            os.chmod(staged, stat.S_IMODE(st.st_mode))
            os.utime(staged, ns=(st.st_mtime_ns, st.st_mtime_ns))

    def _settle(self) -> None:
        if self.writers is not None:
            self.writers.settle()

    def finish_staging(self) -> None:
        """Symlinks last (nothing is written after them), then directory modes and mtimes, deepest first."""
        self._settle()  # every body is complete before the caller's check and the commit
        for target, (dest, mtime, root) in self.links.items():
            staged = root.tree + target[root.cut :]
            os.symlink(dest, staged)  # the parent was created with the member and nothing replaced it since
            os.utime(staged, ns=(mtime, mtime), follow_symlinks=False)
        for target in sorted(self.dirs, key=lambda t: t.count("/"), reverse=True):
            root, mode, mtime = self.dirs[target]
            staged = root.tree + target[root.cut :]
            try:
                if not stat.S_ISDIR(os.lstat(staged).st_mode):
                    continue
            except FileNotFoundError:
                continue
            os.chmod(staged, mode)
            os.utime(staged, ns=(mtime, mtime))

    # -- commit ----------------------------------------------------------------------------------------------

    def commit(self) -> None:
        staged = [r for r in self.roots if r.staging]
        for execute in (False, True):  # plan everything (all refusals happen here), then move
            try:
                for r in staged:
                    fd = os.open(r.base, _DFLAGS if r.base == r.path else _DFLAGS & ~os.O_NOFOLLOW)
                    try:
                        self._merge(r, r.tree, fd, r.base, execute)
                    finally:
                        os.close(fd)
            except BaseException:
                if execute:
                    self._rollback()
                raise
        self.undo.clear()

    def _merge(self, root: _Root, src: str, dst_fd: int, dst: str, execute: bool) -> None:
        for name in os.listdir(src):
            s = src + "/" + name
            d = _join(dst, name)
            s_dir = stat.S_ISDIR(os.lstat(s).st_mode)
            try:
                d_mode = os.stat(name, dir_fd=dst_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                if execute:
                    os.rename(s, name, dst_dir_fd=dst_fd)
                    self.undo.append(lambda s=s, d=d: os.rename(d, s))
                continue
            if stat.S_ISDIR(d_mode):
                if not s_dir:
                    raise UnsafeArchiveError(
                        f"{d} is an existing directory; the archive has a non-directory there, refusing to replace it"
                    )
                fd = os.open(name, _DFLAGS, dir_fd=dst_fd)
                try:
                    if os.fstat(fd).st_dev != root.dev:  # a mount point: renames into it would fail half-way
                        raise OSError(errno.EXDEV, f"cannot restore into {d}: it is on another filesystem than {dst}")
                    self._merge(root, s, fd, d, execute)
                finally:
                    os.close(fd)
                continue
            if s_dir and stat.S_ISLNK(d_mode):
                raise UnsafeArchiveError(
                    f"{d} is an existing symlink; the archive has a directory there, refusing to follow it"
                )
            if not execute:
                continue
            backup = f"{root.backup}/{len(self.undo)}"
            if s_dir:  # a directory replaces a file: the file is moved aside
                os.rename(name, backup, src_dir_fd=dst_fd)
                self.undo.append(lambda b=backup, d=d: os.rename(b, d))
                os.rename(s, name, dst_dir_fd=dst_fd)
                self.undo.append(lambda s=s, d=d: os.rename(d, s))
                continue
            try:  # keep the old entry for a rollback: a hardlink if possible, else move it aside
                os.link(name, backup, src_dir_fd=dst_fd, follow_symlinks=False)
            except OSError:
                os.rename(name, backup, src_dir_fd=dst_fd)
            self.undo.append(lambda b=backup, d=d: os.rename(b, d))
            os.rename(s, name, dst_dir_fd=dst_fd)  # atomic replace; never opens the old entry

    def _rollback(self) -> None:
        for op in reversed(self.undo):
            with contextlib.suppress(OSError):  # best effort: keep undoing the rest
                op()
        self.undo.clear()

    def cleanup(self) -> None:
        if self.writers is not None:  # before staging goes: no writer may still hold a descriptor in it
            self.writers.close()
        for r in self.roots:
            if r.staging:
                shutil.rmtree(r.staging, ignore_errors=True)
                r.staging = ""

    def report(self) -> ExtractReport:
        return ExtractReport(
            files=self.files, dirs=self.ndirs, symlinks=self.symlinks, hardlinks=self.hardlinks, bytes=self.bytes
        )
