"""The governor's policy on synthetic readings: every lever, hysteresis, battery, memory, hangs."""

from __future__ import annotations

import dataclasses

import pytest

from macgpt.config.limits import Limits
from macgpt.supervisor import governor as g
from macgpt.supervisor.monitor import Readings, WorkerReading

MB = 2**20
LIMITS = Limits(max_cpu=70, max_memory=60, hang_seconds=60)


def reading(t: float, other: float = 2.0, ours: dict[int, float] | None = None, mem: float = 30.0,
            rss: int = 400 * MB, battery: bool | None = None, pressure: str | None = None,
            stopped: bool = False, valid: bool = True) -> Readings:
    ours = {1: 0.0} if ours is None else ours
    workers = {j: WorkerReading(100 + j, c, rss, stopped) for j, c in ours.items()}
    total = min(100.0, other + sum(ours.values()))
    return Readings(t=t, interval=0.25, ncpu=2, total_cpu=total, ours_cpu=sum(ours.values()),
                    other_cpu=total - sum(ours.values()), mem_percent=mem, mem_available=0, mem_total=0,
                    swap_percent=0, workers=workers, on_battery=battery, battery_percent=50 if battery else None,
                    memory_pressure=pressure, valid=valid)


def job(jid: int = 1, **kw) -> g.JobGov:
    base = dict(job=jid, max_threads=2, batch_size=16, expected_rss=500 * MB, threads=2, micro_batch=16,
                training=True)
    return g.JobGov(**{**base, **kw})


def state(*jobs: g.JobGov) -> g.GovState:
    return g.GovState(jobs={j.job: j for j in jobs})


class Plant:
    """A worker: CPU = duty x threads x one core (or x every core when it ignores thread commands)."""

    def __init__(self, obeys_threads: bool = True) -> None:
        self.obeys = obeys_threads

    def cpu(self, j: g.JobGov) -> float:
        threads = j.threads if self.obeys else 2
        return j.duty * threads * 50.0


def run(st: g.GovState, steps: int, other=lambda t: 2.0, plant: Plant | None = None, t0: float = 0.0,
        limits: Limits = LIMITS, **kw) -> tuple[g.GovState, list[tuple[float, g.Action]], list[float]]:
    plant = plant or Plant()
    log, totals = [], []
    for i in range(steps):
        t = t0 + i * 0.25
        room = max(0.0, 100.0 - other(t)) / max(1, len(st.jobs))  # workers run at idle priority
        ours = {jid: min(plant.cpu(j), room) for jid, j in st.jobs.items()}
        r = reading(t, other=other(t), ours=ours, **kw)
        st, acts = g.decide(r, limits, st)
        log += [(t, a) for a in acts]
        totals.append(r.total_cpu)
    return st, log, totals


def of(log, kind):
    return [a for _, a in log if isinstance(a, kind)]


def test_idle_machine_settles_at_the_limit_with_every_thread() -> None:
    st, log, totals = run(state(job()), 40)
    assert st.jobs[1].threads == 2
    assert all(abs(t - 70) <= 5 for t in totals[8:]), totals
    assert not of(log, g.SetThreads)


def test_a_worker_that_ignores_thread_commands_is_held_by_the_duty_cycle() -> None:
    _st, log, totals = run(state(job()), 60, other=lambda t: 30.0, plant=Plant(obeys_threads=False))
    assert of(log, g.SetThreads)[0].threads == 1  # asked for one thread (budget 40% < one core)
    assert all(abs(t - 70) <= 5 for t in totals[12:]), totals


def test_load_appearing_stops_within_one_reading_and_returns_after_the_hold() -> None:
    busy = lambda t: 95.0 if 10 <= t < 20 else 2.0  # noqa: E731
    _st, log, _ = run(state(job()), 160, other=busy)
    duties = [(t, a.duty) for t, a in log if isinstance(a, g.SetDuty)]
    stop_t = next(t for t, d in duties if d == 0.0)
    assert 10 <= stop_t <= 10.25  # the first reading with the load
    back_t = next(t for t, d in duties if t > stop_t and d > 0)
    assert 24.5 <= back_t <= 25.5  # the last busy reading at 19.75 + a hold of 5 s
    notes = [a.message for a in of(log, g.Note)]
    assert any("stopped: other programs use 95% CPU, limit 70%" in n for n in notes)


def test_no_oscillation_under_a_flickering_load() -> None:
    flicker = lambda t: 60.0 if int(t * 4) % 2 else 5.0  # noqa: E731  (changes every reading)
    _st, log, totals = run(state(job()), 200, other=flicker)
    assert len(of(log, g.SetThreads)) <= 1  # the held maximum decides: one change, no flapping
    assert len(of(log, g.Note)) <= 3
    assert max(totals[20:]) <= 75


def test_battery_policies() -> None:
    st, _log, _ = run(state(job()), 4, battery=True)
    assert st.jobs[1].duty == 0 and st.jobs[1].mode == "battery"
    st, _, totals = run(state(job()), 40, battery=True, limits=dataclasses.replace(LIMITS, on_battery="throttle"))
    assert abs(totals[-1] - 35) <= 5 and st.jobs[1].threads == 1
    st, _, totals = run(state(job()), 40, battery=True, limits=dataclasses.replace(LIMITS, on_battery="run"))
    assert abs(totals[-1] - 70) <= 5


def test_two_workers_share_the_budget() -> None:
    st, _, totals = run(state(job(1), job(2)), 60)
    assert abs(totals[-1] - 70) <= 5
    assert st.jobs[1].threads == st.jobs[2].threads == 1


def test_user_paused_and_starting_workers_are_not_throttled() -> None:
    _st, log, _ = run(state(job(user_paused=True), job(2, training=False)), 10, other=lambda t: 95.0)
    assert not of(log, g.SetDuty)


def test_memory_soft_limit_batch_then_pause_then_checkpoint_and_exit() -> None:
    _st, log, _ = run(state(job()), 100, mem=65.0)
    batches = [a.micro_batch for a in of(log, g.SetBatch)]
    assert batches == [8, 4, 2, 1]
    assert of(log, g.Pause) == [g.Pause(1, "memory")]
    assert len(of(log, g.Evict)) >= 1 and not of(log, g.Kill)
    times = [t for t, a in log if isinstance(a, g.SetBatch | g.Pause | g.Evict)]
    assert times == sorted(times) and times[1] - times[0] >= 1.5


def test_memory_comes_back_resume_then_bigger_batches() -> None:
    st = state(job(micro_batch=2, mem_paused=True, mode="memory"))
    st, log, _ = run(st, 120, mem=40.0)
    assert of(log, g.Resume) == [g.Resume(1)]
    assert [a.micro_batch for a in of(log, g.SetBatch)] == [4, 8, 16]
    assert st.jobs[1].mode == "throttled"  # back under the CPU policy alone


def test_hard_limit_kills_and_restarts_smaller_then_fails_after_repeated_leaks() -> None:
    st = state(job())
    kills = []
    for i in range(4):
        st, acts = g.decide(reading(i * 10.0, mem=80.0), LIMITS, st)
        kills += acts
    assert [type(a) for a in kills if not isinstance(a, g.Note)] == [g.Kill, g.Kill, g.Kill, g.Fail]
    assert kills[0].kind == "memory"
    assert "killed 3 times for memory" in next(a for a in kills if isinstance(a, g.Fail)).reason


def test_a_leak_is_stopped_before_it_passes_the_hard_limit() -> None:
    st = state(job())
    st, acts = g.decide(reading(0.0, mem=68.0), LIMITS, st)
    assert not any(isinstance(a, g.Kill) for a in acts)
    st, acts = g.decide(reading(0.25, mem=72.0), LIMITS, st)  # +4 per reading: 76 next time
    assert any(isinstance(a, g.Kill) for a in acts)


def test_a_large_stable_worker_is_never_killed_with_memory_to_spare() -> None:
    st = state(job())
    for i in range(200):  # 50 s at 3 GB, six times its estimate, on a machine at 20%
        st, acts = g.decide(reading(i * 0.25, mem=20.0, rss=3000 * MB), LIMITS, st)
        assert not any(isinstance(a, g.Kill | g.Fail) for a in acts)


def test_a_worker_growing_towards_the_hard_limit_is_killed_under_the_soft_limit() -> None:
    total = 16 * 2**30
    st, killed_at = state(job()), None
    for i in range(400):
        t = i * 0.25
        anon = 500 * MB + int(max(0.0, t - 10) * 1000 * MB)  # stable, then 1 GB/s from t=10
        mem = 20.0 + 100 * max(0.0, t - 10) * 1000 * MB / total
        r = dataclasses.replace(reading(t, mem=mem, rss=anon), mem_total=total,
                                workers={1: WorkerReading(101, 0.0, anon, False, anon)})
        st, acts = g.decide(r, LIMITS, st)
        kill = next((a for a in acts if isinstance(a, g.Kill)), None)
        if kill:
            killed_at = (t, mem, kill.reason)
            break
    assert killed_at is not None
    t, mem, why = killed_at
    assert mem < LIMITS.max_memory  # under the soft limit: the projection decided
    assert "grew" in why and "past its 500 MB after set-up" in why, why
    assert 10 < t < 30


def test_macos_memory_pressure_counts() -> None:
    _, acts = g.decide(reading(0.0, mem=20.0, pressure="critical"), LIMITS, state(job()))
    assert any(isinstance(a, g.Kill) for a in acts)
    _, acts = g.decide(reading(2.0, mem=20.0, pressure="warn"), LIMITS, state(job()))
    assert any(isinstance(a, g.SetBatch) for a in acts)


def test_hang_detected_from_progress_not_heartbeats() -> None:
    limits = dataclasses.replace(LIMITS, hang_seconds=10)
    _st, log, _ = run(state(job(progress=5, last_progress=5)), 60, limits=limits)  # 15 s, no progress
    kills = of(log, g.Kill)
    assert len(kills) == 1 and kills[0].kind == "hang"
    kill_t = next(t for t, a in log if isinstance(a, g.Kill))
    assert 13.5 <= kill_t <= 15.0  # 10 s of running at 70% duty


def test_time_stopped_by_us_is_not_a_hang() -> None:
    limits = dataclasses.replace(LIMITS, hang_seconds=10)
    _st, log, _ = run(state(job()), 120, other=lambda t: 95.0, limits=limits)
    assert not of(log, g.Kill)


def test_progress_resets_the_hang_clock() -> None:
    limits = dataclasses.replace(LIMITS, hang_seconds=10)
    st = state(job())
    for i in range(120):
        j = st.jobs[1]
        st = dataclasses.replace(st, jobs={1: dataclasses.replace(j, progress=j.progress + (i % 20 == 0))})
        st, acts = g.decide(reading(i * 0.25, ours={1: 100 * st.jobs[1].duty}), limits, st)
        assert not any(isinstance(a, g.Kill) for a in acts)


def test_an_invalid_reading_does_not_count_as_other_load() -> None:
    st, _, _ = run(state(job()), 8)
    new, acts = g.decide(reading(2.0, other=99.0, ours={1: 1.0}, valid=False), LIMITS, st)
    assert not any(isinstance(a, g.SetDuty) and a.duty == 0 for a in acts)
    assert max(o for _, o in new.other) < 10


@pytest.mark.parametrize("limit", [30, 50, 90])
def test_settles_near_any_limit(limit: float) -> None:
    _, _, totals = run(state(job()), 60, limits=dataclasses.replace(LIMITS, max_cpu=limit))
    assert abs(sum(totals[-12:]) / 12 - limit) <= 5


def test_nothing_is_decided_before_a_trustworthy_reading() -> None:
    st, acts = g.decide(reading(0.0, other=90.0, valid=False), LIMITS, state(job()))
    assert acts == [] and st.other == ()


def test_micro_batches_divide_the_batch_and_grow_back_to_it() -> None:
    from macgpt.config.schema import micro_batch_above, micro_batch_at_most

    for batch in (4, 14, 16, 48):
        m, down = batch, []
        while m > 1:
            m = micro_batch_at_most(batch, m // 2)
            down.append(m)
        up = [m]
        while m < batch:
            m = micro_batch_above(batch, m)
            up.append(m)
        assert all(batch % x == 0 for x in down + up)
        assert up[-1] == batch and up == sorted(set(up))
    assert micro_batch_above(14, 2) == 7 and micro_batch_above(16, 2) == 4 and micro_batch_above(48, 16) == 24
    assert micro_batch_at_most(14, 7 // 2) == 2


class OneThreadPlant(Plant):
    """A worker whose second thread adds no CPU (batch 4 of `original`: the main thread does it all)."""

    def cpu(self, j: g.JobGov) -> float:
        return j.duty * 45.0


def test_a_worker_whose_second_thread_adds_no_cpu_settles_on_one_thread_at_full_duty() -> None:
    st, log, totals = run(state(job()), 80, plant=OneThreadPlant())
    j = st.jobs[1]
    assert j.threads == 1 and j.duty == 1.0 and j.useful_threads == 1
    assert j.mode == "full", j.message
    assert [a.threads for a in of(log, g.SetThreads)] == [1]
    assert not [a for a in of(log, g.SetDuty) if a.duty < 1.0]  # the budget covers it: no duty cycle
    assert all(abs(t - 47) <= 1 for t in totals[-20:]), totals


def test_at_limit_100_with_nothing_else_running_no_duty_action_is_issued() -> None:
    st, log, _ = run(state(job()), 120, other=lambda t: 3.0 if int(t) % 3 else 1.0,
                          limits=dataclasses.replace(LIMITS, max_cpu=100))
    assert not of(log, g.SetDuty) and not of(log, g.SetThreads)
    assert st.jobs[1].mode == "full"
    assert len(of(log, g.Note)) <= 1  # no flapping between "throttled" and "full speed"


def test_a_budget_that_covers_the_measured_demand_needs_no_duty_cycle() -> None:
    half = type("Half", (Plant,), {"cpu": lambda self, j: j.duty * min(j.threads, 2) * 30.0})()
    st, log, _ = run(state(job()), 80, plant=half)  # uses 60% running free, the budget is 68%
    assert st.jobs[1].duty == 1.0 and st.jobs[1].threads == 2
    assert not [a for a in of(log, g.SetDuty) if a.duty < 1.0]


def test_a_duty_change_alone_is_not_a_note() -> None:
    wobble = lambda t: 10.0 + 6.0 * (int(t // 10) % 2)  # noqa: E731  (other load 10 or 16%: only the duty moves)
    _st, log, _ = run(state(job()), 200, other=wobble)
    assert len(of(log, g.SetDuty)) > 3
    assert len(of(log, g.Note)) <= 2


def test_at_limit_100_a_busy_machine_does_not_stop_the_worker() -> None:
    st, log, _ = run(state(job()), 40, other=lambda t: 98.0, limits=dataclasses.replace(LIMITS, max_cpu=100))
    assert not of(log, g.SetDuty) and st.jobs[1].duty == 1.0  # it runs at idle priority: others come first


def test_one_noisy_reading_of_an_idle_machine_does_not_cut_the_budget() -> None:
    idle = (0.5, 1.2, 0.8, 3.9, 0.7, 1.0, 0.4, 4.2, 0.9)  # a quiet machine: a lone point or two now and then
    assert g.held_other(idle, jump=8.0) == 0.9  # the highest level held two readings in a row
    assert g.held_other((*idle, 6.0, 6.5), jump=8.0) == 6.0  # a small load that stays counts at its second reading
    assert g.held_other((*idle, 60.0), jump=8.0) == 60.0  # a load that appears counts at its first
    assert g.held_other((60.0, 5.0, 60.0, 5.0), jump=8.0) == 60.0  # and a flickering one for the whole window
    assert g.held_other((7.0,), jump=8.0) == 7.0
