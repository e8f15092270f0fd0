"""What a control command's handler is given, and where its answer goes. Handlers see the job
supervisor, the job records, the home and a few facts of the daemon, never the daemon itself, so
each can be tested against a fake supervisor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from macgpt import protocol
from macgpt.jobrecord import JobRecord
from macgpt.protocol import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from macgpt.paths import Layout
    from macgpt.supervisor.lifecycle import JobSupervisor
    from macgpt.supervisor.records import JobRecords

DEFERRED = object()  # a handler's result: the answer comes later, through its Reply


class Reply:
    """Where the answer to one request goes (possibly later, possibly in pieces)."""

    def __init__(self, send: Callable[[bytes], None], req_id: Any) -> None:
        self.send, self.req_id = send, req_id

    def ok(self, result: Any) -> None:
        self.send(protocol.reply_ok(self.req_id, result))

    def partial(self, result: Any) -> None:
        self.send(protocol.reply_ok(self.req_id, result, more=True))

    def error(self, code: ErrorCode, message: str) -> None:
        self.send(protocol.reply_error(self.req_id, code, message))


@dataclass
class Context:
    supervisor: JobSupervisor
    records: JobRecords
    lay: Layout
    max_concurrent: int = 1
    started: float = field(default_factory=time.time)
    counters: Callable[[], dict[str, int]] = dict  # requests served and refused, for daemon_info
    stop: Callable[[], None] = lambda: None  # ask the daemon to stop (its loop does it)


Handler = Callable[[Context, dict[str, Any], Reply], Any]


def registrar(table: dict[str, Handler]) -> Callable[[str], Callable[[Handler], Handler]]:
    """A decorator that files each handler of a module in ``table`` under its command's name."""

    def handler(name: str) -> Callable[[Handler], Handler]:
        def register(f: Handler) -> Handler:
            table[name] = f
            return f

        return register

    return handler


def find_job(ctx: Context, job_id: int | None) -> JobRecord:
    """The job named by a request (the most recent without one); NOT_FOUND otherwise."""
    if job_id is None:
        job_id = ctx.records.store.latest_id()
        if job_id is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "there are no jobs yet; submit one with `macgpt submit tiny`")
    job = ctx.records.get(job_id)
    if job is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"job {job_id} does not exist")
    return job
