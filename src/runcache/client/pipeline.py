"""Running one stage of a stream on its own thread, so download, decompression and extraction overlap.

The GIL is not the limit here: socket reads, zstd and SHA-256 all release it, so a stage per
thread keeps two cores busy where one loop would alternate between them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from runcache.client.interrupt import signals_held

_END = object()


class StageError(Exception):
    """A background stage failed; the original exception is the cause."""


def background(
    source: Iterable[bytes], *, depth: int = 32, name: str = "stage", on_exit: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """Iterate `source` on a thread, handing items over through a bounded queue.

    When the consumer stops early (an unsafe archive, an error), the producer thread notices within
    a fraction of a second and ends; `on_exit` runs on that thread either way (e.g. to close a socket).

    Why two SimpleQueues and a plain flag instead of queue.Queue and an Event: the consumer is the main
    thread, where Ctrl-C/SIGTERM raise KeyboardInterrupt between any two bytecodes, also inside
    threading.Condition.__enter__ right after it took its lock (queue.Queue and Event are built on
    Conditions). That lock then stays taken and the producer blocks on it for good. SimpleQueue's put/get
    are C calls that happen whole or not at all. `slots` holds one token per free place: the producer
    takes one before it hands an item over and the consumer gives it back once it took the item.
    """
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    slots: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(depth):
        slots.put(None)
    stopped = False

    def offer(item: object) -> bool:
        while not stopped:
            try:
                slots.get(timeout=0.2)
            except queue.Empty:
                continue
            items.put(item)
            return True
        return False

    def pump() -> None:
        try:
            for item in source:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as exc:  # delivered to the consumer, which re-raises
            offer(exc)
        finally:
            if on_exit is not None:
                on_exit()

    try:
        with signals_held():
            threading.Thread(target=pump, name=name, daemon=True).start()
        while True:
            item = items.get()
            slots.put(None)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise StageError(f"{name} failed: {item}") from item
            yield item  # type: ignore[misc]
    finally:
        try:
            stopped = True
            slots.put(None)  # a producer waiting for a place wakes now, not at its next timeout, and sees `stopped`
        finally:
            # Again: an interrupt on the way into the first would leave the producer running (and its socket
            # open). Once more is harmless: a stopped producer takes no more places.
            stopped = True
            slots.put(None)
