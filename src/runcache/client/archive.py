"""Cache archives exactly as @actions/cache writes them: GNU tar --posix, paths relative to the workspace,
zstd when a `zstd` binary is on PATH and gzip otherwise (the rule that also picks the cache version)."""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from runcache.client.interrupt import signals_held
from runcache.core.version import GZIP, ZSTD

if TYPE_CHECKING:
    import subprocess

# zstandard, gzip, subprocess and tempfile are imported where they are used: `runcache restore` loads this
# module for its lookup (compression_method picks the cache version) and must not pay for a save's tar
# job or for a decompressor before it knows there is an archive to read.

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
# zstd's default decoder limit (what `unzstd` in the client accepts): larger windows are refused.
MAX_WINDOW = 1 << 27
READ_SIZE = 1024 * 1024


class ArchiveError(Exception):
    pass


def compression_method() -> str:
    return ZSTD if shutil.which("zstd") else GZIP


def _tar() -> str:
    tar = shutil.which("gtar") or shutil.which("tar")
    if not tar:
        raise ArchiveError("GNU tar is required to create cache archives")
    return tar


def create_archive(workspace: Path, members: list[str], compression: str) -> Iterator[bytes]:
    """Stream the compressed archive of `members` (paths relative to `workspace`) without a temp file.

    GNU tar writes the tar stream exactly as the action's `tar --posix -cf - -P -C <ws> --files-from`
    does; compression runs on zstd's own worker threads (threads=-1) so it keeps up with tar and the upload.
    Closed early (Ctrl-C, a failed upload), tar is killed rather than left to archive the rest.
    """
    job = _TarJob(_tar())
    try:
        try:
            stdout = job.start(workspace, members)
            if compression == ZSTD:
                import zstandard

                cctx = zstandard.ZstdCompressor(level=3, threads=-1)
                yield from cctx.read_to_iter(stdout, read_size=READ_SIZE, write_size=READ_SIZE)
            else:
                yield from _gzip_iter(stdout)
            job.finished = True
        finally:
            job.close()
    finally:
        # Again: an interrupt can land in the first close() before it holds signals, which would leave
        # tar, its pipes and the manifest behind. A second close() has nothing left to do.
        job.close()
    if job.returncode not in (0, 1):  # 1: "file changed as we read it", which GNU tar reports as a warning
        raise ArchiveError(f"tar failed with exit code {job.returncode}: {job.stderr.strip()}")


class _TarJob:
    """tar writing the archive to a pipe, and the folder holding its list of members.

    Starting and closing run with signals held: Ctrl-C between creating a resource and recording it
    here would leave it behind."""

    def __init__(self, tar: str) -> None:
        self._tar = tar
        self._tmp: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.finished = False
        self.returncode = 0
        self.stderr = ""

    def start(self, workspace: Path, members: list[str]) -> BinaryIO:
        import subprocess
        import tempfile

        with signals_held():
            self._tmp = tempfile.mkdtemp(prefix="runcache-manifest-")
            manifest = Path(self._tmp) / "manifest.txt"
            manifest.write_text("\n".join(members))
            self._proc = subprocess.Popen(
                [self._tar, "--posix", "-cf", "-", "-P", "-C", str(workspace), "--files-from", str(manifest)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        assert self._proc.stdout is not None
        return self._proc.stdout

    def close(self) -> None:
        """Kill tar unless it finished, wait for it, remove the manifest. Idempotent."""
        with signals_held():
            proc, self._proc = self._proc, None
            if proc is not None:
                if not self.finished:
                    proc.kill()
                assert proc.stdout is not None and proc.stderr is not None
                proc.stdout.close()
                # With stdout closed (or tar killed) tar ends, so stderr reaches its end: the read is bounded.
                self.stderr = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
                self.returncode = proc.wait()
            tmp, self._tmp = self._tmp, None
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _gzip_iter(src: BinaryIO) -> Iterator[bytes]:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    while block := src.read(READ_SIZE):
        out = comp.compress(block)
        if out:
            yield out
    yield comp.flush()


def rechunk(stream: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Fixed-size chunks (the last may be short) out of arbitrarily sized pieces, with one copy per chunk."""
    parts: list[memoryview] = []
    have = 0
    for piece in stream:
        view = memoryview(piece)
        while view:
            take = view[: size - have]
            parts.append(take)
            have += len(take)
            view = view[len(take) :]
            if have == size:
                yield b"".join(parts)
                parts, have = [], 0
    if have:
        yield b"".join(parts)


class IterReader:
    """A read()-able file over an iterator of bytes, for the decompressors' stream readers."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes | None:
        # Empty pieces are skipped: only the end of the iterator is the end of the stream.
        for piece in self._it:
            if piece:
                return piece
        return None

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            rest = [self._buf[self._pos :], *self._it]
            self._buf, self._pos = b"", 0
            return b"".join(rest)
        if self._pos >= len(self._buf):
            self._buf, self._pos = self._next() or b"", 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            more = self._next()
            if more is None:
                break
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
        return self._buf[self._pos : self._pos + n]


def open_decompressed(raw: IterReader) -> BinaryIO:
    """The tar stream inside a downloaded archive, decided by its magic bytes, with a bounded zstd window."""
    head = raw.peek(4)
    if head.startswith(ZSTD_MAGIC):
        import zstandard

        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        return dctx.stream_reader(raw, read_size=READ_SIZE, read_across_frames=True)  # type: ignore[return-value]
    if head.startswith(GZIP_MAGIC):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    raise ArchiveError("archive is neither zstd nor gzip compressed")
