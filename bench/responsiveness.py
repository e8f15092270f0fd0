"""Does the machine stay responsive while macgpt trains? Ratios measured side by side in one run.

The user is played by a foreground workload: a fixed CPU-bound job on every core (its wall time)
plus a latency probe (about 5 ms of work every 20 ms; how late each round finishes). It runs
  (a) alone,
  (b) beside an unsupervised trainer (plain PyTorch, every core, normal priority: what people run),
  (p) beside the same trainer at nice 19 + SCHED_IDLE (priority alone),
  (c) beside `macgpt train` with the default limits (the governor).
Then, with macgpt alone: where total CPU settles against --max-cpu and the trainer's throughput
against what that budget allows; the reaction to a foreground load over 10 trials (p95); the
supervisor's own CPU; and a PNG timeline of the governor at work (docs/responsiveness.png).

On a shared machine other people's programs move every figure: each measurement starts once the
machine is quiet, the CPU used during it by processes outside this script's tree is measured
(``common.Foreign``), and a measurement with more than --max-foreign % of the machine is printed as
disturbed and repeated (up to --retries times; a disturbed reaction trial is replaced).

    python bench/responsiveness.py [--rounds 2] [--job-seconds 8] [--trials 10] [--parts scenarios,steady,reactions]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import Foreign, median, say, wait_quiet

HERE = Path(__file__).resolve().parent
MAX_FOREIGN = 2.0  # percent of the machine used by other people's programs that disturbs a measurement
RETRIES = 4
DOCS = HERE.parent / "docs"
MACGPT = str(Path(sys.executable).with_name("macgpt"))
TRAINER = ["original", "--batch-size", "32", "--set", "block_size=64", "--steps", "10000000",
           "--set", "sample_interval=0", "--set", "checkpoint_seconds=0"]


# -- the foreground workload -----------------------------------------------------------------------
def burn(iterations: int) -> None:
    h = b"x" * 64
    for _ in range(iterations):
        h = hashlib.sha256(h).digest()


def calibrate(seconds: float) -> int:
    """Iterations of ``burn`` taking ``seconds`` on one idle core."""
    n = 20_000
    t = time.perf_counter()
    burn(n)
    return int(n * seconds / (time.perf_counter() - t))


def cpu_job(iterations: int, procs: int) -> float:
    """Wall time of ``procs`` processes each burning ``iterations``."""
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=burn, args=(iterations,)) for _ in range(procs)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def probe(unit: int, alone: float, period: float, stop: mp.Event, out: mp.Queue) -> None:
    """About 5 ms of work every ``period``; lateness = finish - (start of round + alone time)."""
    late = []
    nxt = time.perf_counter() + period
    while not stop.is_set():
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        burn(unit)
        late.append(max(0.0, time.perf_counter() - nxt - alone))
        nxt += period
        if nxt < time.perf_counter():  # fell a whole period behind: restart the schedule
            nxt = time.perf_counter() + period
    out.put(late)


def _timed(unit: int) -> float:
    t = time.perf_counter()
    burn(unit)
    return time.perf_counter() - t


def workload(iterations: int, unit: int, alone: float) -> tuple[float, float, float]:
    """(job seconds, probe p50 ms, probe p99 ms) of one foreground run."""
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=probe, args=(unit, alone, 0.020, stop, out))
    p.start()
    time.sleep(0.3)
    seconds = cpu_job(iterations, os.cpu_count() or 2)
    stop.set()
    late = sorted(out.get())
    p.join()
    q = lambda f: late[min(len(late) - 1, int(f * len(late)))] * 1000  # noqa: E731
    return seconds, q(0.50), q(0.99)


# -- the trainers --------------------------------------------------------------------------------------
class Plain:
    def __init__(self, idle: bool) -> None:
        cmd = [sys.executable, str(HERE / "plain_trainer.py")] + (["--idle"] if idle else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.rates: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.rates.append(float(line))

    def ready(self) -> None:
        while len(self.rates) < 3:
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Macgpt:
    """`macgpt train` under default limits, followed through its --json events."""

    def __init__(self, home: str, args: list[str] | None = None) -> None:
        args = args or [*TRAINER, "--json", "--fresh"]
        self.proc = subprocess.Popen([MACGPT, "train", *args], stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "MACGPT_HOME": home})
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def kinds(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == kind]

    def ready(self) -> None:
        while len(self.kinds("metrics")) < 2:
            time.sleep(0.1)

    @property
    def worker(self) -> psutil.Process:
        return psutil.Process(self.kinds("spawned")[-1]["pid"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def tree_cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


# -- the measurements ----------------------------------------------------------------------------------
def scenarios(rounds: int, iterations: int, unit: int, alone: float, home: str) -> dict[str, list[tuple[float, float, float]]]:
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ("a", "b", "p", "c")}
    for r in range(rounds):
        for name in ("a", "b", "p", "c") if r % 2 == 0 else ("c", "p", "b", "a"):
            for attempt in range(RETRIES + 1):
                wait_quiet()
                trainer = {"a": lambda: None, "b": lambda: Plain(False), "p": lambda: Plain(True),
                           "c": lambda: Macgpt(home)}[name]()
                if trainer is not None:
                    trainer.ready()
                    time.sleep(3.0)  # the trainer at its steady state (macgpt: at its CPU budget)
                foreign = Foreign()
                got = workload(iterations, unit, alone)
                f = foreign.percent()
                if trainer is not None:
                    trainer.stop()
                if f <= MAX_FOREIGN or attempt == RETRIES:
                    results[name].append(got)
                    break
                say(f"   ({name}, round {r + 1}: DISTURBED by other programs, {f:.1f}% of the machine; "
                    f"got {tuple(round(v, 2) for v in got)}; again)")
            time.sleep(2.0)
    return results


def steady_state(home: str, seconds: float) -> dict:
    """``_steady_state`` until other people's programs leave it undisturbed (``RETRIES`` times)."""
    for attempt in range(RETRIES + 1):
        wait_quiet()
        foreign = Foreign()
        s = _steady_state(home, seconds)
        f = foreign.percent()
        if f <= MAX_FOREIGN or attempt == RETRIES:
            s["foreign"] = f
            return s
        say(f"   (macgpt alone: DISTURBED by other programs, {f:.1f}% of the machine; total CPU {s['total_cpu']:.1f}%, "
            f"{s['steps_per_s']:.2f} of {s['allowed']:.2f} steps/s; again)")
    raise AssertionError


def _steady_state(home: str, seconds: float) -> dict:
    """macgpt alone: total CPU against the limit, throughput against what the budget allows, the
    supervisor's own CPU, and a 4 Hz timeline for the picture."""
    rates = {}
    for threads in (1, 2):
        proc = subprocess.Popen([sys.executable, str(HERE / "plain_trainer.py"), "--threads", str(threads)],
                                stdout=subprocess.PIPE, text=True)
        lines = [float(proc.stdout.readline()) for _ in range(6)]
        proc.kill()
        proc.wait()
        rates[threads] = median(lines[2:])
    m = Macgpt(home)
    m.ready()
    supervisor = psutil.Process(m.proc.pid)
    psutil.cpu_percent()
    time.sleep(5.0)  # settle
    c0, t0 = tree_cpu(supervisor), time.perf_counter()
    totals, first = [], len(m.kinds("metrics"))
    while time.perf_counter() - t0 < seconds:
        totals.append(psutil.cpu_percent(interval=0.5))
    own = 100 * (tree_cpu(supervisor) - c0) / (time.perf_counter() - t0)
    got = median([e["steps_per_s"] for e in m.kinds("metrics")[first:]])
    m.stop()
    budget_cores = 0.70 * (os.cpu_count() or 2)
    floor = int(budget_cores)
    if floor >= 1:  # interpolate between whole cores
        allowed = rates[floor] + (budget_cores - floor) * (rates[min(2, floor + 1)] - rates[floor])
    else:
        allowed = rates[1] * budget_cores
    return {"total_cpu": statistics.mean(totals), "total_min": min(totals), "total_max": max(totals),
            "steps_per_s": got, "allowed": allowed, "plain_1": rates[1], "plain_2": rates[2], "supervisor_cpu": own}


def reactions(home: str, trials: int) -> tuple[list[float], list[float], list[dict]]:
    """Start and stop a foreground load ``trials`` times: seconds until the trainer is stopped, and
    until it runs again; with a timeline of CPU, memory and governor state."""
    m = Macgpt(home)
    m.ready()
    time.sleep(3.0)
    timeline: list[dict] = []
    done = threading.Event()
    worker = m.worker

    def sample() -> None:
        last_w, last_t = tree_cpu(worker), time.perf_counter()
        psutil.cpu_percent()
        while not done.is_set():
            time.sleep(0.25)
            now, w = time.perf_counter(), tree_cpu(worker)
            total = psutil.cpu_percent()
            ours = 100 * (w - last_w) / ((now - last_t) * (os.cpu_count() or 2))
            last_w, last_t = w, now
            timeline.append({"t": now, "total": total, "ours": min(ours, total),
                             "mem": psutil.virtual_memory().percent})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stop_s, back_s = [], []
    attempts = 0
    while len(stop_s) < trials and attempts < trials + 2 * RETRIES:
        attempts += 1
        foreign = Foreign()
        seen = len(m.events)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
        t_on = time.time()
        stopped = _wait_event(m, seen, lambda e: e["event"] == "governor" and e["state"] == "stopped", 10)
        time.sleep(1.5)
        seen = len(m.events)
        for h in hogs:
            h.kill()
            h.wait()
        t_off = time.time()
        back = _wait_event(m, seen, lambda e: e["event"] == "governor" and e["state"] in ("throttled", "full"), 15)
        time.sleep(1.0)
        f = foreign.percent()  # the hogs are this script's children: not foreign
        if f > MAX_FOREIGN:
            say(f"   (reaction trial: DISTURBED by other programs, {f:.1f}% of the machine; replaced)")
            continue
        stop_s.append(stopped["time"] - t_on if stopped else float("nan"))
        back_s.append(back["time"] - t_off if back else float("nan"))
    done.set()
    sampler.join()
    states = [(e["time"], e["state"]) for e in m.kinds("governor")]
    m.stop()
    return stop_s, back_s, _with_states(timeline, states)


def _wait_event(m: Macgpt, seen: int, pred, timeout: float) -> dict | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in list(m.events)[seen:]:
            if pred(e):
                return e
        time.sleep(0.01)
    return None


def _with_states(timeline: list[dict], states: list[tuple[float, str]]) -> list[dict]:
    offset = time.time() - time.perf_counter()
    for point in timeline:
        wall = point["t"] + offset
        current = [s for t, s in states if t <= wall]
        point["state"] = current[-1] if current else "full"
    return timeline


def picture(timeline: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = timeline[0]["t"]
    xs = [p["t"] - t0 for p in timeline]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ours = [p["ours"] for p in timeline]
    other = [max(0.0, p["total"] - p["ours"]) for p in timeline]
    ax.stackplot(xs, ours, other, labels=["macgpt trainer CPU", "other programs' CPU"], colors=["#4c72b0", "#dd8452"],
                 alpha=0.85)
    ax.plot(xs, [p["mem"] for p in timeline], color="#55a868", label="memory %")
    ax.axhline(70, color="black", linestyle="--", linewidth=1, label="--max-cpu 70")
    ax.set_ylabel("% of the machine")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.set_title("macgpt's governor: a foreground load starts and stops, the trainer gets out of the way and comes back")
    levels = {"full": 3, "throttled": 2, "memory": 1, "stopped": 0, "battery": 0}
    ax2.step(xs, [levels.get(p["state"], 2) for p in timeline], where="post", color="#c44e52")
    ax2.set_yticks([0, 1, 2, 3], ["stopped", "memory", "throttled", "full"])
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("governor")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--job-seconds", type=float, default=8.0, help="length of the CPU job alone (per core)")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--settle-seconds", type=float, default=15.0)
    ap.add_argument("--parts", default="scenarios,steady,reactions")
    args = ap.parse_args()
    parts = args.parts.split(",")
    home = tempfile.mkdtemp(prefix="mg-resp-")
    iterations, unit = calibrate(args.job_seconds), calibrate(0.005)
    alone = statistics.median(_timed(unit) for _ in range(40))  # one probe round on an idle machine
    say(f"{os.cpu_count()} cores; CPU job {args.job_seconds:g} s per core alone; probe 5 ms every 20 ms; {args.rounds} rounds")

    if "scenarios" in parts:
        show_scenarios(scenarios(args.rounds, iterations, unit, alone, home))
    if "steady" in parts:
        show_steady(steady_state(home, args.settle_seconds))
    if "reactions" in parts:
        show_reactions(*reactions(home, args.trials))


def show_scenarios(res: dict[str, list[tuple[float, float, float]]]) -> None:
    a_job, _, a_p99 = (median([r[i] for r in res["a"]]) for i in range(3))
    names = {"a": "alone", "b": "unsupervised trainer", "p": "trainer at nice 19 + SCHED_IDLE", "c": "macgpt (defaults)"}
    for key in ("a", "b", "p", "c"):
        job, p50, p99 = (median([r[i] for r in res[key]]) for i in range(3))
        say(f"({key}) {names[key]:34s} job {job:6.2f}s = {job / a_job:4.2f}x | probe lateness p50 {p50:5.2f} ms, "
            f"p99 {p99:6.2f} ms = {p99 / a_p99:5.2f}x  {[tuple(round(v, 2) for v in r) for r in res[key]]}")
    c_job, _, c_p99 = (median([r[i] for r in res["c"]]) for i in range(3))
    say(f"targets for (c): job <= 1.05x -> {c_job / a_job:.2f}x {'OK' if c_job / a_job <= 1.05 else 'MISS'}; "
        f"p99 lateness <= 2x -> {c_p99 / a_p99:.2f}x {'OK' if c_p99 / a_p99 <= 2 else 'MISS'}")
    b_p99 = median([r[2] for r in res["b"]])
    say(f"probe p99 beside macgpt / beside the unsupervised trainer: {c_p99 / b_p99:.2f} (target <= 0.5)")


def show_steady(s: dict) -> None:
    say(f"macgpt alone, --max-cpu 70: total CPU {s['total_cpu']:.1f}% (min {s['total_min']:.0f}, max {s['total_max']:.0f}; "
        f"target 70 +- 5) {'OK' if abs(s['total_cpu'] - 70) <= 5 else 'MISS'}; other programs {s['foreign']:.1f}%")
    say(f"trainer throughput {s['steps_per_s']:.2f} steps/s vs {s['allowed']:.2f} the budget allows "
        f"(plain 1 thread {s['plain_1']:.2f}, 2 threads {s['plain_2']:.2f}) = {s['steps_per_s'] / s['allowed']:.2f} "
        f"(target >= 0.90) {'OK' if s['steps_per_s'] / s['allowed'] >= 0.9 else 'MISS'}")
    say(f"supervisor's own CPU while governing: {s['supervisor_cpu']:.2f}% of one core (target <= 1%) "
        f"{'OK' if s['supervisor_cpu'] <= 1 else 'MISS'}")


def show_reactions(stop_s: list[float], back_s: list[float], timeline: list[dict]) -> None:
    missed = sum(x != x for x in stop_s) + sum(x != x for x in back_s)  # NaN: the event never came
    stop_s = [float("inf") if x != x else x for x in stop_s]
    back_s = [float("inf") if x != x else x for x in back_s]
    if missed:
        say(f"   {missed} reaction(s) never seen within the timeout (counted as infinite)")
    p95 = sorted(stop_s)[min(len(stop_s) - 1, int(0.95 * len(stop_s)))]
    say(f"reaction to a foreground load over {len(stop_s)} trials: stopped after p50 {median(stop_s):.2f}s, "
        f"p95 {p95:.2f}s (target <= 1 s) {'OK' if p95 <= 1 else 'MISS'}; running again after load ends: "
        f"p50 {median(back_s):.2f}s, max {max(back_s):.2f}s (target <= hold 5 s + 1 s) {'OK' if max(back_s) <= 6 else 'MISS'}")
    picture(timeline, DOCS / "responsiveness.png")
    say(f"timeline picture: {DOCS / 'responsiveness.png'}")


if __name__ == "__main__":
    main()
