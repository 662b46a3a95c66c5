"""Transfer progress: a rich bar (bytes, rate, ETA) on a terminal, a few quiet lines in CI logs."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

QUIET_INTERVAL = 10.0


class TransferProgress:
    def __init__(self, label: str, total: int | None = None, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Progress | None = None
        self._task = None
        self._started = time.monotonic()
        self._last_line = self._started

    def __enter__(self) -> TransferProgress:
        if self._tty:
            # rich is imported only for a terminal: in CI logs (and in a small restore) its ~40 ms of
            # imports would buy nothing.
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done)  # type: ignore[arg-type]
                return
            now = time.monotonic()
            if now - self._last_line >= QUIET_INTERVAL:
                self._last_line = now
                rate = self.done / max(now - self._started, 1e-9) / 1e6
                print(f"{self.label}: {self.done / 1e6:.0f} MB, {rate:.1f} MB/s", file=sys.stderr, flush=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
