"""Ctrl-C and SIGTERM during a save or restore: one path, one line, nothing left behind.

A cancelled CI job gets SIGTERM, a person presses Ctrl-C; both become KeyboardInterrupt in the main
thread, where the transfer undoes its own work (a save cancels its reservation on the server, a
restore leaves the destination as it was) and re-raises `Interrupted` saying what was undone. The
command line turns that into one line on stderr and exit code 130, the shell's code for SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """A transfer stopped by SIGINT/SIGTERM after cleaning up; `message` says what happened to it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def interrupted_line(exc: KeyboardInterrupt) -> str:
    detail = exc.message if isinstance(exc, Interrupted) else ""
    return f"runcache: interrupted; {detail}" if detail else "runcache: interrupted"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises KeyboardInterrupt in the main thread, as SIGINT does.

    SIGINT keeps Python's own handler (or stays ignored when the process was started with it ignored,
    as shells do for background jobs); a SIGTERM that was ignored stays ignored too."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then are delivered as they would have been.

    For work that must not stop half-way. An extraction's commit and cleanup: a KeyboardInterrupt between
    a rename and its undo record would leave a half-moved destination, and one in the middle of removing
    staging would leave it behind. Starting a thread: Thread.start() waits on a Condition, and an interrupt
    just after that took its lock would keep the lock taken and the new thread from ever running. Only the
    main thread receives signals, so elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, object] = {}

    def hold(signum: int, _frame: object) -> None:
        held.append(signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is signal.SIG_IGN or handler is None:  # ignored stays ignored; None: not Python's to set
                continue
            previous[sig] = handler
            signal.signal(sig, hold)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)
