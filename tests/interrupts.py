"""Ctrl-C at every bytecode: the machinery shared by the restore's and the save's interrupt tests.

SIGINT/SIGTERM become KeyboardInterrupt in the main thread between any two bytecodes, also inside a
Python-level lock's __enter__ right after it took the lock; a worker then blocks on it for good and the
cleanup that waits for that worker hangs. Random signals find such a window once in hundreds of runs, so
the tests raise KeyboardInterrupt at *every* bytecode the main thread runs in the watched code, the way
the interpreter delivers a signal (a trace function raising at an `opcode` event), except where the code
holds signals itself (client/interrupt.py's `signals_held`) and at NOPs (see `interrupt_at`).
"""

from __future__ import annotations

import dis
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

HANG_SECONDS = 30  # one interrupted run takes milliseconds
NOP = dis.opmap["NOP"]
WHERE: list[str] = []  # file:function:line of the last injected interrupt


def signals_held() -> bool:
    """interrupt.signals_held swaps in its own handler; a real signal there waits, so none is raised."""
    handler = signal.getsignal(signal.SIGINT)
    return getattr(handler, "__qualname__", "").startswith("signals_held")


def interrupt_at(n: int, watched: Callable[[FrameType], bool]) -> Callable[[], int]:
    """Trace this thread, raising KeyboardInterrupt at the n-th opcode run in a watched frame (n=0: never);
    the function returned stops tracing and says how many such opcodes ran.

    Not at a NOP: the interpreter never looks for a pending signal there, and the NOPs that mark a `try:`
    line lie outside the range its handlers cover, so an exception raised at one by a trace function skips
    `finally` blocks no real signal could skip."""
    seen = 0
    WHERE.clear()

    def local(frame: FrameType, event: str, _arg: object) -> object:
        nonlocal seen
        if event == "opcode" and frame.f_code.co_code[frame.f_lasti] != NOP and not signals_held():
            seen += 1
            if seen == n:
                code = frame.f_code
                WHERE.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}:{frame.f_lineno}")
                raise KeyboardInterrupt(f"injected at opcode {n}")
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> object:
        if not watched(frame):
            return None  # other frames run untraced (only their calls are seen)
        frame.f_trace_opcodes = True
        return local(frame, event, arg)

    def count() -> int:
        sys.settrace(None)
        return seen

    sys.settrace(tracer)
    return count


def rearm() -> None:
    """A hang is the failure looked for: dump every thread's stack and end the run rather than wait forever."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)


@contextmanager
def hang_guarded() -> Iterator[None]:
    rearm()
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        sys.settrace(None)


def open_fds() -> set[int]:
    """This process's descriptors, without the one listing /proc/self/fd used (closed again by now)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue
        fds.add(int(name))
    return fds


def threads_left(*prefixes: str, wait: float = 5.0, ignore: frozenset[threading.Thread] = frozenset()) -> list[str]:
    """Names of threads starting with `prefixes` still alive after up to `wait` seconds, other than those in
    `ignore` (threads that were there before: another test's are not this one's leak)."""
    deadline = time.monotonic() + wait
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith(prefixes) and t not in ignore]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)
