"""Running one stage of a stream on its own thread, so download, decompression and extraction overlap.

The GIL is not the limit here: socket reads, zstd and SHA-256 all release it, so a stage per
thread keeps two cores busy where one loop would alternate between them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_END = object()


class StageError(Exception):
    """A background stage failed; the original exception is the cause."""


def background(
    source: Iterable[bytes], *, depth: int = 32, name: str = "stage", on_exit: Callable[[], None] | None = None
) -> Iterator[bytes]:
    """Iterate `source` on a thread, handing items over through a bounded queue.

    When the consumer stops early (an unsafe archive, an error), the producer thread notices within
    a fraction of a second and ends; `on_exit` runs on that thread either way (e.g. to close a socket).
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
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

    threading.Thread(target=pump, name=name, daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise StageError(f"{name} failed: {item}") from item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
