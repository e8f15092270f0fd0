"""Job events: numbered per job, published at once on the PUB socket, stored in batches.

``flush`` writes the buffered events in one transaction; the daemon flushes every loop turn
and before it answers a history request, so history plus the live stream never leave a gap.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import zmq

from macgpt import protocol
from macgpt.log import get
from macgpt.supervisor.store import JobStore

log = get("macgpt.bus")


class EventBus:
    def __init__(self, store: JobStore, pub: zmq.Socket) -> None:
        self.store = store
        self.pub = pub
        self._seq: dict[int, int] = {}
        self._buffer: list[tuple[int, int, float, str, dict[str, Any]]] = []
        self.on_error: Callable[[sqlite3.Error], None] | None = None  # the daemon counts it for `status`

    @property
    def unstored(self) -> int:
        """Events published but not yet in the database (kept for the next flush)."""
        return len(self._buffer)

    def emit(self, job: int, kind: str, data: dict[str, Any]) -> int:
        seq = self._seq.get(job)
        if seq is None:
            seq = self.store.last_seq(job)
        seq += 1
        self._seq[job] = seq
        t = time.time()
        self._buffer.append((job, seq, t, kind, data))
        try:
            self.pub.send_multipart(
                [protocol.event_topic(job, kind), protocol.pack({"seq": seq, "job": job, "kind": kind, "t": t, "data": data})],
                zmq.NOBLOCK,
            )
        except zmq.Again:
            pass  # a slow subscriber; it recovers the gap from history
        return seq

    def flush(self) -> None:
        """Store the buffered events; on a database error they stay buffered for the next try."""
        if self._buffer:
            try:
                self.store.append_events(self._buffer)
            except sqlite3.Error as e:
                if self.on_error is not None:
                    self.on_error(e)
                else:
                    log.error("events_not_stored", error=str(e), buffered=len(self._buffer))
                return
            self._buffer = []

    def forget(self, job: int) -> None:
        """A removed job: drop its event numbering."""
        self._seq.pop(job, None)
