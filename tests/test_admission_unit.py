"""Connection caps under a descriptor limit, and binding the Unix socket again after a shed
without the CURVE and ZAP options of the daemon's TCP endpoint (a real ROUTER, real clients)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import zmq

from macgpt.supervisor.admission import MAX_CLIENTS, Admission, caps_for, rebind_ipc
from macgpt.supervisor.tcpauth import TcpAuth, own_unix_peer


def test_caps_leave_half_of_the_free_descriptors_as_margin_and_refuse_below_the_shed() -> None:
    small = caps_for(256, 45)
    assert small.shed_at == (256 - 45 - 32) // 2 and small.refuse_at < small.shed_at
    assert small.shed_at + 45 + small.shed_at < 256  # a burst as large again still finds descriptors
    big = caps_for(65536, 50)
    assert big.refuse_at == MAX_CLIENTS and big.shed_at > 30000
    assert caps_for(65536, 50, wanted=40).refuse_at == 40
    assert caps_for(40, 60).refuse_at >= 4  # never zero, however bad


def test_a_client_served_before_is_admitted_over_the_cap_a_new_one_is_not(tmp_path: Path) -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path}/c.sock"
    router.bind(endpoint)
    adm = Admission([(router, endpoint)], caps_for(65536, 50, wanted=4), rebind_ipc)
    clients = []
    try:
        assert adm.admit(b"early")
        for _ in range(8):
            c = ctx.socket(zmq.DEALER)
            c.setsockopt(zmq.LINGER, 0)
            c.connect(endpoint)
            clients.append(c)
        for _ in range(100):
            adm.update()
            if adm.open >= 8:
                break
            time.sleep(0.02)
        assert adm.open == 8
        assert adm.admit(b"early") and not adm.admit(b"late") and adm.refused == 1
        for c in clients:
            c.close(0)
        for _ in range(100):
            adm.update()
            if adm.open == 0:
                break
            time.sleep(0.02)
        assert adm.open == 0 and adm.admit(b"late")
    finally:
        adm.close()
        router.close(0)


def test_rebinding_after_a_tcp_curve_bind_keeps_the_unix_socket_plain_for_its_own_user(tmp_path: Path) -> None:
    ctx = zmq.Context.instance()
    zap = ctx.socket(zmq.REP)
    zap.setsockopt(zmq.LINGER, 0)
    zap.bind("inproc://zeromq.zap.01")
    auth = TcpAuth.__new__(TcpAuth)  # its ZAP answers alone, without binding TCP
    auth.allowed, auth.refused = set(), 0
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/c.sock"
    router.bind(endpoint)
    _public, secret = zmq.curve_keypair()
    router.setsockopt(zmq.CURVE_SECRETKEY, secret)
    router.setsockopt(zmq.CURVE_SERVER, 1)
    router.setsockopt(zmq.ZAP_DOMAIN, b"macgpt")
    router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    router.unbind(endpoint)
    rebind_ipc(router, endpoint)
    assert router.getsockopt(zmq.MECHANISM) == zmq.CURVE and router.getsockopt(zmq.ZAP_DOMAIN) == b"macgpt"
    assert oct((tmp_path / "c.sock").stat().st_mode & 0o777) == "0o600"
    plain = ctx.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(endpoint)
    plain.send(b"hello")
    assert zap.poll(5000)
    request = zap.recv_multipart()
    assert request[5] == b"NULL" and own_unix_peer(request[3]), request
    assert not own_unix_peer(b"localhost:%d:0:1" % (os.getuid() + 1)) and not own_unix_peer(b"127.0.0.1:5555")
    zap.send_multipart(auth.answer(request))
    assert router.poll(5000) and router.recv_multipart()[-1] == b"hello"  # in: the owner, over the Unix socket
    plain.close(0)
    router.close(0)
    zap.close(0)
