"""Upload staging on local disk (the `UploadStore` of the embedded default): where bytes land before a
commit makes them an entry. Only the replica that reserved an upload holds its bytes.

One folder per upload holds `data` (written at offsets, so v1 chunks may arrive in any order and in
parallel), `ranges` (an append-only record of the byte ranges fully received) and `blocks/` (Azure
Put Block bodies until Put Block List orders them). Nothing here is visible to lookups.

Every writer registers with its upload while it holds a file open. A commit first *seals* the
upload: it waits briefly for registered writers, refuses if they do not finish, and from then on
no writer may open. So once the staged file becomes the committed blob, nothing in this process
still writes to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from runcache.core.blocks import block_list_names, block_name
from runcache.core.errors import InvalidRequest, NotFound, StorageFull, UploadBusy
from runcache.core.limits import MB, check_block_count, check_chunk_count, check_upload_end
from runcache.core.ranges import check_complete
from runcache.store.uploads import Progress, SpaceGuard, StagedUpload, no_guard

_HASH_BLOCK = 4 * 1024 * 1024
# Hashing reads into one reused buffer: a fresh 4 MiB bytes object per read, in each of many commits'
# worker threads at once, is what made v1 commits (which hash the whole file) peak far above v2's.
_READ_BUFFER = 1024 * 1024
# Blocks smaller than this on average are joined into one file at Put Block List: thousands of tiny
# part files would cost more inodes and opens than the archive is worth.
_MIN_AVERAGE_PART = 1 * MB
SEAL_WAIT_SECONDS = 5.0
# Write-behind: every this many bytes of a file written in order, the kernel is asked to start writing
# them back. Left alone, uploads' dirty pages pile up to the kernel's background threshold (10 % of RAM:
# GBs) before its flusher starts, and each commit's fsync then writes its whole file at once.
WRITE_BEHIND_ENV = "RUNCACHE_WRITE_BEHIND_MIB"
_WRITE_BEHIND_DEFAULT = 32 * MB
# The server's writers together hold at most this many windows not yet handed to writeback: past it, a
# writer hands over what it holds at its next write, so many concurrent uploads below one window each
# (50 v1 saves of one 32 MiB chunk) are bounded too.
_SERVER_WINDOWS = 8
_MIN_HANDOVER = 1 * MB  # one write batch (server/streams.py): smaller handovers cost more than they bound
# A writeback thread with nothing to do for this long ends (a new one starts with the next handover).
_WRITEBACK_IDLE_SECONDS = 2.0
_SYNC_FILE_RANGE_WRITE = 2


def write_behind_window() -> int:
    """Bytes per write-behind window from the environment; 0 turns write-behind off."""
    raw = os.environ.get(WRITE_BEHIND_ENV, "").strip()
    if not raw:
        return _WRITE_BEHIND_DEFAULT
    try:
        mib = int(raw)
    except ValueError:
        raise ValueError(f"{WRITE_BEHIND_ENV} must be a whole number of MiB, got {raw!r}") from None
    return max(mib, 0) * MB


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Asks the kernel to start writing [offset, offset + length) back; does not wait for the disk.

    sync_file_range(SYNC_FILE_RANGE_WRITE) leaves the written pages in the page cache, clean: a v1 commit
    hashes the file from there and a restore soon after the save reads it from there. posix_fadvise
    DONTNEED (where sync_file_range is missing) also starts writeback, but drops the pages it finds clean.
    """
    if _sync_file_range is not None:
        if _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    elif hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class _Writeback:
    """A background thread that starts the writeback of the ranges handed to it, in order. Writers never
    wait for it: they run on the event loop, and starting writeback blocks while the disk's queue is full.
    Each handover holds its own duplicate of the writer's descriptor, so a writer may close (finish,
    abort) at any time and the number can never name another file by the time the thread uses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[tuple[int, int, int]] = deque()
        self._running = False

    def submit(self, fd: int, offset: int, length: int) -> None:
        try:
            dup = os.dup(fd)
        except OSError:
            return  # out of descriptors: the kernel's flusher, or the commit's fsync, still gets there
        with self._lock:
            self._queue.append((dup, offset, length))
            if self._running:
                self._ready.notify()
                return
            self._running = True
        try:
            threading.Thread(target=self._run, name="runcache-writeback", daemon=True).start()
        except BaseException:
            with self._lock:
                self._running = False
                while self._queue:
                    os.close(self._queue.popleft()[0])
            raise

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if not self._ready.wait(_WRITEBACK_IDLE_SECONDS) and not self._queue:
                        self._running = False
                        return
                fd, offset, length = self._queue.popleft()
            try:
                start_writeback(fd, offset, length)
            except OSError:
                pass  # advice only: the commit's fsync writes (and reports on) whatever is left
            finally:
                os.close(fd)


_writeback = _Writeback()


class _DirtyBudget:
    """Bytes the server's writers have written but not yet handed to writeback, all uploads together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.held = 0

    def add(self, n: int) -> int:
        with self._lock:
            self.held += n
            return self.held


class _WriteBehind:
    """One file written in order from `start`: its bytes go to writeback a window at a time, or sooner
    when the server's writers together hold more than their budget, and what is left when it closes."""

    def __init__(self, window: int, budget: _DirtyBudget, start: int) -> None:
        self._window = window
        self._budget = budget
        self._handed = start  # writeback was asked for everything before this
        self._end = start

    def wrote(self, fd: int, end: int) -> None:
        if not self._window or end <= self._end:
            return
        total = self._budget.add(end - self._end)
        self._end = end
        held = end - self._handed
        if held >= self._window or (total > self._budget.limit and held >= _MIN_HANDOVER):
            self._hand_over(fd)

    def close(self, fd: int | None) -> None:
        """The file is done (fd given: hand over its tail) or given up (None)."""
        if fd is not None and self._end > self._handed:
            self._hand_over(fd)
        self._budget.add(self._handed - self._end)
        self._handed = self._end

    def _hand_over(self, fd: int) -> None:
        _writeback.submit(fd, self._handed, self._end - self._handed)
        self._budget.add(self._handed - self._end)
        self._handed = self._end


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("cache storage full: the server's disk ran out of space; not saving cache")
    return exc


@dataclass
class _Upload:
    writers: int = 0
    sealed: bool = False
    full: bool = False  # a writer hit the free-space floor: the upload is dropped, not resumed
    blocks: dict[str, int] = field(default_factory=dict)  # staged block name -> bytes


class _Writer:
    """Registration with the upload plus the checks every writer shares (cap, free space, ENOSPC)."""

    offload = False  # page-cache writes of a MiB: cheaper on the event loop than a thread hop

    def __init__(self, staging: Staging, upload_id: int, cap: int, guard: SpaceGuard) -> None:
        self._staging = staging
        self._upload_id = upload_id
        self._cap = cap
        self._guard = guard
        self._open = True

    def _before_write(self, end: int, size: int) -> None:
        check_upload_end(end, None, self._cap)
        try:
            self._guard(size)
        except StorageFull:
            self._staging._mark_full(self._upload_id)
            raise

    def _failed(self, exc: OSError) -> Exception:
        err = _storage_error(exc)
        if isinstance(err, StorageFull):
            self._staging._mark_full(self._upload_id)
        return err

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._staging._release(self._upload_id)


class RangeWriter(_Writer):
    """Writes one received range at its offset; the range counts only once `finish` verifies its length."""

    def __init__(
        self,
        staging: Staging,
        upload_id: int,
        start: int,
        expected_end: int | None,
        *,
        cap: int,
        guard: SpaceGuard,
        digest: bool = False,
    ) -> None:
        super().__init__(staging, upload_id, cap, guard)
        # A body written in order from byte 0 is hashed as it arrives, sparing commit a second read.
        self._digest = hashlib.sha256() if digest and start == 0 else None
        folder = staging.folder(upload_id)
        try:
            if self._digest is None:
                (folder / "sha256").unlink(missing_ok=True)  # before the first byte lands: the hash goes stale
            (folder / "blocklist").unlink(missing_ok=True)  # bytes now go to `data`
            self._fd = os.open(folder / "data", os.O_WRONLY | os.O_CREAT, 0o600)
        except BaseException:
            self._release()
            raise
        self._start = start
        self._offset = start
        self._expected_end = expected_end
        self._behind = _WriteBehind(staging.write_behind, staging._dirty, start)

    def write(self, data: bytes) -> None:
        if self._expected_end is not None and self._offset + len(data) > self._expected_end:
            raise InvalidRequest("request body is longer than its Content-Range")
        self._before_write(self._offset + len(data), len(data))
        if self._digest is not None:
            self._digest.update(data)
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, self._offset)
                self._offset += n
                view = view[n:]
        except OSError as exc:
            raise self._failed(exc) from exc
        self._behind.wrote(self._fd, self._offset)

    def finish(self) -> tuple[int, int]:
        try:
            # The finished range is handed to writeback whole: a chunk or body shorter than a window
            # would otherwise stay dirty until the commit's fsync.
            self._behind.close(self._fd)
            os.close(self._fd)
            self._fd = -1
            if self._expected_end is not None and self._offset != self._expected_end:
                raise InvalidRequest(
                    f"request body has {self._offset - self._start} bytes but Content-Range announced "
                    f"{self._expected_end - self._start}"
                )
            if self._digest is not None:
                self._staging.record_digest(self._upload_id, self._offset, self._digest.hexdigest())
            self._staging.record_range(self._upload_id, self._start, self._offset)
            return self._start, self._offset
        except OSError as exc:
            raise self._failed(exc) from exc
        finally:
            self._behind.close(None)
            self._release()

    def abort(self) -> None:
        self._behind.close(None)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._release()


class BlockWriter(_Writer):
    """An Azure Put Block body, kept apart until Put Block List says where it goes."""

    def __init__(self, staging: Staging, upload_id: int, name: str, *, cap: int, guard: SpaceGuard) -> None:
        super().__init__(staging, upload_id, cap, guard)
        self._name = name
        self._final = staging.folder(upload_id) / "blocks" / name
        self._tmp = self._final.with_name(f"{name}.{threading.get_ident()}.{time.monotonic_ns()}.part")
        # Bytes already staged in the upload's other blocks count against the entry cap too.
        self._others = staging._staged_block_bytes(upload_id, exclude=name)
        try:
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        except OSError as exc:
            self._release()
            raise self._failed(exc) from exc
        self.size = 0
        self._behind = _WriteBehind(staging.write_behind, staging._dirty, 0)

    def write(self, data: bytes) -> None:
        self._before_write(self._others + self.size + len(data), len(data))
        try:
            self._fh.write(data)
        except OSError as exc:
            raise self._failed(exc) from exc
        self.size += len(data)
        # The buffered file may still hold a small tail: writeback of bytes it has not written is a no-op.
        self._behind.wrote(self._fh.fileno(), self.size)

    def finish(self) -> None:
        try:
            # Before the close: bodies come in 1 MiB writes, which go past the file's buffer, so at most a
            # small tail is not on its way yet (the commit's fsync takes it).
            self._behind.close(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self._final)
            self._staging._record_block(self._upload_id, self._name, self.size)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise self._failed(exc) from exc
        finally:
            self._behind.close(None)
            self._release()

    def abort(self) -> None:
        self._behind.close(None)
        self._fh.close()
        self._tmp.unlink(missing_ok=True)
        self._release()


class Staging:
    shared = False

    def __init__(self, root: Path, *, write_behind: int | None = None) -> None:
        self.root = root
        self.write_behind = write_behind_window() if write_behind is None else write_behind
        self._dirty = _DirtyBudget(_SERVER_WINDOWS * self.write_behind)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._uploads: dict[int, _Upload] = {}

    def folder(self, upload_id: int) -> Path:
        return self.root / str(int(upload_id))

    def create(self, upload_id: int) -> None:
        folder = self.folder(upload_id)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            (folder / "blocks").mkdir(parents=True, mode=0o700)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise _storage_error(exc) from exc
        with self._lock:
            self._uploads[upload_id] = _Upload()

    def exists(self, upload_id: int) -> bool:
        return self.folder(upload_id).is_dir()

    def _require(self, upload_id: int) -> Path:
        folder = self.folder(upload_id)
        if not folder.is_dir():
            raise NotFound(f"no upload in progress with id {upload_id}")
        return folder

    # --- writer registration and sealing ---------------------------------------------------------
    def _state(self, upload_id: int) -> _Upload:
        # Uploads staged before this process started have no state yet (recovery clears them anyway).
        return self._uploads.setdefault(upload_id, _Upload())

    def _register(self, upload_id: int) -> None:
        with self._lock:
            self._require(upload_id)
            st = self._state(upload_id)
            if st.full:
                raise StorageFull("cache storage full: this upload was dropped when the disk filled up")
            if st.sealed:
                raise UploadBusy(f"upload {upload_id} is being committed and takes no more bytes")
            st.writers += 1

    def _release(self, upload_id: int) -> None:
        with self._lock:
            st = self._uploads.get(upload_id)
            if st is not None:
                st.writers -= 1
                self._changed.notify_all()

    def _mark_full(self, upload_id: int) -> None:
        with self._lock:
            self._state(upload_id).full = True

    def dropped_for_space(self, upload_id: int) -> bool:
        with self._lock:
            st = self._uploads.get(upload_id)
            return st is not None and st.full

    def seal(self, upload_id: int, wait: float = SEAL_WAIT_SECONDS) -> None:
        """No more writers from now on; waits up to `wait` seconds for the ones still sending."""
        deadline = time.monotonic() + wait
        with self._lock:
            self._require(upload_id)
            st = self._state(upload_id)
            if st.sealed:
                raise UploadBusy(f"upload {upload_id} is already being committed")
            st.sealed = True
            while st.writers > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    st.sealed = False
                    raise UploadBusy(
                        f"upload {upload_id} still has {st.writers} requests sending bytes; commit after they finish"
                    )
                self._changed.wait(left)

    def unseal(self, upload_id: int) -> None:
        """A commit that failed its checks leaves the upload open for more bytes, as before it began."""
        with self._lock:
            st = self._uploads.get(upload_id)
            if st is not None:
                st.sealed = False

    # --- writers ---------------------------------------------------------------------------------
    def range_writer(
        self,
        upload_id: int,
        start: int,
        end: int | None,
        *,
        cap: int,
        max_chunks: int,
        guard: SpaceGuard = no_guard,
    ) -> RangeWriter:
        check_chunk_count(len(self.ranges(upload_id)) + 1, max_chunks)
        self._register(upload_id)
        return RangeWriter(self, upload_id, start, end, cap=cap, guard=guard)

    def whole_writer(self, upload_id: int, *, cap: int, guard: SpaceGuard = no_guard) -> RangeWriter:
        """Put Blob replaces whatever was uploaded before."""
        self._register(upload_id)
        folder = self.folder(upload_id)
        with self._lock:
            for stale in ("data", "ranges", "sha256", "blocklist"):
                (folder / stale).unlink(missing_ok=True)
        return RangeWriter(self, upload_id, 0, None, cap=cap, guard=guard, digest=True)

    def block_writer(
        self, upload_id: int, block_id: str, *, cap: int, max_blocks: int, guard: SpaceGuard = no_guard
    ) -> BlockWriter:
        name = block_name(block_id)
        self._register(upload_id)
        try:
            folder = self.folder(upload_id)
            with self._lock:
                blocks = self._known_blocks(upload_id)
                if name not in blocks:
                    check_block_count(len(blocks) + 1, max_blocks)
                # A block after a block list reopens the upload: it must be listed again before commit.
                for stale in ("blocklist", "sha256", "ranges"):
                    (folder / stale).unlink(missing_ok=True)
        except BaseException:
            self._release(upload_id)
            raise
        return BlockWriter(self, upload_id, name, cap=cap, guard=guard)

    def _known_blocks(self, upload_id: int) -> dict[str, int]:
        """Staged blocks of an upload (caller holds the lock); read from disk once after a restart."""
        st = self._state(upload_id)
        if not st.blocks:
            folder = self.folder(upload_id) / "blocks"
            if folder.is_dir():
                st.blocks = {p.name: p.stat().st_size for p in folder.iterdir() if not p.name.endswith(".part")}
        return st.blocks

    def _staged_block_bytes(self, upload_id: int, exclude: str) -> int:
        with self._lock:
            return sum(size for name, size in self._known_blocks(upload_id).items() if name != exclude)

    def _record_block(self, upload_id: int, name: str, size: int) -> None:
        with self._lock:
            self._known_blocks(upload_id)[name] = size

    # --- bookkeeping -----------------------------------------------------------------------------
    def record_digest(self, upload_id: int, size: int, sha256: str) -> None:
        (self._require(upload_id) / "sha256").write_text(f"{size} {sha256}\n")

    def _known_digest(self, folder: Path, size: int) -> str | None:
        try:
            recorded_size, sha256 = (folder / "sha256").read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return sha256 if int(recorded_size) == size else None

    def record_range(self, upload_id: int, start: int, end: int) -> None:
        if end == start:
            return
        with self._lock, open(self._require(upload_id) / "ranges", "a") as fh:
            fh.write(f"{start} {end}\n")

    def ranges(self, upload_id: int) -> list[tuple[int, int]]:
        path = self._require(upload_id) / "ranges"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            a, b = line.split()
            out.append((int(a), int(b)))
        return out

    def commit_blocks(self, upload_id: int, block_ids: list[str], *, max_blocks: int) -> int:
        """Put Block List: the listed blocks, in list order, are the blob; unlisted blocks are dropped.

        Large blocks stay where they are (the blob store keeps them as ordered parts) and one read
        computes the SHA-256 now, so commit needs neither a concatenated copy nor another read. Many
        small blocks are joined into one file in that same read.
        """
        folder = self._require(upload_id)
        blocks = folder / "blocks"
        staged = {p.name for p in blocks.iterdir() if not p.name.endswith(".part")}
        names = block_list_names(block_ids, staged, max_blocks=max_blocks)
        self._register(upload_id)  # nothing may be sealed or committed while the list is applied
        try:
            sizes = [(blocks / n).stat().st_size for n in names]
            join = len(names) > 1 and sum(sizes) < _MIN_AVERAGE_PART * len(names)
            digest = hashlib.sha256()
            total = 0
            joined = folder / "data.joining"
            out = open(joined, "wb") if join else None  # noqa: SIM115 - closed below
            buf = bytearray(_READ_BUFFER)
            try:
                for name in names:
                    with open(blocks / name, "rb", buffering=0) as src:
                        while n := src.readinto(buf):
                            block = memoryview(buf)[:n]
                            digest.update(block)
                            total += n
                            if out is not None:
                                out.write(block)
                if out is not None:
                    out.close()  # a full disk may refuse only the last buffered write, here
            except OSError as exc:
                joined.unlink(missing_ok=True)
                raise _storage_error(exc) from exc
            finally:
                # Only ever reached with the file closed or an exception on its way: a close that fails
                # flushing what a full disk refused must not replace it.
                if out is not None:
                    with contextlib.suppress(OSError):
                        out.close()
            with self._lock:
                try:
                    (folder / "data").unlink(missing_ok=True)
                    if join:
                        os.replace(joined, folder / "data")
                        (folder / "blocklist").unlink(missing_ok=True)
                        listed: set[str] = set()
                    else:
                        (folder / "blocklist").write_text("".join(f"{n}\n" for n in names))
                        listed = set(names)
                    for p in blocks.iterdir():
                        if p.name not in listed and not p.name.endswith(".part"):
                            p.unlink(missing_ok=True)
                    st = self._state(upload_id)
                    st.blocks = {n: s for n, s in zip(names, sizes, strict=True) if n in listed}
                    (folder / "ranges").write_text(f"0 {total}\n" if total else "")
                    (folder / "sha256").write_text(f"{total} {digest.hexdigest()}\n")
                except OSError as exc:
                    # Half applied: the service drops an upload refused for space (CacheService.put_block_list).
                    raise _storage_error(exc) from exc
            return total
        finally:
            self._release(upload_id)

    def finalize(self, upload_id: int, size: int) -> StagedUpload:
        """Prove the sealed upload is exactly `size` bytes with no holes, flush it to disk, and return
        its files in order and its SHA-256."""
        folder = self._require(upload_id)
        check_complete(self.ranges(upload_id), size)
        listing = folder / "blocklist"
        if listing.exists():
            paths = [folder / "blocks" / n for n in listing.read_text().split()]
        else:
            data = folder / "data"
            if size == 0:
                data.touch()
            paths = [data]
        actual = sum(p.stat().st_size for p in paths)
        if actual != size:
            raise InvalidRequest(f"staged upload has {actual} bytes, expected {size}")
        known = self._known_digest(folder, size)
        digest = hashlib.sha256() if known is None else None
        buf = bytearray(_READ_BUFFER) if digest is not None else bytearray()
        for p in paths:
            with open(p, "rb", buffering=0) as fh:
                if digest is not None:
                    while n := fh.readinto(buf):
                        digest.update(memoryview(buf)[:n])
                # Durable before the row says committed: a power loss must not leave a row over a partial blob.
                os.fsync(fh.fileno())
        sha256 = known if digest is None else digest.hexdigest()
        return StagedUpload(size, sha256, paths, lambda: _read_files(paths))

    def last_activity(self, upload_id: int) -> float | None:
        """When bytes last reached the upload (the newest mtime in its folder, Unix time), or now while a
        writer is registered: a slow stream that has not filled a write batch yet is still alive. None
        when the upload has no staging here."""
        with self._lock:
            st = self._uploads.get(upload_id)
            if st is not None and st.writers > 0:
                return time.time()
        folder = self.folder(upload_id)
        try:
            newest = folder.stat().st_mtime
            # Writers touch `data`, `ranges` and the `blocks` folder (a block lands by rename): one level is enough.
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            return None
        return newest

    def discard(self, upload_id: int) -> None:
        shutil.rmtree(self.folder(upload_id), ignore_errors=True)
        with self._lock:
            st = self._uploads.get(upload_id)
            if st is not None and st.writers == 0:
                del self._uploads[upload_id]

    def upload_ids(self) -> list[int]:
        return [int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit()]

    def progress(self, upload_id: int) -> Progress | None:
        last = self.last_activity(upload_id)
        if last is None:
            return None
        folder = self.folder(upload_id)
        received = 0
        for path in [folder / "data", *(folder / "blocks").glob("*")]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            # v1 chunks land at their offsets: a file with holes counts what is allocated, not its length.
            blocks = getattr(st, "st_blocks", None)
            received += st.st_size if blocks is None else min(st.st_size, blocks * 512)
        return Progress(received, datetime.fromtimestamp(last, UTC).replace(tzinfo=None))

    def disk_usage(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.root)
        return usage.free, usage.total

    def after_restart(self) -> None:
        """Uploads staged here died with the process that received them (their rows go too)."""
        self.clear_all()

    def clear_all(self) -> None:
        for p in self.root.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        with self._lock:
            self._uploads.clear()


def _read_files(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_BLOCK):
                yield chunk
