"""Talking to the daemon: requests with a timeout (never hangs on a dead daemon), streamed
replies, and following a job's events with no gap and no duplicate."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from macgpt import protocol
from macgpt.paths import Layout
from macgpt.protocol import FINISHED
from macgpt.supervisor.lock import holder, read_runtime


class DaemonNotRunning(Exception):
    def __init__(self, lay: Layout, detail: str = "") -> None:
        super().__init__(
            f"the macgpt daemon is not running{detail} (home {lay.home}); start it with `macgptd start`"
        )


class RemoteError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, lay: Layout, timeout: float = 10.0) -> None:
        self.lay = lay
        self.timeout = timeout
        self.ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-"

    def _find_daemon(self) -> None:
        """Raise unless a daemon holds the home's lock; use the runtime directory it listens in."""
        if holder(self.lay.lock) is None:
            raise DaemonNotRunning(self.lay)
        runtime = read_runtime(self.lay.lock)
        if runtime is not None and runtime != self.lay.runtime:
            self.lay = dataclasses.replace(self.lay, runtime=runtime)

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            tcp = os.environ.get("MACGPT_TCP")  # HOST:PORT of a daemon's CURVE TCP listener
            if not tcp:
                self._find_daemon()
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
            if tcp:
                _curve_connect(sock, self.lay, tcp)
            else:
                sock.connect(self.lay.control)
            self._sock = sock
        return self._sock

    def call(
        self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None,
        on_partial: Callable[[Any], None] | None = None,
    ) -> Any:
        """Send one request and wait for its answer; ``timeout`` counts from the last message
        received, so a long streamed answer is fine while pieces keep coming."""
        sock = self._socket()
        req_id = f"{self._prefix}{next(self._ids)}"
        sock.send(protocol.make_request(req_id, cmd, args))
        wait_ms = int((timeout or self.timeout) * 1000)
        while True:
            if not sock.poll(wait_ms, zmq.POLLIN):
                raise DaemonNotRunning(self.lay, f" or not answering (no reply to {cmd!r} in {wait_ms / 1000:g}s)")
            msg = protocol.unpack(sock.recv())
            if not isinstance(msg, dict) or msg.get("id") != req_id:
                continue  # an answer to an earlier request that timed out
            if not msg.get("ok"):
                err = msg.get("error") or {}
                raise RemoteError(str(err.get("code")), str(err.get("message")))
            if msg.get("more"):
                if on_partial is not None:
                    on_partial(msg.get("result"))
                continue
            return msg.get("result")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    # -- events ---------------------------------------------------------------------------------
    def follow(self, job: int, from_seq: int = 0, idle_check: float = 1.0) -> Iterator[dict[str, Any]]:
        """Every event of ``job`` after ``from_seq`` in order, history first, then live, until the
        job finishes. Subscribes before reading history; a gap in the live stream (or silence)
        is filled from history, and an event already seen is skipped."""
        self._find_daemon()
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.connect(self.lay.events)
        sub.setsockopt(zmq.SUBSCRIBE, protocol.job_topic_prefix(job))
        last = from_seq
        try:
            state, events = self._history(job, last)
            for ev in events:
                last = ev["seq"]
                yield ev
            while state not in FINISHED:
                if sub.poll(int(idle_check * 1000), zmq.POLLIN):
                    _topic, payload = sub.recv_multipart()
                    ev = protocol.unpack(payload)
                    if ev["seq"] <= last:
                        continue
                    if ev["seq"] == last + 1:
                        last = ev["seq"]
                        if ev["kind"] == "state":
                            state = ev["data"]["state"]
                        yield ev
                        continue
                state, events = self._history(job, last)  # a gap, or quiet: ask what we missed
                for ev in events:
                    last = ev["seq"]
                    yield ev
        finally:
            sub.close(0)

    def _history(self, job: int, after: int) -> tuple[str, list[dict[str, Any]]]:
        events: list[dict[str, Any]] = []
        while True:
            r = self.call("history", {"job": job, "after": after, "limit": 5000})
            events.extend({**ev, "job": job} for ev in r["events"])  # as live events carry it
            # a page ends at 5,000 events or half a MiB, whichever comes first; last_seq says if more exist
            if not r["events"] or r["events"][-1]["seq"] >= r.get("last_seq", 0):
                return r["state"], events
            after = r["events"][-1]["seq"]


def _curve_connect(sock: zmq.Socket, lay: Layout, host_port: str) -> None:
    """Connect over TCP, authenticating with the client keys in the home (``HOME/keys``)."""
    from macgpt.curvekeys import CurveKeyError, client
    from macgpt.supervisor.tcpauth import is_v6, tcp_endpoint

    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise DaemonNotRunning(lay, f" at MACGPT_TCP={host_port!r} (expected HOST:PORT)")
    try:
        keys = client(lay.home)
    except CurveKeyError as e:
        raise DaemonNotRunning(lay, f" over TCP: no usable client key ({e})") from None
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    host = host.strip("[]")
    sock.setsockopt(zmq.IPV6, int(is_v6(host)))
    sock.connect(tcp_endpoint(host, int(port)))
