"""What a worker's end means for its job (``JobSupervisor._judge`` and its timers), against fake
runners and a fake enforcer: no process, no socket, a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from macgpt.config.limits import Limits, in_force
from macgpt.protocol import OUTCOME_STATES, Ended, JobState, Outcome, StopReason
from macgpt.supervisor.lifecycle import JobSupervisor, Verdict
from macgpt.supervisor.restarts import RestartPolicy
from macgpt.supervisor.runner import Live


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeSock:
    def poll(self, timeout: int = 0, flags: int = 0) -> int:
        return 0


class FakeChannel:
    sock = FakeSock()

    def receive(self) -> list[Any]:
        return []


class FakeEnforcer:
    def __init__(self) -> None:
        self.limits = self.base = Limits(max_crashes=3)
        self.failures: dict[int, str] = {}
        self.evicted: set[int] = set()
        self.forgotten: list[int] = []
        self.ticks = 0

    def released(self, runner: Any) -> None:
        pass

    def limits_for(self, runners: Any) -> Limits:
        return in_force(self.base, [r.own_limits for r in runners])

    def failure(self, job: int) -> str | None:
        return self.failures.get(job)

    def wait_for_memory(self, job: int) -> None:
        self.evicted.add(job)

    def memory_back(self, job: int) -> bool:
        return job in self.evicted

    def forget(self, job: int) -> None:
        self.forgotten.append(job)
        self.evicted.discard(job)

    def tick(self, runners: list[Any]) -> None:
        self.ticks += 1

    def halted(self, runner: Any) -> bool:
        return False

    def wait_ms(self) -> int:
        return 250


class FakeWorker:
    def __init__(self) -> None:
        self.code: int | None = None
        self.env: dict[str, str] = {}

    def poll(self) -> int | None:
        return self.code

    def alive(self) -> bool:
        return self.code is None


class FakeRunner:
    """A runner whose worker ends when the test says how (``end``)."""

    def __init__(self, job: int, job_dir: Path) -> None:
        self.job_id, self.job_dir, self.spec = job, job_dir, None
        self.own_limits: dict[str, Any] = {}
        self.worker = FakeWorker()
        self.live = Live()
        self.stop_reason: StopReason | None = None
        self.user_paused = False
        self.exit_code: int | None = None
        self.starts = 0
        self._ended: Ended | None = None

    def start(self) -> None:
        self.starts += 1
        self.started_env = dict(self.worker.env)
        self.worker = FakeWorker()
        self.live, self.stop_reason, self._ended = Live(), None, None

    def stop(self, reason: StopReason) -> None:
        self.stop_reason = self.stop_reason or reason

    def request(self, cmd: str, args: dict[str, Any] | None = None) -> int | None:
        return 1 if self.worker.alive() else None

    def end(self, how: Ended, code: int = 1, message: str | None = None) -> None:
        self.worker.code = self.exit_code = code
        self._ended = how
        if how is Ended.COMPLETED:
            self.live.final = {"final_model": "final_model.pt"}
        if message:
            self.live.failure = {"message": message}

    def tick(self) -> Ended | None:
        return self._ended if self.worker.code is not None else None


@pytest.fixture
def sv(tmp_path: Path) -> JobSupervisor:
    events: list[tuple[int, str, dict[str, Any]]] = []
    s = JobSupervisor(FakeChannel(), None, Limits(), lambda j, k, d: events.append((j, k, d)), lambda k, d: None,  # type: ignore[arg-type]
                      policy=RestartPolicy(base_delay=2.0), enforcer=FakeEnforcer(), clock=Clock())  # type: ignore[arg-type]
    s.events = events  # type: ignore[attr-defined]
    return s


def running(sv: JobSupervisor, tmp_path: Path, job: int = 1) -> FakeRunner:
    runner = FakeRunner(job, tmp_path / str(job))
    sv.runners[job] = runner  # type: ignore[assignment]
    runner.start()
    return runner


def only(verdicts: list[Verdict]) -> Verdict:
    assert len(verdicts) == 1, verdicts
    return verdicts[0]


def test_every_outcome_has_a_state_the_transition_table_can_reach() -> None:
    from macgpt.protocol import TRANSITIONS

    assert set(OUTCOME_STATES) == set(Outcome)
    reachable = {new for olds in TRANSITIONS.values() for new in olds}
    assert set(OUTCOME_STATES.values()) <= reachable


def test_a_completed_worker_completes_its_job_and_is_forgotten(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.end(Ended.COMPLETED, code=0)
    v = only(sv.tick())
    assert (v.outcome, v.state, v.live.final["final_model"]) == (Outcome.COMPLETED, JobState.COMPLETED, "final_model.pt")
    assert not sv.runners and sv.enforcer.forgotten == [1]


def test_crashes_restart_with_back_off_and_give_up_without_progress(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.end(Ended.CRASHED, code=-11, message="boom")
    v = only(sv.tick())
    assert (v.outcome, v.delay, v.reason) == (Outcome.RESTARTING, 0.0, "restarting in 0s after a crash")
    assert v.state == JobState.STARTING and sv.runners  # the runner waits for its restart
    assert only(sv.tick()).outcome is Outcome.RESTARTED and r.starts == 2
    r.end(Ended.CRASHED)
    v = only(sv.tick())
    assert v.delay == 2.0 and sv.tick() == []  # the back-off has not passed
    sv.clock.t += 2.0
    assert only(sv.tick()).outcome is Outcome.RESTARTED
    r.end(Ended.CRASHED, message="boom again")
    v = only(sv.tick())
    assert (v.outcome, v.state) == (Outcome.GAVE_UP, JobState.FAILED)  # max_crashes=3 in a row, no checkpoint
    assert v.reason == v.error == "crashed 3 times: boom again" and not sv.runners
    kinds = [k for _, k, _ in sv.events]
    assert kinds == ["restarting", "restarting", "gave_up"] and sv.restarts == 2


def test_a_new_checkpoint_between_crashes_is_progress_not_a_crash_loop(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.job_dir.mkdir(parents=True)
    for step in range(1, 6):
        (r.job_dir / f"ckpt-{step * 10:08d}.pt").write_bytes(b"x")  # each worker saved before it crashed
        r.end(Ended.CRASHED)
        v = only(sv.tick())
        assert v.outcome is Outcome.RESTARTING and v.delay == 0.0
        sv.tick()


def test_a_hang_is_a_crash_a_memory_kill_is_not(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.stop_reason = StopReason.HANG
    r.end(Ended.STOPPED, code=-9)
    v = only(sv.tick())
    assert v.outcome is Outcome.RESTARTING and v.reason == "restarting in 0s (hang)"
    assert sv.events[-1][2]["last_error"] == "it stopped making progress"
    sv.tick()
    r.stop_reason = StopReason.MEMORY_KILL
    r.end(Ended.STOPPED, code=-9)
    v = only(sv.tick())
    assert v.outcome is Outcome.RESTARTING and v.reason == "restarting in 0s (memory-kill)"
    assert len(sv.events) == 1 and sv.restarts == 1  # no "restarting" event, not counted


def test_an_evicted_job_waits_for_memory_then_may_start_again(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.stop_reason = StopReason.EVICT
    r.end(Ended.STOPPED, code=0)
    v = only(sv.tick())
    assert (v.outcome, v.state) == (Outcome.WAITING_FOR_MEMORY, JobState.PAUSED) and not sv.runners
    assert sv.memory_back() == [1]


def test_the_workers_own_word_wins_over_the_governors(sv: JobSupervisor, tmp_path: Path) -> None:
    """Bug fixed: a worker that completed just as the governor evicted it used to wait for memory,
    then run again; one whose checkpoint failed on a full disk was restarted instead of paused."""
    r = running(sv, tmp_path)
    r.stop_reason = StopReason.EVICT
    r.end(Ended.COMPLETED, code=0)
    assert only(sv.tick()).outcome is Outcome.COMPLETED and not sv.enforcer.evicted
    r = running(sv, tmp_path, job=2)
    r.stop_reason = StopReason.MEMORY_KILL
    r.end(Ended.DISK, code=3, message="no space left")
    v = only(sv.tick())
    assert (v.outcome, v.state, v.reason, v.error) == (Outcome.DISK_FULL, JobState.PAUSED, "disk: no space left",
                                                       "no space left")


def test_a_cancel_is_never_lost_to_a_stop_already_under_way(sv: JobSupervisor, tmp_path: Path) -> None:
    """Bug fixed: cancelled while the governor was killing it for memory (or evicting it), the job
    restarted (or waited for memory) although `cancel` had answered "cancelling"."""
    r = running(sv, tmp_path)
    r.stop_reason = StopReason.MEMORY_KILL
    assert sv.cancel(1) is True
    r.end(Ended.STOPPED, code=-9)
    v = only(sv.tick())
    assert (v.outcome, v.state, v.reason) == (Outcome.CANCELLED, JobState.CANCELLED, "user") and not sv.runners


def test_cancel_between_two_workers_is_at_once(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    r.end(Ended.CRASHED)
    sv.clock.t -= 100  # keep the restart timer from firing
    assert only(sv.tick()).outcome is Outcome.RESTARTING
    assert sv.cancel(1) is False and not sv.runners and 1 in sv.enforcer.forgotten
    sv.clock.t += 1000
    assert sv.tick() == []  # the timer went with it


def test_a_job_paused_during_its_back_off_stays_paused(sv: JobSupervisor, tmp_path: Path) -> None:
    """Bug fixed: paused while waiting to restart, the job was set back to "starting" and then
    "running" while its new worker sat paused; resumed meanwhile, it could be started twice."""
    r = running(sv, tmp_path)
    r.end(Ended.CRASHED)
    sv.tick()
    sv.clock.t -= 1  # the restart is due in a second
    r._ended = None
    assert sv.pause(1) is True and r.user_paused
    assert sv.resume(1) is JobState.STARTING and not r.user_paused  # resumed before the restart: no queue trip
    assert sv.pause(1)
    sv.clock.t += 1
    assert sv.tick() == [] and r.starts == 2  # restarted, its worker told to pause when it says hello
    assert sv.start(1, None, r.job_dir) is False  # never a second worker beside a live one


def test_stopping_interrupts_everything_unless_it_already_ended_for_good(sv: JobSupervisor, tmp_path: Path) -> None:
    a, b, c = (running(sv, tmp_path, job) for job in (1, 2, 3))
    b.end(Ended.CRASHED)
    sv.clock.t -= 100
    sv.tick()  # b waits to restart
    c.stop_reason = StopReason.MEMORY_KILL  # c is being killed for memory as the daemon stops
    sv.stop_all(StopReason.SHUTDOWN)
    assert a.stop_reason is StopReason.SHUTDOWN
    a.end(Ended.STOPPED, code=0)
    b.worker.code = 1
    c.end(Ended.STOPPED, code=-9)
    ticks = sv.enforcer.ticks
    verdicts = {v.job: v for v in sv.tick()}
    assert {j: v.outcome for j, v in verdicts.items()} == {1: Outcome.INTERRUPTED, 2: Outcome.INTERRUPTED,
                                                          3: Outcome.INTERRUPTED}
    assert verdicts[1].state == JobState.QUEUED and not sv.runners and sv.enforcer.ticks == ticks


def test_the_governors_failure_fails_the_job_with_its_reason(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    sv.enforcer.failures[1] = "killed 4 times for memory"
    r.stop_reason = StopReason.GOVERNOR_FAIL
    r.end(Ended.STOPPED, code=-9)
    v = only(sv.tick())
    assert (v.outcome, v.state, v.reason, v.error) == (Outcome.GAVE_UP, JobState.FAILED, "killed 4 times for memory",
                                                       "killed 4 times for memory")


def test_a_resumed_worker_is_running_only_once_it_trains(sv: JobSupervisor, tmp_path: Path) -> None:
    r = running(sv, tmp_path)
    assert sv.pause(1) and sv.resume(1) is JobState.STARTING  # still setting up: "running" at its first step
    r.live.phase = "training"
    assert sv.pause(1) and sv.resume(1) is JobState.RUNNING and not r.user_paused
    assert sv.resume(2) is None  # no worker: back to the queue


def test_a_worker_spins_less_when_it_starts_under_a_cpu_limit(sv: JobSupervisor, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    other = running(sv, tmp_path, 1)
    other.own_limits = {"max_cpu": 40}  # a running job's own limit holds for every worker started
    runner = FakeRunner(2, tmp_path / "2")
    sv.runners[2] = runner  # type: ignore[assignment]
    sv._launch(runner)  # type: ignore[arg-type]
    assert runner.started_env == {"GOMP_SPINCOUNT": "20000"}
    del sv.runners[1]  # that job is over
    runner.own_limits = {"max_cpu": 100}  # alone, at its own --max-cpu 100: libgomp's default
    sv._launch(runner)  # type: ignore[arg-type]
    assert runner.started_env == {}
