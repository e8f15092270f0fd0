"""macgptd: the supervisor daemon's main loop.

One thread, one ``zmq.Poller``: control requests (ROUTER), worker messages (ROUTER), then
supervision (reap workers, governor), scheduling and a batched write of the events. Signal
handlers only set a flag; the loop stops the workers (they checkpoint) and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from macgpt import metricsfile, protocol
from macgpt.config.job import JobSpec
from macgpt.config.limits import Limits
from macgpt.log import get
from macgpt.paths import Layout
from macgpt.protocol import ErrorCode, JobState, ProtocolError
from macgpt.supervisor import handlers, housekeeping, notify
from macgpt.supervisor.admission import MAX_CLIENTS, Admission, busy_message, caps_for, fds_open, rebind_ipc
from macgpt.supervisor.bus import EventBus
from macgpt.supervisor.channel import WorkerChannel
from macgpt.supervisor.governance import Governance, queue_reason, same_wait
from macgpt.supervisor.lock import DaemonLock
from macgpt.supervisor.runner import JobRunner
from macgpt.supervisor.store import JobStore, StoreError, TransitionError
from macgpt.supervisor.tcpauth import TcpAuth
from macgpt.supervisor.workers import FrozenRegistry

log = get("macgpt.daemon")

SHUTDOWN_GRACE = 30.0
IDLE_POLL_MS = 500
CONTROL_SNDHWM = 64  # unread replies kept per client; more are dropped (each at most 1 MiB, history 0.5)
RUNTIME_BUSY_MS = 200  # once running, a locked database costs the loop at most this per write, then a retry


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
        self.runners: dict[int, JobRunner] = {}
        self.restart_at: dict[int, float] = {}
        self.requests_served = 0
        self.bad_requests = 0
        self.db_errors = 0
        self.db_last_error: dict[str, Any] | None = None  # {where, message, time}, shown by `status`
        self.pending_transitions: list[tuple[int, JobState, str | None, dict[str, Any]]] = []

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
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.control.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)  # a client that stops reading pins little
        old_umask = os.umask(0o077)  # the sockets are created 0600
        try:
            for path in ("control.sock", "events.sock", "workers.sock"):
                (self.lay.runtime / path).unlink(missing_ok=True)
            self.control.bind(self.lay.control)
            self.tcp_auth = TcpAuth(self.ctx, self.control, self.lay.home, *self.tcp) if self.tcp else None
            self.pub = self.ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.LINGER, 0)
            self.pub.setsockopt(zmq.SNDHWM, 100_000)
            self.pub.bind(self.lay.events)
            self.channel = WorkerChannel(self.ctx, self.lay.workers)
            for path in ("control.sock", "events.sock", "workers.sock"):
                os.chmod(self.lay.runtime / path, 0o600)
        finally:
            os.umask(old_umask)
        import resource

        self.admission = Admission([(self.control, self.lay.control), (self.pub, self.lay.events)],
                                   caps_for(resource.getrlimit(resource.RLIMIT_NOFILE)[0], fds_open() + 8,
                                            self.max_clients), rebind_ipc)
        log.info("connection_caps", refuse_at=self.admission.caps.refuse_at, shed_at=self.admission.caps.shed_at)
        self.bus = EventBus(self.store, self.pub)
        self.bus.on_error = lambda e: self._db_error("events", e)
        self.frozen = FrozenRegistry(self.lay.frozen_file)
        thawed = self.frozen.recover()
        if thawed:
            log.warning("thawed_stopped_workers", pids=thawed)
        self.frozen.guard()
        self.governance = Governance(self.limits, self._governor_event)
        self._recover_jobs()
        self.store.set_busy_timeout(RUNTIME_BUSY_MS)
        log.info("daemon_started", pid=os.getpid(), home=str(self.lay.home), socket=self.lay.control,
                 limits=self.limits.to_dict(), max_concurrent=self.max_concurrent)

    def _recover_jobs(self) -> None:
        """Jobs that were running when the previous daemon ended continue from their checkpoints,
        ahead of the queue; an old worker still alive is stopped first (never two per job)."""
        for job in self.store.in_states([JobState.STARTING, JobState.RUNNING, JobState.PAUSED]):
            _wait_for_old_worker(self.lay.job_dir(job["id"]))
            if job["state"] == JobState.PAUSED and job["reason"] == "user":
                continue
            self.store.transition(job["id"], JobState.QUEUED, "resuming after a daemon restart",
                                  queue_order=job["queue_order"] - 1e9)
            self.bus.emit(job["id"], "state", {"state": "queued", "reason": "resuming after a daemon restart"})
        self.bus.flush()

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
                timeout = self.governance.wait_ms() if self.runners or self.restart_at else IDLE_POLL_MS
                ready = dict(poller.poll(timeout))
                self.admission.guard()  # first: near the descriptor limit every millisecond counts
                try:
                    self._retry_transitions()
                    if self.control in ready:
                        self._serve_control()
                    if self.channel.sock in ready:
                        self._serve_workers()
                    if self.tcp_auth and self.tcp_auth.sock in ready:
                        self.tcp_auth.handle()
                    self._supervise()
                    self._schedule()
                    self.bus.flush()
                except sqlite3.Error as e:  # the workers go on; what was not written is retried next turn
                    self._db_error("loop", e)
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
        req_id = None
        try:
            if len(frames) < 2 or len(frames) > 3 or (len(frames) == 3 and frames[1] != b""):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"expected 2 frames (DEALER) or 3 (REQ), got {len(frames)}")
            try:
                req_id = protocol.unpack(payload).get("id")  # best effort, for the error reply
            except Exception:
                req_id = None
            req = protocol.parse_request(payload)
            req_id = req.id
            if not self.admission.admit(identity):
                raise ProtocolError(ErrorCode.UNAVAILABLE, busy_message(self.admission.open, self.admission.caps))
            reply = handlers.Reply(self, identity, req.id, frames[1:-1])
            result = handlers.dispatch(self, req.cmd, req.args, reply)
            if result is not handlers.DEFERRED:
                reply.ok(result)
            self.requests_served += 1
        except ProtocolError as e:
            self.bad_requests += 1
            if self.bad_requests <= 20 or self.bad_requests % 1000 == 0:
                log.warning("bad_request", code=str(e.code), message=e.message[:200], count=self.bad_requests)
            self._send(identity, frames[1:-1] if len(frames) == 3 else [],
                       protocol.reply_error(req_id if isinstance(req_id, int | str) else None, e.code, e.message))
        except sqlite3.Error as e:
            self._db_error("request", e)
            self._send(identity, frames[1:-1] if len(frames) == 3 else [],
                       protocol.reply_error(req_id if isinstance(req_id, int | str) else None, ErrorCode.UNAVAILABLE,
                                            f"the database is busy or failing ({e}); try again"))
        except Exception as e:  # a handler bug must not take the daemon down
            log.exception("handler_failed")
            self._send(identity, frames[1:-1] if len(frames) == 3 else [],
                       protocol.reply_error(req_id if isinstance(req_id, int | str) else None,
                                            ErrorCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"))

    def _send(self, identity: bytes, envelope: list[bytes], payload: bytes) -> None:
        try:
            self.control.send_multipart([identity, *envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the client is gone

    def _serve_workers(self) -> None:
        for identity, msg in self.channel.receive():
            runner = self.runners.get(msg.get("job")) if isinstance(msg.get("job"), int) else None
            if runner is not None:
                runner.on_event(identity, msg)

    # -- supervision and scheduling -----------------------------------------------------------
    def _supervise(self) -> None:
        now = time.monotonic()
        for job_id, at in list(self.restart_at.items()):
            if now >= at:
                del self.restart_at[job_id]
                self._start(job_id, restart=True)
        for job_id, runner in list(self.runners.items()):
            if job_id in self.restart_at:
                continue
            if runner.worker.poll() is not None:
                self._drain()
            ended = runner.tick()  # reaps an exited worker, escalates an ignored stop
            if ended is not None:
                self._ended(job_id, runner, ended)
        live = [r for j, r in self.runners.items() if j not in self.restart_at]
        self.governance.tick(live)

    def _drain(self) -> None:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline and self.channel.sock.poll(30, zmq.POLLIN):
            self._serve_workers()

    def _ended(self, job_id: int, runner: JobRunner, ended: str) -> None:
        live = runner.live
        reason = runner.stop_reason
        decision = self.governance.after_exit(runner, ended)
        if decision.kind == "restart":
            self.restart_at[job_id] = time.monotonic() + decision.delay
            with contextlib.suppress(sqlite3.Error):  # a counter; never worth losing the restart over
                self.store.update(job_id, restarts=(self.store.get(job_id) or {}).get("restarts", 0) + 1)
            why = "after a crash" if ended == "crashed" else f"({(reason or '').removeprefix('governor:')})"
            self._transition(job_id, JobState.STARTING, f"restarting in {decision.delay:.0f}s {why}")
            return
        self.runners.pop(job_id, None)
        if decision.kind == "wait":
            self._transition(job_id, JobState.PAUSED, "memory: waiting for memory to come back")
        elif decision.kind == "fail":
            self._transition(job_id, JobState.FAILED, decision.reason, error=decision.reason)
        elif ended == "completed":
            final = live.final or {}
            self._transition(job_id, JobState.COMPLETED, None, final_model=final.get("final_model"),
                             loss=final.get("train_loss"), eval_loss=final.get("eval_loss"), step=live.step)
        elif ended == "invalid":
            message = (live.failure or {}).get("message")
            self._transition(job_id, JobState.FAILED, message, error=message)
        elif ended == "disk":
            message = (live.failure or {}).get("message")
            self._transition(job_id, JobState.PAUSED, f"disk: {message}", error=message)
        elif reason == "cancel":
            self._transition(job_id, JobState.CANCELLED, "user")
        elif reason == "daemon stopping":
            job = self.store.get(job_id) or {}
            self._transition(job_id, JobState.QUEUED, "daemon stopped; resumes at the next start",
                             queue_order=job.get("queue_order", 0) - 1e9)
        else:
            self._transition(job_id, JobState.FAILED, f"the worker stopped unexpectedly ({reason or ended})")

    def _schedule(self) -> None:
        if self.stopping or self.pending_transitions:  # the database is behind: never start from stale states
            return
        for job_id in list(self.governance.evicted):
            if self.governance.memory_back(job_id):
                job = self.store.get(job_id) or {}
                if job.get("state") != JobState.PAUSED:
                    continue  # cancelled (or otherwise moved on) while it waited: cancel is final
                self._transition(job_id, JobState.QUEUED, "memory is back", queue_order=job.get("queue_order", 0) - 1e9)
        active, position = len(self.runners), 0
        for job in housekeeping.ready(self, self.store.queued()):  # --after jobs done
            waiting = self.governance.why_wait() if active < self.max_concurrent else None
            if active < self.max_concurrent and waiting is None:
                self._start(job["id"])
                active += 1
                continue
            position += 1
            reason = queue_reason(position, active, self.max_concurrent, waiting)
            if not same_wait(job["reason"], reason):
                self._transition(job["id"], JobState.QUEUED, reason)

    def _start(self, job_id: int, restart: bool = False) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        job_dir = self.lay.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = JobSpec.from_dict(json.loads(job["spec"]))
        spec.save(job_dir / "job.json")
        runner = self.runners.get(job_id)
        if runner is None:
            runner = JobRunner(job_id, job_dir, self.channel, lambda k, d, j=job_id: self._job_event(j, k, d),
                               self.frozen, self.lay.tokenizer_cache, "idle", self.worker_argv, spec=spec)
            self.runners[job_id] = runner
        self._transition(job_id, JobState.STARTING, "restart" if restart else None,
                         **({} if restart else {"started": time.time()}))
        runner.start()

    def _db_error(self, where: str, e: sqlite3.Error) -> None:
        self.db_errors += 1
        self.db_last_error = {"where": where, "message": str(e), "time": time.time()}
        if self.db_errors <= 20 or self.db_errors % 100 == 0:
            log.error("database_error", where=where, error=str(e), count=self.db_errors,
                      pending_transitions=len(self.pending_transitions), unstored_events=self._unstored())

    def database_view(self) -> dict[str, Any]:
        """What `status` says about the database: errors since start, the last one, and what still
        waits to be written (state changes, events); all zero/None on a healthy daemon."""
        return {"db_errors": self.db_errors, "db_last_error": self.db_last_error,
                "db_pending_changes": len(self.pending_transitions), "db_unstored_events": self._unstored()}

    def _unstored(self) -> int:
        bus = getattr(self, "bus", None)  # None before open()
        return bus.unstored if bus is not None else 0

    def _retry_transitions(self) -> None:
        """Write, in order, the state changes a database error held back."""
        while self.pending_transitions:
            job_id, state, reason, fields = self.pending_transitions[0]
            try:
                self.store.transition(job_id, state, reason, **fields)
            except TransitionError as e:
                log.error("transition_refused", job=job_id, error=str(e))
            except sqlite3.Error as e:
                self._db_error("retry", e)
                return
            self.pending_transitions.pop(0)

    def _transition(self, job_id: int, state: JobState, reason: str | None, **fields: Any) -> bool:
        try:
            if self.pending_transitions:
                raise sqlite3.OperationalError("earlier state changes are still waiting for the database")
            self.store.transition(job_id, state, reason, **fields)
        except TransitionError as e:
            log.error("transition_refused", job=job_id, error=str(e))
            return False
        except sqlite3.Error as e:  # locked or failing: kept, in order, and written when it works again
            self.pending_transitions.append((job_id, state, reason, fields))
            self._db_error("transition", e)
        self.bus.emit(job_id, "state", {"state": str(state), "reason": reason})
        log.info("job_state", job=job_id, state=str(state), reason=reason)
        if state in protocol.FINISHED:
            job = self.store.get(job_id)
            if job:
                notify.job_finished(job, self.lay.job_dir(job_id), sys.platform)
        return True

    def _job_event(self, job_id: int, kind: str, data: dict[str, Any]) -> None:
        """An event from a job's worker (or about it): store progress, publish, persist."""
        try:
            self._store_progress(job_id, kind, data)
        except sqlite3.Error as e:  # progress fields are refreshed by later events; the event itself is kept
            self._db_error(kind, e)
        self.bus.emit(job_id, kind, data)

    def _store_progress(self, job_id: int, kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            job = self.store.get(job_id)
            if job and job["state"] == JobState.STARTING:
                self._transition(job_id, JobState.RUNNING, None)
        elif kind == "metrics":
            self.store.update(job_id, step=data["step"], loss=data["loss"])
        elif kind == "eval":
            self.store.update(job_id, eval_loss=data["loss"])
        elif kind == "checkpoint":
            self.store.update(job_id, checkpoint=data["path"], checkpoint_step=data["step"],
                              checkpoint_time=time.time())
        elif kind in ("failed", "error"):
            self.store.update(job_id, error=str(data.get("message"))[:2000])
            log.error("worker_" + kind, job=job_id, message=data.get("message"))
        elif kind == "warning":
            self.store.update(job_id, warning=str(data.get("message"))[:2000])
            log.warning("worker_warning", job=job_id, message=data.get("message"))

    def _governor_event(self, kind: str, data: dict[str, Any]) -> None:
        job = data.get("job")
        log.info("governor_" + kind, **data)
        if isinstance(job, int):
            self.bus.emit(job, kind, data)
            metricsfile.record_governor(self.lay.job_dir(job), data)

    # -- shutdown -------------------------------------------------------------------------------
    def _shutdown(self, poller: zmq.Poller) -> None:
        log.info("daemon_stopping", running=list(self.runners))
        self.restart_at.clear()
        for runner in self.runners.values():
            runner.stop("daemon stopping")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.runners and time.monotonic() < deadline:
            if dict(poller.poll(100)).get(self.channel.sock):
                self._serve_workers()
            for job_id, runner in list(self.runners.items()):
                if runner.worker.poll() is not None:
                    self._drain()
                    ended = runner.tick() or "stopped"
                    self._ended(job_id, runner, ended if ended != "crashed" else "stopped")
            self.bus.flush()
        for job_id, runner in list(self.runners.items()):
            runner.worker.kill()
            runner.worker.wait(5.0)
            self._ended(job_id, runner, "stopped")
        self.bus.flush()
        self.governance.close()
        self.admission.close()
        for sock in (self.control, self.pub, self.channel.sock):
            sock.close(0)
        if self.tcp_auth:
            self.tcp_auth.close()
        for path in ("control.sock", "events.sock", "workers.sock"):
            (self.lay.runtime / path).unlink(missing_ok=True)
        self._retry_transitions()
        if self.pending_transitions:
            log.error("state_changes_not_written", pending=[(j, str(st), r) for j, st, r, _ in self.pending_transitions])
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
