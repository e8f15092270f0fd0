"""The worker's end of its channel to the supervisor: a ZeroMQ DEALER carrying msgpack maps.

Events go out with the job id and a timestamp; commands come in between steps. The worker
counts as orphaned when its parent process changed (the supervisor died: it was re-parented).
"""

from __future__ import annotations

import os
import time
from typing import Any

import zmq

from macgpt import protocol


class ZmqLink:
    def __init__(self, endpoint: str, job_id: int, send_timeout_ms: int = 2000) -> None:
        self.job_id = job_id
        self.ppid = os.getppid()
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, f"job-{job_id}-{os.getpid()}".encode())
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
        return os.getppid() != self.ppid

    def close(self) -> None:
        """Close and wait (up to the linger time) until every queued event has been handed over."""
        self.sock.close()
        self.ctx.term()
