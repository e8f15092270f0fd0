"""An iterable read ahead by a thread of its own, so reading and parsing overlap the consumer.

Made for encoding a corpus: the encoder (``tokenizers``' ``encode_batch``) releases the GIL, so
while it runs, the reader thread reads the next lines and parses their JSON. Items come in
order; an exception in the reader (a ``DataError`` naming file:line) is raised in the consumer
at the point it happened; a consumer that stops early stops the reader too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterable[T], chunk: int = 256, depth: int = 16) -> Iterator[T]:
    """``items`` in order, read ahead by up to ``depth`` chunks of ``chunk`` items."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x: object) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        buf: list[T] = []
        try:
            for x in items:
                buf.append(x)
                if len(buf) >= chunk:
                    if not put(buf):
                        return
                    buf = []
        except BaseException as e:  # handed to the consumer after the items before it, raised there
            put(buf) and put(e)
            return
        put(buf) and put(_DONE)

    reader = threading.Thread(target=read, name="prefetch", daemon=True)
    reader.start()
    try:
        while True:
            got = q.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield from got  # type: ignore[misc]
    finally:
        stop.set()
        reader.join(5)
