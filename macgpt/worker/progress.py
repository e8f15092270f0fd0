"""Progress reports for work that is not a training step: imports, tokenizer training, encoding,
evaluation, sampling. The supervisor's hang detection counts each report as progress, so a slow
start or a long evaluation is never mistaken for a hang, while a real stall (nothing advancing)
still is: a report goes out only when its counter moved.

Reports are "progress" events {phase, done, total|None, unit, rate|None, eta|None}, at most one
per ``every`` seconds per phase (and the last one of a phase always).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

Send = Callable[..., None]  # link.send(kind, **fields)
T = TypeVar("T")
EVERY = 0.5  # seconds between two reports of one phase


class Reporter:
    """One phase's counter; ``advance`` reports when due and only when it moved."""

    def __init__(self, send: Send, phase: str, total: int | None = None, unit: str = "items",
                 every: float = EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.send, self.phase, self.total, self.unit, self.every, self.clock = send, phase, total, unit, every, clock
        self.done = 0
        self._start = clock()
        self._sent_at = -1e9
        self._sent_done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.clock() - self._sent_at >= self.every:
            self._report()

    def finish(self) -> None:
        if self.done != self._sent_done:
            self._report()

    def _report(self) -> None:
        if self.done == self._sent_done:
            return  # nothing moved: not progress
        now = self.clock()
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else None
        eta = (self.total - self.done) / rate if rate and self.total is not None else None
        self.send("progress", phase=self.phase, done=self.done, total=self.total, unit=self.unit,
                  rate=round(rate, 3) if rate else None, eta=round(eta, 2) if eta is not None else None)
        self._sent_at, self._sent_done = now, self.done


def counted(items: Iterable[T], reporter: Reporter | None) -> Iterator[T]:
    """``items`` unchanged, advancing ``reporter`` once per item taken."""
    for item in items:
        yield item
        if reporter is not None:
            reporter.advance()
    if reporter is not None:
        reporter.finish()


@contextmanager
def watching_imports(send: Send, every: float = EVERY) -> Iterator[None]:
    """Report the number of loaded modules while the block imports (``import torch`` takes seconds
    on a busy machine). A thread of its own; the block must not use ``send`` itself meanwhile
    (a ZeroMQ socket is not shared between threads at the same time)."""
    stop = threading.Event()
    reporter = Reporter(send, "import", unit="modules", every=0.0)

    def watch() -> None:
        while True:  # the first report at once: the supervisor hears of the start-up right away
            n = len(sys.modules)
            if n > reporter.done:
                reporter.advance(n - reporter.done)
            if stop.wait(every):
                return

    thread = threading.Thread(target=watch, name="import-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def noop(*_args: Any, **_fields: Any) -> None:
    """A ``Send`` that reports nowhere (offline use of the worker's functions)."""
