"""``protocol.parse_request`` and the message limits: what is accepted, and the message for what is not."""

from __future__ import annotations

import math

import msgpack
import pytest

from macgpt import protocol
from macgpt.protocol import COMMANDS, ErrorCode, ProtocolError, make_request, parse_request


def _raw(msg: object) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def _refused(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as e:
        parse_request(data)
    return e.value


def test_a_valid_request_is_parsed_with_ints_widened_to_floats() -> None:
    req = parse_request(make_request(7, "sample", {"prompt": "你好", "temperature": 1, "job": 3}))
    assert (req.id, req.cmd) == (7, "sample")
    assert req.args == {"prompt": "你好", "temperature": 1.0, "job": 3}
    assert isinstance(req.args["temperature"], float)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_refuses_unknown_arguments(cmd: str) -> None:
    err = _refused(make_request(1, cmd, {"bogus": 1}))
    assert err.code == ErrorCode.INVALID and "unknown argument(s) ['bogus']" in err.message


@pytest.mark.parametrize(("args", "code", "text"), [
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "nope"}, ErrorCode.UNKNOWN_COMMAND, "unknown command 'nope'"),
    ({"v": 99, "id": 1, "cmd": "ping"}, ErrorCode.VERSION, "protocol version 99 is not supported"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1.5, "cmd": "ping"}, ErrorCode.BAD_MESSAGE, "request id"),
    ({"v": protocol.PROTOCOL_VERSION, "id": "x" * 200, "cmd": "ping"}, ErrorCode.BAD_MESSAGE, "request id"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "ping", "args": [1]}, ErrorCode.INVALID, "args must be a map"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "pause", "args": {}}, ErrorCode.INVALID, "missing argument 'job'"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "pause", "args": {"job": True}}, ErrorCode.INVALID, "got bool"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "pause", "args": {"job": 0}}, ErrorCode.INVALID, "out of range"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "sample", "args": {"prompt": "a", "top_p": math.nan}},
     ErrorCode.INVALID, "must be finite"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "submit", "args": {"config": "tiny", "data": ["a", 3]}},
     ErrorCode.INVALID, "only str items"),
    ({"v": protocol.PROTOCOL_VERSION, "id": 1, "cmd": "submit", "args": {"config": "t" * 65}},
     ErrorCode.INVALID, "too long"),
])
def test_malformed_requests_say_what_is_wrong(args: dict, code: ErrorCode, text: str) -> None:
    err = _refused(_raw(args))
    assert err.code == code and text in err.message, err.message


@pytest.mark.parametrize(("data", "text"), [
    (b"\xc1", "not a valid msgpack message"),
    (_raw([1, 2]), "a request must be a map"),
    (b"\x91" * 20 + b"\x00", "nested deeper"),
    (b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1), "exceeds"),
    (_raw({"v": 1, "s": "x" * (protocol.MAX_STRING + 1)}), "not a valid msgpack message"),
])
def test_undecodable_or_oversized_messages_are_refused(data: bytes, text: str) -> None:
    err = _refused(data)
    assert err.code == ErrorCode.BAD_MESSAGE and text in err.message


def test_worker_events_are_checked_by_kind() -> None:
    assert protocol.parse_worker_event(_raw({"kind": "progress", "phase": "encode", "done": 1.0}))["phase"] == "encode"
    with pytest.raises(ProtocolError):
        protocol.parse_worker_event(_raw({"kind": "exec"}))
    assert protocol.WORKER_PROGRESS_EVENTS <= protocol.WORKER_EVENTS
