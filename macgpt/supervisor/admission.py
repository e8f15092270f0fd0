"""Connections to the daemon, kept well below the descriptor limit.

Every client and every `logs -f` follower holds a descriptor in the daemon, and out of
descriptors libzmq aborts the whole process in its listener. So the connections of the control
and event sockets are counted from their monitors; above a cap a client the daemon has not
served yet is refused with an error that says why; should the count still climb to near the
descriptor limit (a flood of idle connections), every listener is closed for a moment, which
drops those connections, and then opened again.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from macgpt.log import get

log = get("macgpt.admission")

MAX_CLIENTS = 4096  # concurrent connections served, descriptors permitting ("thousands of clients")
SHED_HOLD = 2.0  # seconds the listeners stay closed after a flood


@dataclass(frozen=True)
class Caps:
    refuse_at: int  # above this many connections, a client not served before is refused
    shed_at: int  # at this many, every listener is closed for SHED_HOLD seconds


def caps_for(fd_limit: int, fds_in_use: int, wanted: int = MAX_CLIENTS) -> Caps:
    """The caps under a soft descriptor limit with ``fds_in_use`` already open: of what is left
    after a reserve for the database, logs and workers, half may be connections; the other half
    is the margin for what libzmq's I/O thread accepts before the loop can close the listeners."""
    shed = max(8, (fd_limit - fds_in_use - 32) // 2)
    return Caps(refuse_at=max(4, min(wanted, shed - max(8, shed // 8))), shed_at=shed)


def fds_open() -> int:
    """Descriptors this process holds now (Linux and macOS list them under /dev/fd)."""
    try:
        return len(os.listdir("/dev/fd"))
    except OSError:
        return 64
def busy_message(open_now: int, caps: Caps) -> str:
    return (f"the daemon has too many connections ({open_now} open, limit {caps.refuse_at}); "
            "close idle clients or `macgpt logs -f` followers, then try again")


class Admission:
    def __init__(self, listeners: list[tuple[zmq.Socket, str]], caps: Caps,
                 rebind: Callable[[zmq.Socket, str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.listeners, self.caps, self.rebind, self.clock = listeners, caps, rebind, clock
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        self.monitors = [sock.get_monitor_socket(events) for sock in {id(s): s for s, _ in listeners}.values()]
        self.open = 0
        self.refused = 0
        self.sheds = 0
        self.known: OrderedDict[bytes, None] = OrderedDict()  # identities served, newest last
        self.shed_until: float | None = None

    def update(self) -> None:
        for mon in self.monitors:
            while True:
                try:
                    event = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))["event"]
                except zmq.Again:
                    break
                if event == zmq.EVENT_ACCEPTED:
                    self.open += 1
                elif event == zmq.EVENT_DISCONNECTED:
                    self.open = max(0, self.open - 1)

    def admit(self, identity: bytes) -> bool:
        """Whether to serve a request from ``identity``: always one served before, a new one only
        while the count is under the cap."""
        if identity in self.known:
            self.known.move_to_end(identity)
            return True
        self.update()
        if self.open > self.caps.refuse_at:
            self.refused += 1
            if self.refused <= 20 or self.refused % 1000 == 0:
                log.warning("client_refused", connections=self.open, limit=self.caps.refuse_at, count=self.refused)
            return False
        self.known[identity] = None
        while len(self.known) > self.caps.refuse_at:
            self.known.popitem(last=False)
        return True

    def guard(self) -> None:
        """Called each turn of the loop: close every listener when the count nears the descriptor
        limit, open them again after the hold."""
        self.update()
        now = self.clock()
        if self.shed_until is None and self.open >= self.caps.shed_at:
            self.sheds += 1
            log.error("connections_shed", connections=self.open, limit=self.caps.shed_at, hold_s=SHED_HOLD)
            for sock, endpoint in self.listeners:
                try:
                    sock.unbind(endpoint)
                except zmq.ZMQError as e:
                    log.warning("unbind_failed", endpoint=endpoint, error=str(e))
            self.open, self.shed_until = 0, now + SHED_HOLD
            self.known.clear()
        elif self.shed_until is not None and now >= self.shed_until:
            for sock, endpoint in self.listeners:
                self.rebind(sock, endpoint)
            self.shed_until = None
            self.update()
            self.open = 0  # the disconnections of the shed connections arrive late: start over
            log.info("listeners_reopened")

    def close(self) -> None:
        for mon in self.monitors:
            mon.close(0)


def rebind_ipc(sock: zmq.Socket, endpoint: str) -> None:
    """Bind again as at start: the socket file private to the user, and plain (no CURVE) even when
    the socket's TCP endpoint set CURVE since (options apply to the binds that follow them, so
    CURVE is lifted for this bind and put back). The ZAP domain cannot be lifted: the daemon's
    ZAP handler lets in a plain Unix-socket peer of the daemon's own user (see tcpauth)."""
    curve = sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
    old = os.umask(0o077)
    try:
        if curve:
            sock.setsockopt(zmq.CURVE_SERVER, 0)
        path = endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None
        if path and os.path.exists(path):
            os.unlink(path)
        sock.bind(endpoint)
        if path:
            os.chmod(path, 0o600)  # as at start: the umask alone does not reach the socket file
    except (zmq.ZMQError, OSError) as e:
        log.error("rebind_failed", endpoint=endpoint, error=str(e))
    finally:
        os.umask(old)
        if curve:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
