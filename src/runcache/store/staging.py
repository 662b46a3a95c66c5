"""Upload staging on local disk: where bytes land before a commit makes them an entry.

One folder per upload holds `data` (written at offsets, so v1 chunks may arrive in any order and in
parallel), `ranges` (an append-only record of the byte ranges fully received) and `blocks/` (Azure
Put Block bodies until Put Block List orders them). Nothing here is visible to lookups.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
from pathlib import Path

from runcache.core.errors import InvalidRequest, NotFound
from runcache.core.ranges import check_complete

_HASH_BLOCK = 4 * 1024 * 1024


class RangeWriter:
    """Writes one received range at its offset; the range counts only once `finish` verifies its length."""

    def __init__(
        self, staging: Staging, upload_id: int, start: int, expected_end: int | None, *, digest: bool = False
    ) -> None:
        self._staging = staging
        # A body written in order from byte 0 is hashed as it arrives, sparing commit a second read.
        self._digest = hashlib.sha256() if digest and start == 0 else None
        if self._digest is None:
            staging.forget_digest(upload_id)  # before the first byte lands: a recorded hash goes stale
        (staging.folder(upload_id) / "blocklist").unlink(missing_ok=True)  # bytes now go to `data`
        self._upload_id = upload_id
        self._start = start
        self._offset = start
        self._expected_end = expected_end
        self._fd = os.open(staging.folder(upload_id) / "data", os.O_WRONLY | os.O_CREAT, 0o600)

    def write(self, data: bytes) -> None:
        if self._expected_end is not None and self._offset + len(data) > self._expected_end:
            raise InvalidRequest("request body is longer than its Content-Range")
        if self._digest is not None:
            self._digest.update(data)
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._offset)
            self._offset += n
            view = view[n:]

    def finish(self) -> tuple[int, int]:
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

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class BlockWriter:
    """An Azure Put Block body, kept apart until Put Block List says where it goes."""

    def __init__(self, path: Path) -> None:
        self._final = path
        self._tmp = path.with_name(path.name + ".part")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self.size = 0

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self.size += len(data)

    def finish(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def folder(self, upload_id: int) -> Path:
        return self.root / str(int(upload_id))

    def create(self, upload_id: int) -> None:
        folder = self.folder(upload_id)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "blocks").mkdir(parents=True)

    def exists(self, upload_id: int) -> bool:
        return self.folder(upload_id).is_dir()

    def _require(self, upload_id: int) -> Path:
        folder = self.folder(upload_id)
        if not folder.is_dir():
            raise NotFound(f"no upload in progress with id {upload_id}")
        return folder

    def range_writer(self, upload_id: int, start: int, end: int | None) -> RangeWriter:
        self._require(upload_id)
        return RangeWriter(self, upload_id, start, end)

    def whole_writer(self, upload_id: int) -> RangeWriter:
        """Put Blob replaces whatever was uploaded before."""
        folder = self._require(upload_id)
        with self._lock:
            (folder / "data").unlink(missing_ok=True)
            (folder / "ranges").unlink(missing_ok=True)
            (folder / "sha256").unlink(missing_ok=True)
            (folder / "blocklist").unlink(missing_ok=True)
        return RangeWriter(self, upload_id, 0, None, digest=True)

    def record_digest(self, upload_id: int, size: int, sha256: str) -> None:
        (self._require(upload_id) / "sha256").write_text(f"{size} {sha256}\n")

    def forget_digest(self, upload_id: int) -> None:
        (self._require(upload_id) / "sha256").unlink(missing_ok=True)

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

    @staticmethod
    def block_name(block_id: str) -> str:
        try:
            raw = base64.b64decode(block_id, validate=True)
        except ValueError as exc:
            raise InvalidRequest(f"block id {block_id!r} is not valid base64") from exc
        if not raw or len(raw) > 64:
            raise InvalidRequest("block id must decode to 1..64 bytes")
        return raw.hex()

    def block_writer(self, upload_id: int, block_id: str) -> BlockWriter:
        folder = self._require(upload_id)
        with self._lock:
            # A block after a block list reopens the upload: it must be listed again before commit.
            for stale in ("blocklist", "sha256", "ranges"):
                (folder / stale).unlink(missing_ok=True)
        return BlockWriter(folder / "blocks" / self.block_name(block_id))

    def commit_blocks(self, upload_id: int, block_ids: list[str]) -> int:
        """Put Block List: the listed blocks, in list order, are the blob; unlisted blocks are dropped.

        The blocks stay where they are (the blob store keeps them as ordered parts); one read computes
        the SHA-256 now, so commit needs neither a concatenated copy nor another read.
        """
        folder = self._require(upload_id)
        blocks = folder / "blocks"
        names = [self.block_name(bid) for bid in block_ids]
        if len(set(names)) != len(names):
            # The same block twice would need a copy; no client does it, so refuse rather than duplicate.
            raise InvalidRequest("a block may appear only once in the block list")
        digest = hashlib.sha256()
        total = 0
        for bid, name in zip(block_ids, names, strict=True):
            p = blocks / name
            if not p.is_file():
                raise InvalidRequest(f"block {bid} was never uploaded")
            with open(p, "rb") as src:
                while block := src.read(_HASH_BLOCK):
                    digest.update(block)
                    total += len(block)
        with self._lock:
            listed = set(names)
            for p in blocks.iterdir():
                if p.name not in listed:
                    p.unlink(missing_ok=True)
            (folder / "data").unlink(missing_ok=True)
            (folder / "blocklist").write_text("".join(f"{n}\n" for n in names))
            (folder / "ranges").write_text(f"0 {total}\n" if total else "")
            (folder / "sha256").write_text(f"{total} {digest.hexdigest()}\n")
        return total

    def finalize(self, upload_id: int, size: int) -> tuple[list[Path], str]:
        """Prove the upload is exactly `size` bytes with no holes; return its files in order and its SHA-256."""
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
        if known is not None:
            return paths, known
        digest = hashlib.sha256()
        for p in paths:
            with open(p, "rb") as fh:
                while chunk := fh.read(_HASH_BLOCK):
                    digest.update(chunk)
        return paths, digest.hexdigest()

    def discard(self, upload_id: int) -> None:
        shutil.rmtree(self.folder(upload_id), ignore_errors=True)

    def upload_ids(self) -> list[int]:
        return [int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit()]

    def clear_all(self) -> None:
        for p in self.root.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
