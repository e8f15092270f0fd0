"""The governor's policy: a pure function from (readings, limits, state, time) to actions.

Levers, gentlest first: fewer threads, a smaller micro-batch (memory), a cooperative pause,
a SIGSTOP/SIGCONT duty cycle (a fraction of the time, or a full stop), checkpoint-and-exit,
and kill-and-restart. Nothing here touches a process: ``enforcer.py`` applies the actions.

CPU: our budget is ``max_cpu`` minus the *highest* other load seen during the hold time (a level
held for two readings, or any jump, so one noisy reading of an idle machine does not cut it), so
load that appears is answered at the next reading (within a second) while resources come back
only after the load has stayed low for the whole hold time. Threads follow the budget and what
each thread was measured to add (one that adds no CPU is dropped); there is no duty cycle when
the budget covers what the job uses; otherwise the duty closes the loop on the CPU we measure,
so a worker that ignores its thread command is held to the budget all the same.

Memory: a kill follows from the hard limit, or from a worker's own growth past its baseline
that would cross the hard limit soon (``memjudge``); never from its size alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

from macgpt.config.limits import Limits
from macgpt.config.schema import micro_batch_above, micro_batch_at_most
from macgpt.supervisor.memjudge import MemTrack, MemTuning, observe, runaway
from macgpt.supervisor.monitor import Readings, WorkerReading


@dataclass(frozen=True)
class Tuning:
    hold: float = 5.0  # seconds the load must stay low before resources are given back
    stop_below: float = 0.12  # a budget under this many cores stops the worker instead
    tolerance: float = 2.0  # machine-percent deadband around the CPU budget
    jump: float = 8.0  # other load this many points above its held level counts at its first reading
    max_step_up: float = 1.5  # the duty cycle grows at most this much per reading
    mem_margin: float = 2.0  # memory must fall this many points under max_memory to give back
    batch_wait: float = 1.5  # seconds for a smaller batch to show before the next lever
    evict_after: float = 10.0  # seconds paused over the memory limit before checkpoint-and-exit
    max_memory_kills: int = 3  # kills for memory before the job fails
    demand_weight: float = 0.3  # weight of a new reading in the worker's measured CPU demand
    useless_thread: float = 0.5  # a thread count using under (n - this) cores: the last thread adds nothing
    demand_readings: int = 8  # readings at one thread count before its thread is judged useless
    spare_cores: float = 0.25  # a reading with this much of a core idle shows the job's own shape
    mem: MemTuning = field(default_factory=MemTuning)


@dataclass(frozen=True)
class JobGov:
    """What the governor knows and has decided for one job's worker."""

    job: int
    max_threads: int
    batch_size: int
    expected_rss: int
    threads: int
    micro_batch: int
    duty: float = 1.0  # share of time the worker may run (1: free, 0: stopped)
    mem_paused: bool = False
    mem_paused_at: float = 0.0
    batch_changed_at: float = -1e9
    user_paused: bool = False
    training: bool = False  # the worker reported its first step (knobs work from then on)
    progress: int = 0  # input: the worker's progress marks (steps, set-up phases); heartbeats do not count
    last_progress: int = 0
    stall: float = 0.0  # seconds it was allowed to run without progress
    memory_kills: int = 0
    mode: str = "full"  # full | throttled | stopped | memory | battery
    message: str = ""
    mem: MemTrack = field(default_factory=MemTrack)  # non-reclaimable memory since training began (the runaway check)
    demand: tuple[tuple[int, float, int], ...] = ()  # (threads, CPU it uses running free, readings)
    useful_threads: int | None = None  # more threads than this were measured to add no CPU
    min_threads: int = 1  # a job of N ranks runs at least one thread in each


@dataclass(frozen=True)
class GovState:
    jobs: dict[int, JobGov] = field(default_factory=dict)
    other: tuple[tuple[float, float], ...] = ()  # (time, other CPU) within the hold window
    low_memory_since: float | None = None  # when memory last fell under the give-back mark
    last_mem: float | None = None  # memory percent at the previous reading (to see a leak coming)


# -- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetThreads:
    job: int
    threads: int


@dataclass(frozen=True)
class SetBatch:
    job: int
    micro_batch: int


@dataclass(frozen=True)
class SetDuty:
    job: int
    duty: float


@dataclass(frozen=True)
class Pause:
    job: int
    reason: str


@dataclass(frozen=True)
class Resume:
    job: int


@dataclass(frozen=True)
class Evict:
    """Checkpoint and exit (a stopped process keeps its memory); the job waits for memory."""

    job: int
    reason: str


@dataclass(frozen=True)
class Kill:
    """Kill now and restart from the last checkpoint (with a smaller batch for memory)."""

    job: int
    reason: str
    kind: str  # "memory" | "hang"


@dataclass(frozen=True)
class Fail:
    job: int
    reason: str


@dataclass(frozen=True)
class Note:
    """A decision worth telling the user about, with the readings behind it."""

    job: int
    mode: str
    message: str
    readings: dict[str, float]


Action = SetThreads | SetBatch | SetDuty | Pause | Resume | Evict | Kill | Fail | Note


# -- the policy -----------------------------------------------------------------------------------
def effective_max_cpu(r: Readings, limits: Limits) -> tuple[float, str | None]:
    if r.on_battery and limits.on_battery == "pause":
        return 0.0, "on battery power (policy: pause)"
    if r.on_battery and limits.on_battery == "throttle":
        return limits.max_cpu / 2, "on battery power (policy: throttle to half)"
    return limits.max_cpu, None


def held_other(values: tuple[float, ...], jump: float) -> float:
    """The other programs' load the budget leaves room for, from the readings of the hold window
    (oldest first): the highest level seen in two readings in a row, so that one noisy reading of
    an idle machine (a point or two above its mean, every few seconds) does not cut the budget;
    any reading ``jump`` points above that level (a load that appears, or flickers) counts at
    once and for the whole hold time."""
    if len(values) < 2:
        return values[-1]
    level = max(min(a, b) for a, b in itertools.pairwise(values))
    return max([level, *(v for v in values if v >= level + jump)])


def decide(r: Readings, limits: Limits, state: GovState, tuning: Tuning = Tuning()) -> tuple[GovState, list[Action]]:
    """One governor step."""
    window = tuple((t, o) for t, o in state.other if r.t - t < tuning.hold)
    if r.valid:  # an invalid reading's other load is not trusted
        window = (*window, (r.t, r.other_cpu))
    if not window:
        return dataclasses.replace(state, other=window), []  # nothing trustworthy to act on yet
    other = held_other(tuple(o for _, o in window), tuning.jump)
    max_cpu, battery = effective_max_cpu(r, limits)
    governed = [j for j in state.jobs.values() if j.training and not j.user_paused and j.job in r.workers]
    per_core = 100.0 / r.ncpu
    budget = max(0.0, max_cpu - other) / max(1, len(governed))

    soft, hard = limits.max_memory, limits.hard_memory_percent
    mem = r.mem_percent
    if r.memory_pressure == "warn":
        mem = max(mem, soft + 0.1)
    elif r.memory_pressure == "critical":
        mem = max(mem, hard)
    low_since = None
    if mem < soft - tuning.mem_margin:
        low_since = r.t if state.low_memory_since is None else state.low_memory_since
    memory_back = low_since is not None and r.t - low_since >= tuning.hold

    # a leak is stopped before it passes the hard limit: look one reading ahead
    projected = mem + max(0.0, mem - state.last_mem) if state.last_mem is not None else mem
    ctx = _Context(r, limits, budget, per_core, mem, projected, soft, hard, memory_back, battery, other, tuning)
    actions: list[Action] = []
    jobs = dict(state.jobs)
    for job in state.jobs.values():
        if job.job not in r.workers:
            continue
        new, acts = _decide_job(job, ctx, job in governed)
        jobs[job.job] = new
        actions.extend(acts)
    return GovState(jobs, window, low_since, r.mem_percent), actions


@dataclass(frozen=True)
class _Context:
    r: Readings
    limits: Limits
    budget: float  # machine CPU percent each governed worker may use
    per_core: float
    mem: float
    projected: float
    soft: float
    hard: float
    memory_back: bool
    battery: str | None
    other: float
    tuning: Tuning


def _decide_job(job: JobGov, c: _Context, governed: bool) -> tuple[JobGov, list[Action]]:
    r = c.r
    w = r.workers[job.job]
    j = _memory(job, c, w, governed)
    if isinstance(j, tuple):
        return j
    acts = _memory_actions(job, j)
    if j.message != job.message:
        acts.append(Note(j.job, j.mode, j.message, r.brief()))

    # Hang: time the worker was free to run without progress (heartbeats are not progress).
    if j.progress != j.last_progress:
        j = dataclasses.replace(j, last_progress=j.progress, stall=0.0)
    elif j.duty > 0 and not j.mem_paused and not j.user_paused and not w.stopped:
        j = dataclasses.replace(j, stall=j.stall + r.interval * j.duty)
    if j.stall >= c.limits.hang_seconds:
        msg = f"no progress for {j.stall:.0f}s: killed and restarting from the last checkpoint"
        j = dataclasses.replace(j, stall=0.0, mode="hang", message=msg)
        return j, [*acts, Kill(j.job, msg, "hang"), Note(j.job, "hang", msg, r.brief())]
    if not governed:
        return j, acts

    j = _learn(j, w, c)
    threads, duty = _cpu(j, w, c)
    if threads != j.threads:
        acts.append(SetThreads(j.job, threads))
    if duty != j.duty:
        acts.append(SetDuty(j.job, duty))
    limit = c.limits.max_cpu
    if duty == 0.0:
        mode = "battery" if c.battery else "stopped"
        message = f"stopped: {c.battery or f'other programs use {c.other:.0f}% CPU, limit {limit:g}%'}"
    elif threads < (j.useful_threads or j.max_threads) or duty < 1.0:
        mode = "throttled"
        message = (f"throttled to {threads} thread(s)" + (" and a duty cycle" if duty < 1 else "")
                   + f": budget {c.budget:.0f}% CPU = limit {limit:g}% - other programs {c.other:.0f}%")
    else:
        mode, message = "full", f"full speed: other programs use {c.other:.0f}% CPU, limit {limit:g}%"
    if j.mode == "memory" and (j.mem_paused or j.micro_batch < j.batch_size):
        mode, message = "memory", j.message
    changed = mode != j.mode or threads != j.threads or (duty == 0) != (j.duty == 0)
    if changed and message != j.message:  # a new duty alone is no event: status shows it
        acts.append(Note(j.job, mode, message, r.brief()))
    return dataclasses.replace(j, threads=threads, duty=duty, mode=mode, message=message), acts


def _demand(j: JobGov, threads: int) -> float | None:
    return next((cpu for n, cpu, _ in j.demand if n == threads), None)


def _learn(j: JobGov, w: WorkerReading, c: _Context) -> JobGov:
    """Update what the worker was measured to use running free at its thread count, and how many
    of its threads add CPU at all (a thread that adds none is not kept). A reading where the
    machine had no spare CPU only ever raises the figure: contention is not the job's shape."""
    if not c.r.valid or w.stopped or j.duty <= 0.0 or j.user_paused or j.mem_paused:
        return j
    free = min(100.0, w.cpu / j.duty)  # what it would use at full duty
    old = next(((cpu, k) for n, cpu, k in j.demand if n == j.threads), None)
    spare = c.r.total_cpu < 100.0 - c.tuning.spare_cores * c.per_core
    if old is not None and not spare and free < old[0]:
        return j
    a = c.tuning.demand_weight
    value, count = (free, 1) if old is None else ((1 - a) * old[0] + a * free, old[1] + 1)
    demand = (*((n, v, k) for n, v, k in j.demand if n != j.threads), (j.threads, value, count))
    useful = j.useful_threads
    if (spare and count >= c.tuning.demand_readings and j.threads > 1
            and value < (j.threads - c.tuning.useless_thread) * c.per_core):
        useful = min(useful or j.max_threads, max(j.min_threads, math.ceil(value / c.per_core - 0.05)))
    return dataclasses.replace(j, demand=demand, useful_threads=useful)


def _cpu(j: JobGov, w: WorkerReading, c: _Context) -> tuple[int, float]:
    """Threads and duty for the budget. No duty cycle when the budget covers what the job uses
    at its thread count (measured; assumed to fill its threads until measured) or when the limit
    leaves nothing to hold back; otherwise the duty closes the loop on the CPU we measure, so a
    worker that ignores its thread command is held to the budget all the same."""
    budget, per_core, t = c.budget, c.per_core, c.tuning
    most = j.useful_threads or j.max_threads
    if c.limits.max_cpu + t.tolerance >= 100.0 and not c.battery:
        return most, 1.0  # everything is granted: the worker's idle priority already yields to others
    if budget < t.stop_below * per_core:
        return j.threads, 0.0
    threads = max(j.min_threads, min(most, math.ceil(budget / per_core - 0.05)))
    demand = _demand(j, threads)
    expected = demand if demand is not None else threads * per_core
    slack = t.tolerance if j.duty >= 1.0 else -t.tolerance  # hysteresis: no flapping at the edge
    if expected <= budget + slack:
        return threads, 1.0
    if j.duty == 0.0 or j.duty >= 1.0 or threads != j.threads:
        duty = budget / max(expected, 1e-3)
    elif w.cpu > budget + t.tolerance:
        duty = j.duty * budget / w.cpu
    elif w.cpu < budget - t.tolerance:
        duty = min(j.duty * t.max_step_up, j.duty * budget / max(w.cpu, 1e-3))
    else:
        duty = j.duty
    return threads, min(0.99, max(0.05, duty))


def _memory(job: JobGov, c: _Context, w: WorkerReading, governed: bool) -> JobGov | tuple[JobGov, list[Action]]:
    """The memory levers: kill at the hard limit, or a runaway worker (``memjudge``); over the soft limit a
    smaller batch, then a pause, then checkpoint-and-exit; give back after the hold time."""
    j, r, t = job, c.r, c.tuning
    j = dataclasses.replace(j, mem=observe(j.mem, r.t, w.anon if w.anon is not None else w.rss, j.training, t.mem))
    leak = runaway(j.mem, c.mem, r.mem_total, c.hard, t.mem)
    # Over the soft limit the machine's own trend counts too (one reading ahead); under it only
    # this worker's growth projection or the hard limit itself kill.
    heading = c.mem >= c.soft and c.projected >= c.hard
    if c.mem >= c.hard or heading or leak:
        why = leak or f"memory at {c.mem:.0f}% heading over the hard limit {c.hard:.0f}%"
        kills = j.memory_kills + 1
        if kills > t.max_memory_kills:
            msg = f"killed {kills - 1} times for memory; last: {why}"
            return dataclasses.replace(j, memory_kills=kills, mode="failed", message=msg), [Fail(j.job, msg)]
        smaller = micro_batch_at_most(j.batch_size, j.micro_batch // 2)
        msg = f"killed, restarting from the last checkpoint with batch {smaller}/{j.batch_size}: {why}"
        j = dataclasses.replace(j, memory_kills=kills, micro_batch=smaller, mode="memory", message=msg)
        return j, [Kill(j.job, why, "memory"), Note(j.job, "memory", msg, r.brief())]
    if not governed:
        return j
    over = f"memory {c.mem:.0f}% over the limit {c.soft:g}%"
    if c.mem >= c.soft:
        if j.micro_batch > 1 and r.t - j.batch_changed_at >= t.batch_wait:
            smaller = micro_batch_at_most(j.batch_size, j.micro_batch // 2)
            return dataclasses.replace(j, micro_batch=smaller, batch_changed_at=r.t, mode="memory",
                                       message=f"batch {smaller}/{j.batch_size}: {over}")
        if j.micro_batch == 1 and not j.mem_paused and r.t - j.batch_changed_at >= t.batch_wait:
            return dataclasses.replace(j, mem_paused=True, mem_paused_at=r.t, mode="memory",
                                       message=f"paused: {over} even at batch 1")
        if j.mem_paused and r.t - j.mem_paused_at >= t.evict_after:
            msg = f"checkpoint and exit: {over} while paused (a paused process keeps its memory)"
            j = dataclasses.replace(j, mode="memory", message=msg)
            return j, [Evict(j.job, msg), Note(j.job, "memory", msg, r.brief())]
    elif c.memory_back:
        if j.mem_paused:
            return dataclasses.replace(j, mem_paused=False, mode="full",
                                       message=f"resumed: memory back to {c.mem:.0f}%")
        if j.micro_batch < j.batch_size and r.t - j.batch_changed_at >= t.hold:
            bigger = micro_batch_above(j.batch_size, j.micro_batch)
            return dataclasses.replace(j, micro_batch=bigger, batch_changed_at=r.t, mode="memory",
                                       message=f"batch {bigger}/{j.batch_size}: memory back to {c.mem:.0f}%")
    return j


def _memory_actions(old: JobGov, new: JobGov) -> list[Action]:
    acts: list[Action] = []
    if new.micro_batch != old.micro_batch:
        acts.append(SetBatch(new.job, new.micro_batch))
    if new.mem_paused and not old.mem_paused:
        acts.append(Pause(new.job, "memory"))
    if old.mem_paused and not new.mem_paused:
        acts.append(Resume(new.job))
    return acts
