"""What reading the home directly costs (issue 13): `macgpt ls` and `macgpt status --json` with the
daemon down, over a home of 25 finished jobs (2-11 MB each, as after an afternoon), against the
CLI's own start-up (`macgpt --version`), run alternately in one run; wall time of each process
measured from outside. Prints the medians and the ratio."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from macgpt.paths import layout
from macgpt.supervisor.store import JobStore

MACGPT = str(Path(sys.executable).with_name("macgpt"))
JOBS = 25
ROUNDS = 15


def make_home(home: Path) -> None:
    lay = layout(home)
    store = JobStore(lay.db)
    for i in range(JOBS):
        jid = store.create(f"exp-{i}", "tiny", {"config": "tiny"}, 200)
        store.transition(jid, "starting")
        store.transition(jid, "completed", None, step=200)
        store.append_events([(jid, s, time.time(), "metrics", {"step": s, "loss": 3.0}) for s in range(1, 201)])
        d = lay.job_dir(jid)
        d.mkdir(parents=True)
        for n in range(3):
            (d / f"ckpt-{n:08d}.pt").write_bytes(os.urandom((2 + i % 4) * 2**20 // 3))
    store.close()


def wall(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([MACGPT, *args], capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mgb-") as tmp:
        home = Path(tmp)
        make_home(home)
        env = {**os.environ, "MACGPT_HOME": str(home)}
        times: dict[str, list[float]] = {"--version": [], "ls": [], "status --json": []}
        for _ in range(ROUNDS):
            for cmd in times:
                times[cmd].append(wall(cmd.split(), env))
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"macgpt {k:<14} median {v * 1000:7.1f} ms over {ROUNDS} runs")
        print(f"offline ls / bare start-up: {med['ls'] / med['--version']:.2f}x; "
              f"offline status --json / bare start-up: {med['status --json'] / med['--version']:.2f}x "
              f"({JOBS} jobs, {os.cpu_count()} cores, machine busy: load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
