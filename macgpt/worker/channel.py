"""The worker's end of its channel to the supervisor: a ZeroMQ DEALER carrying msgpack maps.

Events go out with the job id and a timestamp; commands come in between steps. The worker
counts as orphaned when its parent process changed (the supervisor died: it was re-parented).
Under torchrun the supervisor's child is torchrun's agent: the rank that speaks for the machine
takes the agent's identity and watches the agent's parent. Ranks that do not speak have a
``NullLink``; a worker started by hand, with no supervisor, prints its events (``StdoutLink``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import zmq

from macgpt import protocol


def _parent_of(pid: int) -> int | None:
    if pid == os.getpid():
        return os.getppid()
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


class ZmqLink:
    def __init__(self, endpoint: str, job_id: int, send_timeout_ms: int = 2000) -> None:
        self.job_id = job_id
        # The process the supervisor started and watches: this one, or torchrun's agent above it.
        self.watched = os.getppid() if os.environ.get("TORCHELASTIC_RUN_ID") else os.getpid()
        self.ppid = _parent_of(self.watched)
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, f"job-{job_id}-{self.watched}".encode())
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        self.sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        self.sock.connect(endpoint)

    def send(self, kind: str, **fields: Any) -> None:
        msg = {"kind": kind, "job": self.job_id, "t": time.time(), **fields}
        try:
            self.sock.send(protocol.pack(msg))
        except zmq.Again:
            pass  # the supervisor is not reading; orphan detection decides what happens next

    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return out
        while True:
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out.append(protocol.parse_worker_command(data))
            except protocol.ProtocolError:
                continue  # the supervisor is trusted; a garbled frame is dropped

    def orphaned(self) -> bool:
        return _parent_of(self.watched) != self.ppid

    def close(self) -> None:
        """Close and wait (up to the linger time) until every queued event has been handed over."""
        self.sock.close()
        self.ctx.term()


class NullLink:
    """A rank that does not speak for its machine: its events go nowhere, no command reaches it."""

    def send(self, kind: str, **fields: Any) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        return []

    def orphaned(self) -> bool:
        return False

    def close(self) -> None:
        pass


class StdoutLink(NullLink):
    """A worker with no supervisor (a bare torchrun line): one JSON object per event on stdout."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def send(self, kind: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"kind": kind, "job": self.job_id, "t": time.time(), **fields},
                                    ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        time.sleep(timeout_ms / 1000)
        return []
