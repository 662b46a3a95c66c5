"""Local-disk blob store: one file per blob under `<root>/<shard>/<name>`, written by atomic rename."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from runcache.store.blobs import BlobStats


class DiskBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid blob name {name!r}")
        return self.root / name[-2:].rjust(2, "0") / name

    def put_file(self, name: str, path: Path, *, size: int, sha256: str) -> None:
        if path.stat().st_size != size:
            raise ValueError(f"blob {name}: file has {path.stat().st_size} bytes, expected {size}")
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        # rename is atomic on one file system: a reader sees the whole blob or none.
        os.replace(path, target)

    def local_path(self, name: str) -> Path | None:
        p = self._path(name)
        return p if p.is_file() else None

    def contains(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def names(self) -> list[str]:
        return [p.name for shard in self.root.iterdir() if shard.is_dir() for p in shard.iterdir() if p.is_file()]

    def stats(self) -> BlobStats:
        count = total = 0
        for shard in self.root.iterdir():
            if shard.is_dir():
                for p in shard.iterdir():
                    count += 1
                    total += p.stat().st_size
        return BlobStats(count, total)
