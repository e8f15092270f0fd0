"""The wire contract between client, daemon and worker: versions, states, commands, validation.

Imports only the standard library and msgpack (never torch or zmq), so every side can use it.

Control channel (client DEALER -> daemon ROUTER), msgpack maps:
    request  {v, id, cmd, args}
    reply    {id, ok: true, result}  |  {id, ok: false, error: {code, message}}
    partial  {id, ok: true, more: true, result}   (streamed pieces, e.g. sampled text)
Events (daemon PUB): two frames, topic ``job.<id>.<kind>`` (or ``daemon.<kind>``) and a map
    {seq, job, kind, t, data}.
Worker channel (worker DEALER -> supervisor ROUTER): the worker sends {kind, ...fields};
the supervisor sends {cmd, rid, args}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import msgpack

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # the sockets drop anything larger (ZMQ_MAXMSGSIZE)
MAX_DEPTH = 8
MAX_STRING = 64 * 1024
MAX_ITEMS = 4096


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

# Every allowed state change; anything else is refused.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # QUEUED -> STARTING when the scheduler picks it; -> PAUSED/CANCELLED by the user
    JobState.QUEUED: frozenset({JobState.STARTING, JobState.PAUSED, JobState.CANCELLED,
                                JobState.FAILED}),  # FAILED: a job it runs --after failed
    # STARTING -> RUNNING when the worker reports its first step; -> QUEUED when the daemon stops
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.PAUSED,
                                  JobState.FAILED, JobState.CANCELLED, JobState.COMPLETED}),
    # RUNNING -> STARTING when a crashed or stopped worker is started again
    JobState.RUNNING: frozenset({JobState.PAUSED, JobState.QUEUED, JobState.STARTING,
                                 JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.STARTING, JobState.FAILED,
                                JobState.CANCELLED, JobState.COMPLETED}),
    JobState.COMPLETED: frozenset({JobState.QUEUED}),  # `macgpt extend`: train further
    JobState.FAILED: frozenset({JobState.QUEUED}),  # retry
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # retry
}


# -- how a worker's end becomes a job state -----------------------------------------------------
class WorkerExit(IntEnum):
    """A worker process's exit code (``worker/process.py``); any other code is a crash."""

    OK = 0  # completed, or stopped on request after its checkpoint
    JOB_INVALID = 2  # the job itself is wrong (bad data, incompatible checkpoint): restarting will not help
    DISK = 3  # a checkpoint could not be written (a full disk): the job waits for the user to free space


class Ended(StrEnum):
    """How a worker process ended, as its runner saw it (``supervisor/runner.py``)."""

    COMPLETED = "completed"  # exit 0 after its "completed" event
    INVALID = "invalid"  # WorkerExit.JOB_INVALID after a "failed" event that says a retry will not help
    DISK = "disk"  # WorkerExit.DISK after a "failed" event whose cause is the disk
    STOPPED = "stopped"  # anything else, once its supervisor asked it to stop or killed it (a StopReason)
    CRASHED = "crashed"  # anything else


class StopReason(StrEnum):
    """Why a supervisor stops or kills a worker; sent to the worker with the stop command."""

    CANCEL = "cancel"  # the user cancelled the job
    SHUTDOWN = "daemon stopping"  # the daemon stops; the job continues at its next start
    INTERRUPT = "interrupted"  # Ctrl+C on `macgpt train`; the same command continues it
    EVICT = "governor:evict"  # memory stays high: stopped with a checkpoint until memory comes back
    MEMORY_KILL = "governor:memory-kill"  # memory over the hard limit: killed, restarted smaller
    HANG = "governor:hang"  # no progress for hang_seconds: killed and restarted, counted as a crash
    GOVERNOR_FAIL = "governor:failed"  # the governor gave up on the job (too many memory kills)


class Outcome(StrEnum):
    """What a worker's end, or a restart timer, means for its job. Decided in one place,
    ``supervisor/lifecycle.py``; the daemon makes it a state (``OUTCOME_STATES``), `macgpt train`
    an exit code (``client/local.py``)."""

    COMPLETED = "completed"  # the worker finished every step and wrote the final model
    INVALID = "invalid"  # Ended.INVALID: the job cannot run as it is
    DISK_FULL = "disk_full"  # Ended.DISK: a checkpoint could not be written
    CANCELLED = "cancelled"  # the user cancelled it (the worker checkpointed first)
    INTERRUPTED = "interrupted"  # its supervisor stops (daemon stop, Ctrl+C): continues at the next start
    RESTARTING = "restarting"  # crashed, hung or killed for memory: a new worker after a back-off
    RESTARTED = "restarted"  # the back-off is over and a new worker starts (not while the user pauses it)
    WAITING_FOR_MEMORY = "waiting_for_memory"  # evicted: it starts again when memory comes back
    MEMORY_BACK = "memory_back"  # memory came back for an evicted job
    GAVE_UP = "gave_up"  # crashed too often without saving progress, or failed by the governor
    UNEXPECTED = "unexpected"  # stopped for a reason nobody owns: a bug if ever seen


# The state each outcome gives the job (the store checks it against TRANSITIONS).
OUTCOME_STATES: dict[Outcome, JobState] = {
    Outcome.COMPLETED: JobState.COMPLETED,  # RUNNING -> COMPLETED, with the final model and losses
    Outcome.INVALID: JobState.FAILED,  # STARTING/RUNNING -> FAILED, the worker's message as error
    Outcome.DISK_FULL: JobState.PAUSED,  # RUNNING -> PAUSED ("disk: ..."), `macgpt resume` once space is free
    Outcome.CANCELLED: JobState.CANCELLED,  # any live state -> CANCELLED ("user")
    Outcome.INTERRUPTED: JobState.QUEUED,  # -> QUEUED at the front: the next daemon resumes it first
    Outcome.RESTARTING: JobState.STARTING,  # RUNNING -> STARTING ("restarting in Ns ...")
    Outcome.RESTARTED: JobState.STARTING,  # STARTING -> STARTING ("restart")
    Outcome.WAITING_FOR_MEMORY: JobState.PAUSED,  # RUNNING -> PAUSED ("memory: ...")
    Outcome.MEMORY_BACK: JobState.QUEUED,  # PAUSED -> QUEUED at the front
    Outcome.GAVE_UP: JobState.FAILED,  # -> FAILED ("crashed N times: ..." or the governor's reason)
    Outcome.UNEXPECTED: JobState.FAILED,  # -> FAILED ("the worker stopped unexpectedly (...)")
}


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"  # not msgpack, not a map, too deep or too large
    VERSION = "version_mismatch"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID = "invalid_argument"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # e.g. a refused state transition
    UNAVAILABLE = "unavailable"  # e.g. the worker cannot answer right now
    INTERNAL = "internal"


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- encoding ----------------------------------------------------------------------------------
def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Decode one message with size limits; ProtocolError(BAD_MESSAGE) on anything malformed."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=MAX_STRING, max_bin_len=MAX_STRING,
            max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not a valid msgpack message: {type(e).__name__}") from None
    _check_depth(obj, 0)
    return obj


def _check_depth(obj: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_depth(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_depth(v, depth + 1)


# -- argument specs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    kind: type | tuple[type, ...]
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    max_len: int = 4096  # strings and lists
    items: type | None = None  # element type of a list
    zero_or_at_least: float | None = None  # e.g. a temperature: 0 (greedy) or >= 0.01, never 1e-300

    def check(self, cmd: str, name: str, value: Any) -> Any:
        where = f"{cmd}: argument {name!r}"
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ProtocolError(ErrorCode.INVALID, f"{where} must be {_names(kinds)}, got bool")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise ProtocolError(ErrorCode.INVALID, f"{where} must be {_names(kinds)}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(ErrorCode.INVALID, f"{where} must be finite")
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and ((self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi)):
            raise ProtocolError(ErrorCode.INVALID, f"{where}={value} is out of range [{self.lo}, {self.hi}]")
        if numeric and self.zero_or_at_least is not None and 0 < value < self.zero_or_at_least:
            raise ProtocolError(ErrorCode.INVALID, f"{where}={value} must be 0 or at least {self.zero_or_at_least}")
        if isinstance(value, str | list) and len(value) > self.max_len:
            raise ProtocolError(ErrorCode.INVALID, f"{where} is too long ({len(value)} > {self.max_len})")
        if isinstance(value, list) and self.items is not None:
            for item in value:
                if not isinstance(item, self.items):
                    raise ProtocolError(ErrorCode.INVALID, f"{where} must hold only {self.items.__name__} items")
        return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join("map" if k is dict else k.__name__ for k in kinds)


JOB = Arg(int, required=True, lo=1, hi=2**62)
OPT_JOB = Arg((int, type(None)), lo=1, hi=2**62)
PERCENT = Arg((float, type(None)), lo=1, hi=100)

# Each control command and its arguments. The handler's docstring in supervisor/handlers.py is its spec.
COMMANDS: dict[str, dict[str, Arg]] = {
    "ping": {},
    "daemon_info": {},
    "submit": {
        "config": Arg(str, required=True, max_len=64),
        "overrides": Arg(dict),
        "data": Arg(list, max_len=256, items=str),
        "eval_data": Arg(list, max_len=256, items=str),
        "name": Arg(str, max_len=64),
        "limits": Arg(dict),
        "manifest": Arg(dict),  # {"train", "eval"}: the files the client validated (data.sources)
        "after": Arg(list, max_len=100, items=int),  # job ids that must complete first (issue 13)
        "hooks": Arg(dict),  # {notify?: bool, on_finish?: str}: see supervisor/notify.py
    },
    "status": {"job": OPT_JOB},
    "history": {"job": JOB, "after": Arg(int, lo=0, hi=2**62), "limit": Arg(int, lo=1, hi=10_000)},
    "pause": {"job": JOB},
    "resume": {"job": JOB},
    "cancel": {"job": JOB},
    "checkpoint": {"job": JOB},
    "sample": {
        "job": OPT_JOB,
        "prompt": Arg(str, required=True, max_len=MAX_STRING),
        "max_new_tokens": Arg(int, lo=1, hi=4096),
        "temperature": Arg(float, lo=0.0, hi=10.0, zero_or_at_least=0.01),
        "top_k": Arg(int, lo=0, hi=1_000_000),
        "top_p": Arg(float, lo=0.0, hi=1.0),
        "repetition_penalty": Arg(float, lo=0.5, hi=10.0),
        "seed": Arg(int, lo=0, hi=2**63 - 1),
    },
    "limits": {"max_cpu": PERCENT, "max_memory": PERCENT,
               "on_battery": Arg((str, type(None)), max_len=16)},
    "shutdown": {},
    # housekeeping (issue 13): forget finished jobs and their files; continue a cancelled or failed job
    "remove": {"jobs": Arg(list, required=True, max_len=1000, items=int)},
    "requeue": {"job": JOB},
    "extend": {"job": JOB, "steps": Arg(int, required=True, lo=1, hi=10_000_000)},
}


# What ``sample`` uses for an argument not given: the CLI's defaults and the worker's ``SampleParams``.
SAMPLE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "temperature": 0.8, "top_k": 50, "top_p": 0.95,
                                   "repetition_penalty": 1.1}


@dataclass(frozen=True)
class Request:
    id: Any
    cmd: str
    args: dict[str, Any]


def make_request(req_id: Any, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": req_id, "cmd": cmd, "args": args or {}})


def parse_request(data: bytes) -> Request:
    """Decode and validate a control request; ProtocolError says what is wrong."""
    msg = unpack(data)
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"a request must be a map, got {type(msg).__name__}")
    req_id = msg.get("id")
    if (req_id is not None and not isinstance(req_id, int | str)) or (
        isinstance(req_id, str) and len(req_id) > 128
    ):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "request id must be an integer or a short string")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.VERSION,
            f"protocol version {msg.get('v')!r} is not supported; this daemon speaks version "
            f"{PROTOCOL_VERSION} (upgrade or restart the daemon and client together)",
        )
    cmd = msg.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        shown = cmd if isinstance(cmd, str) and len(cmd) < 40 else type(cmd).__name__
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"unknown command {shown!r}; known: {', '.join(COMMANDS)}")
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.INVALID, f"{cmd}: args must be a map")
    spec = COMMANDS[cmd]
    unknown = set(args) - set(spec)
    if unknown:
        raise ProtocolError(ErrorCode.INVALID, f"{cmd}: unknown argument(s) {sorted(map(str, unknown))}")
    checked = {}
    for name, arg in spec.items():
        if name in args:
            checked[name] = arg.check(cmd, name, args[name])
        elif arg.required:
            raise ProtocolError(ErrorCode.INVALID, f"{cmd}: missing argument {name!r}")
    return Request(req_id, cmd, checked)


def reply_ok(req_id: Any, result: Any, more: bool = False) -> bytes:
    msg: dict[str, Any] = {"id": req_id, "ok": True, "result": result}
    if more:
        msg["more"] = True
    return pack(msg)


def reply_error(req_id: Any, code: ErrorCode, message: str) -> bytes:
    return pack({"id": req_id, "ok": False, "error": {"code": str(code), "message": message}})


# -- events --------------------------------------------------------------------------------------
def event_topic(job: int | None, kind: str) -> bytes:
    return (f"job.{job}.{kind}" if job is not None else f"daemon.{kind}").encode()


def job_topic_prefix(job: int) -> bytes:
    return f"job.{job}.".encode()


# -- worker channel ------------------------------------------------------------------------------
WORKER_EVENTS = frozenset({
    "hello", "setup", "started", "metrics", "heartbeat", "sample", "sample_chunk", "eval",
    "checkpoint", "paused", "resumed", "warning", "error", "reply", "completed", "stopped", "failed",
    "progress",
})
# Work that is not a training step but is progress all the same (hang detection counts it):
# "progress" is {kind, phase, done, total|None, unit, rate|None, eta|None} for long preparation
# (tokenizer training, encoding), evaluation and live sampling.
WORKER_PROGRESS_EVENTS = frozenset({"progress", "setup", "eval", "sample_chunk", "reply", "checkpoint"})
WORKER_COMMANDS = frozenset({
    "set_threads", "set_batch", "pause", "resume", "checkpoint", "stop", "sample", "evaluate",
})


def parse_worker_event(data: bytes) -> dict[str, Any]:
    msg = unpack(data)
    if not isinstance(msg, dict) or msg.get("kind") not in WORKER_EVENTS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "not a worker event")
    check_worker_fields(msg)
    return msg


_NUMBER = (int, float)
# The fields the supervisor reads from each worker event; a message without them (say, from a worker
# of another version) is refused at the channel, never a KeyError in the daemon's loop.
WORKER_EVENT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "started": {"step": int, "max_steps": int, "threads": int, "batch_size": int, "micro_batch": int},
    "metrics": {"step": int, "loss": _NUMBER},
    "eval": {"loss": _NUMBER},
    "checkpoint": {"step": int, "path": str},
}


def check_worker_fields(msg: dict[str, Any]) -> None:
    kind = msg.get("kind")
    if "job" in msg and (not isinstance(msg["job"], int) or isinstance(msg["job"], bool)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"worker event {kind!r}: 'job' must be an integer")
    for name, kinds in WORKER_EVENT_FIELDS.get(str(kind), {}).items():
        value = msg.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                f"worker event {kind!r}: field {name!r} missing or not {kinds}, got {value!r:.40}")


def parse_worker_command(data: bytes) -> dict[str, Any]:
    msg = unpack(data)
    if not isinstance(msg, dict) or msg.get("cmd") not in WORKER_COMMANDS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "not a worker command")
    return msg
