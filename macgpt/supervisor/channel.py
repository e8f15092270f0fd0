"""The supervisor's end of the worker channel: one ZeroMQ ROUTER that every worker connects to.

A worker's routing id is ``job-<id>-<pid>``, so messages from a restarted worker never mix with
those of the process it replaced.
"""

from __future__ import annotations

import itertools
from typing import Any

import zmq

from macgpt import protocol
from macgpt.log import get

log = get("macgpt.channel")


class WorkerChannel:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.sock.bind(endpoint)
        self.endpoint = endpoint
        self._rids = itertools.count(1)

    def receive(self) -> list[tuple[bytes, dict[str, Any]]]:
        """Every message waiting now, as (routing id, event)."""
        out = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if len(frames) != 2:
                log.warning("worker_frame_dropped", frames=len(frames))
                continue
            try:
                out.append((frames[0], protocol.parse_worker_event(frames[1])))
            except protocol.ProtocolError as e:
                log.warning("worker_message_dropped", identity=frames[0][:64].decode(errors="replace"),
                            reason=e.message)

    def send(self, identity: bytes, cmd: str, args: dict[str, Any] | None = None) -> int | None:
        """Send a command; returns its request id, or None when the worker is not connected."""
        rid = next(self._rids)
        try:
            self.sock.send_multipart([identity, protocol.pack({"cmd": cmd, "rid": rid, "args": args or {}})],
                                     zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            return None
        return rid

    def close(self) -> None:
        self.sock.close(0)
