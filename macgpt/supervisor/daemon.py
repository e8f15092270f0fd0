"""macgptd: the supervisor daemon's main loop.

One thread, one ``zmq.Poller``: control requests (ROUTER), worker messages (ROUTER), then the job
supervisor's turn (restarts, reaped workers, the governor), scheduling and a batched write of the
events. The daemon keeps the sockets, the store and the bus; what a worker's end means is the job
supervisor's (``lifecycle.py``), and the daemon only writes it down as a state. Signal handlers
only set a flag; the loop stops the workers (they checkpoint) and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import zmq

from macgpt import metricsfile, protocol
from macgpt.config.limits import Limits
from macgpt.jobrecord import JobRecord
from macgpt.log import get
from macgpt.paths import Layout
from macgpt.protocol import ErrorCode, JobState, Outcome, ProtocolError, StopReason
from macgpt.supervisor import handlers, scheduler
from macgpt.supervisor.admission import MAX_CLIENTS, Admission, busy_message, caps_for, fds_open, rebind_ipc
from macgpt.supervisor.bus import EventBus
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.context import DEFERRED, Context, Reply
from macgpt.supervisor.lifecycle import JobSupervisor, Verdict
from macgpt.supervisor.lock import DaemonLock
from macgpt.supervisor.records import JobRecords
from macgpt.supervisor.store import JobStore, StoreError
from macgpt.supervisor.tcpauth import TcpAuth
from macgpt.supervisor.workers import FrozenRegistry

log = get("macgpt.daemon")

SHUTDOWN_GRACE = 30.0
IDLE_POLL_MS = 500
CONTROL_SNDHWM = 64  # unread replies kept per client; more are dropped (each at most 1 MiB, history 0.5)
RUNTIME_BUSY_MS = 200  # once running, a locked database costs the loop at most this per write, then a retry
SOCKETS = ("control.sock", "events.sock", "workers.sock")


class Daemon:
    def __init__(self, lay: Layout, limits: Limits, max_concurrent: int = 1, tcp: tuple[str, int] | None = None,
                 worker_argv: list[str] | None = None, max_clients: int = MAX_CLIENTS) -> None:
        self.lay = lay
        self.max_clients = max_clients
        self.limits = limits
        self.max_concurrent = max_concurrent
        self.tcp = tcp  # (loopback host, port), checked by the CLI
        self.worker_argv = worker_argv
        self.lock = DaemonLock(lay.lock, lay.runtime)
        self.started = time.time()
        self.stopping = False
        self.requests_served = 0
        self.bad_requests = 0

    # -- setup ----------------------------------------------------------------------------------
    def _backup(self) -> None:
        """A copy of the checked queue to restore from if the database is ever damaged."""
        try:
            self.store.backup()
        except (OSError, sqlite3.Error, StoreError) as e:
            log.warning("database_backup_failed", path=str(self.store.backup_path), error=str(e))

    def open(self) -> None:
        """Take the lock, open the database and sockets, recover from a previous daemon."""
        self.lock.acquire()
        self.lay.jobs.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.lay.db)
        self._backup()
        self.ctx = zmq.Context.instance()
        self._bind()
        import resource

        self.admission = Admission([(self.control, self.lay.control), (self.pub, self.lay.events)],
                                   caps_for(resource.getrlimit(resource.RLIMIT_NOFILE)[0], fds_open() + 8,
                                            self.max_clients), rebind_ipc)
        log.info("connection_caps", refuse_at=self.admission.caps.refuse_at, shed_at=self.admission.caps.shed_at)
        self.records = JobRecords(self.store, EventBus(self.store, self.pub), self.lay)
        self.bus = self.records.bus
        frozen = FrozenRegistry(self.lay.frozen_file)
        thawed = frozen.recover()
        if thawed:
            log.warning("thawed_stopped_workers", pids=thawed)
        frozen.guard()
        self.supervisor = JobSupervisor(self.channel, frozen, self.limits, self.records.event, self._governor_event,
                                        cache_dir=self.lay.tokenizer_cache, argv=self.worker_argv)
        self.context = Context(self.supervisor, self.records, self.lay, self.max_concurrent, self.started,
                               self._counters, self._request_stop)
        self._recover_jobs()
        self.store.set_busy_timeout(RUNTIME_BUSY_MS)
        log.info("daemon_started", pid=os.getpid(), home=str(self.lay.home), socket=self.lay.control,
                 limits=self.limits.to_dict(), max_concurrent=self.max_concurrent)

    def _bind(self) -> None:
        """The control (ROUTER), events (PUB) and workers (ROUTER) sockets, 0600."""
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.control.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)  # a client that stops reading pins little
        old_umask = os.umask(0o077)  # the sockets are created 0600
        try:
            for path in SOCKETS:
                (self.lay.runtime / path).unlink(missing_ok=True)
            self.control.bind(self.lay.control)
            self.tcp_auth = TcpAuth(self.ctx, self.control, self.lay.home, *self.tcp) if self.tcp else None
            self.pub = self.ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.LINGER, 0)
            self.pub.setsockopt(zmq.SNDHWM, 100_000)
            self.pub.bind(self.lay.events)
            self.channel = WorkerChannel(self.ctx, self.lay.workers)
            for path in SOCKETS:
                os.chmod(self.lay.runtime / path, 0o600)
        finally:
            os.umask(old_umask)

    def _recover_jobs(self) -> None:
        """Jobs that were running when the previous daemon ended continue from their checkpoints,
        ahead of the queue; an old worker still alive is stopped first (never two per job)."""
        for job in self.store.in_states([JobState.STARTING, JobState.RUNNING, JobState.PAUSED]):
            _wait_for_old_worker(self.lay.job_dir(job.id))
            if job.state == JobState.PAUSED and job.reason == "user":
                continue
            self.store.transition(job.id, JobState.QUEUED, "resuming after a daemon restart",
                                  queue_order=job.queue_order - 1e9)
            self.bus.emit(job.id, "state", {"state": "queued", "reason": "resuming after a daemon restart"})
        self.bus.flush()

    def _counters(self) -> dict[str, int]:
        return {"requests_served": self.requests_served, "bad_requests": self.bad_requests}

    def _request_stop(self) -> None:
        self.stopping = True

    # -- main loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            self.stopping = True

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, on_signal)
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.channel.sock, zmq.POLLIN)
        if self.tcp_auth:
            poller.register(self.tcp_auth.sock, zmq.POLLIN)
        for mon in self.admission.monitors:  # a flood of connections wakes the loop at once
            poller.register(mon, zmq.POLLIN)
        try:
            while not self.stopping:
                ready = dict(poller.poll(self.supervisor.wait_ms(IDLE_POLL_MS)))
                self.admission.guard()  # first: near the descriptor limit every millisecond counts
                try:
                    self.records.retry()
                    if self.control in ready:
                        self._serve_control()
                    if self.channel.sock in ready:
                        self.supervisor.serve_channel()
                    if self.tcp_auth and self.tcp_auth.sock in ready:
                        self.tcp_auth.handle()
                    self._apply(self.supervisor.tick())
                    self._schedule()
                    self.bus.flush()
                except sqlite3.Error as e:  # the workers go on; what was not written is retried next turn
                    self.records.db_error("loop", e)
        finally:
            self._shutdown(poller)

    def _serve_control(self) -> None:
        for _ in range(100):  # bounded, so workers are served too under a flood of requests
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle_frames(frames)

    def _handle_frames(self, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[-1]
        envelope = frames[1:-1] if len(frames) == 3 else []
        req_id = None
        try:
            if len(frames) < 2 or len(frames) > 3 or (len(frames) == 3 and frames[1] != b""):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"expected 2 frames (DEALER) or 3 (REQ), got {len(frames)}")
            with contextlib.suppress(Exception):
                req_id = protocol.unpack(payload).get("id")  # best effort, for the error reply
            req = protocol.parse_request(payload)
            req_id = req.id
            if not self.admission.admit(identity):
                raise ProtocolError(ErrorCode.UNAVAILABLE, busy_message(self.admission.open, self.admission.caps))
            reply = Reply(lambda data: self._send(identity, envelope, data), req.id)
            result = handlers.dispatch(self.context, req.cmd, req.args, reply)
            if result is not DEFERRED:
                reply.ok(result)
            self.requests_served += 1
        except ProtocolError as e:
            self.bad_requests += 1
            if self.bad_requests <= 20 or self.bad_requests % 1000 == 0:
                log.warning("bad_request", code=str(e.code), message=e.message[:200], count=self.bad_requests)
            self._refuse(identity, envelope, req_id, e.code, e.message)
        except sqlite3.Error as e:
            self.records.db_error("request", e)
            self._refuse(identity, envelope, req_id, ErrorCode.UNAVAILABLE,
                         f"the database is busy or failing ({e}); try again")
        except Exception as e:  # a handler bug must not take the daemon down
            log.exception("handler_failed")
            self._refuse(identity, envelope, req_id, ErrorCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")

    def _refuse(self, identity: bytes, envelope: list[bytes], req_id: Any, code: ErrorCode, message: str) -> None:
        self._send(identity, envelope, protocol.reply_error(req_id if isinstance(req_id, int | str) else None,
                                                            code, message))

    def _send(self, identity: bytes, envelope: list[bytes], payload: bytes) -> None:
        try:
            self.control.send_multipart([identity, *envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client is gone

    # -- verdicts and scheduling -----------------------------------------------------------------
    def _apply(self, verdicts: list[Verdict]) -> None:
        """Write down what the job supervisor decided: each verdict's state (protocol.OUTCOME_STATES)."""
        for v in verdicts:
            log.info("worker_verdict", job=v.job, outcome=str(v.outcome), reason=v.reason)
            fields: dict[str, Any] = {"error": v.error} if v.error is not None else {}
            if v.outcome is Outcome.COMPLETED and v.live is not None:
                final = v.live.final or {}
                fields.update(final_model=final.get("final_model"), loss=final.get("train_loss"),
                              eval_loss=final.get("eval_loss"), step=v.live.step)
            elif v.outcome is Outcome.INTERRUPTED:  # first in the queue at the next start
                fields["queue_order"] = self._stored(v.job, "queue_order", 0.0) - 1e9
            elif v.outcome is Outcome.RESTARTING:
                with contextlib.suppress(sqlite3.Error):  # a counter; never worth losing the restart over
                    self.store.update(v.job, restarts=self._stored(v.job, "restarts", 0) + 1)
            self.records.transition(v.job, v.state, v.reason, **fields)

    def _stored(self, job_id: int, name: str, default: Any) -> Any:
        """One field of a stored job; ``default`` when it is gone or the database fails now (a
        verdict is written down whatever happens: its transition is kept until it can be)."""
        try:
            job = self.records.get(job_id)
        except sqlite3.Error:
            return default
        return getattr(job, name) if job is not None else default

    def _schedule(self) -> None:
        if self.stopping or self.records.pending:  # the database is behind: never start from stale states
            return
        scheduler.schedule(self.supervisor, self.records, self.max_concurrent, self._start)

    def _start(self, job: JobRecord) -> None:
        try:
            spec = job.spec
        except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError: another version wrote it
            self.records.transition(job.id, JobState.FAILED, f"its stored spec cannot be read: {e}", error=str(e))
            return
        self.records.transition(job.id, JobState.STARTING, None, started=time.time())
        if not self.supervisor.start(job.id, spec, self.lay.job_dir(job.id)):
            log.error("second_worker_refused", job=job.id)

    def _governor_event(self, kind: str, data: dict[str, Any]) -> None:
        job = data.get("job")
        log.info("governor_" + kind, **data)
        if isinstance(job, int):
            self.bus.emit(job, kind, data)
            if kind == "governor":
                metricsfile.record_governor(self.lay.job_dir(job), data)

    # -- shutdown -------------------------------------------------------------------------------
    def _shutdown(self, poller: zmq.Poller) -> None:
        log.info("daemon_stopping", running=self.supervisor.jobs())
        self.supervisor.stop_all(StopReason.SHUTDOWN)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.supervisor.runners and time.monotonic() < deadline:
            if dict(poller.poll(100)).get(self.channel.sock):
                self.supervisor.serve_channel()
            self._apply(self.supervisor.tick())
            self.bus.flush()
        self._apply(self.supervisor.kill_remaining())
        self.bus.flush()
        self.supervisor.close()
        self.admission.close()
        for sock in (self.control, self.pub, self.channel.sock):
            sock.close(0)
        if self.tcp_auth:
            self.tcp_auth.close()
        for path in SOCKETS:
            (self.lay.runtime / path).unlink(missing_ok=True)
        self.records.retry()
        if self.records.pending:
            log.error("state_changes_not_written", pending=[(j, str(st), r) for j, st, r, _ in self.records.pending])
        self._backup()
        self.store.close()
        log.info("daemon_stopped")
        self.lock.release()


def _wait_for_old_worker(job_dir: Path, timeout: float = 15.0) -> None:
    """A worker of a dead daemon exits by itself once it notices; wait for it, then insist."""
    import psutil

    marker = f"--job-dir {job_dir} --endpoint"
    olds = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if marker in cmd and p.pid != os.getpid():
            olds.append(p)
    for p in olds:
        try:
            p.resume()
            p.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(olds, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
