"""The daemon's TCP listener, CURVE-encrypted and authenticated: a ZAP handler (served from the
daemon's loop) lets in only clients whose public key is in ``HOME/keys/authorized_clients``.

The Unix socket stays as it is (NULL security, protected by the 0700 runtime directory): libzmq
copies a socket's security options into each listener when it binds, so the CURVE options set
after the ipc bind apply to the TCP listener only.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import zmq

from macgpt import curvekeys
from macgpt.log import get

log = get("macgpt.tcpauth")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def tcp_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if is_v6(host) else f"tcp://{host}:{port}"


def own_unix_peer(address: bytes) -> bool:
    """Whether a ZAP request's address, ``localhost:UID:GID:PID`` for a Unix-socket peer (from the
    kernel's peer credentials), names the daemon's own user. A plain peer reaches ZAP only over the
    Unix socket bound again after a shed (a plain client of the CURVE TCP endpoint fails the
    handshake before ZAP)."""
    parts = address.decode(errors="replace").split(":")
    return len(parts) == 4 and parts[0] == "localhost" and parts[1] == str(os.getuid())


class TcpAuth:
    """Binds ``sock`` on TCP with CURVE; ``handle`` answers the pending ZAP requests."""

    def __init__(self, ctx: zmq.Context, sock: zmq.Socket, home: Path, host: str, port: int) -> None:
        curvekeys.ensure(home)
        self.allowed = curvekeys.authorized(home)
        self.refused = 0
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self.endpoint = tcp_endpoint(host, port)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curvekeys.server_secret(home))
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        # A domain is needed: with ZAP_ENFORCE_DOMAIN and an empty one, libzmq skips ZAP and lets any key in.
        sock.setsockopt(zmq.ZAP_DOMAIN, b"macgpt")
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: nobody in (never unauthenticated)
        sock.setsockopt(zmq.IPV6, int(is_v6(host)))  # ::1 needs it; 127.0.0.1 stays a plain IPv4 socket
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError:
            self.sock.close(0)
            raise

    def handle(self) -> None:
        for _ in range(100):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(self.answer(frames))

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply (RFC 27): 200 for a CURVE client with an authorized key, 400 otherwise."""
        version, request_id = [*frames, b"", b""][:2]
        ok = (len(frames) >= 7 and frames[5] == b"CURVE" and frames[6] in self.allowed) or (
            len(frames) >= 6 and frames[5] == b"NULL" and own_unix_peer(frames[3]))
        if not ok:
            self.refused += 1
            if self.refused <= 20 or self.refused % 1000 == 0:
                log.warning("tcp_client_refused", mechanism=(frames[5] if len(frames) > 5 else b"").decode(
                    errors="replace"), address=(frames[3] if len(frames) > 3 else b"").decode(errors="replace"),
                    count=self.refused)
        return [version, request_id, b"200" if ok else b"400", b"OK" if ok else b"not an authorized key", b"", b""]

    def close(self) -> None:
        self.sock.close(0)
