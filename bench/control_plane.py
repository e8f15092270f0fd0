"""The control plane's cost: `macgpt status` wall time, the control round trip, the daemon's own
CPU and memory (idle and supervising), and training throughput under the daemon against the
same job run by `macgpt train` (alternating runs, medians; limits lifted so only the control
plane differs).

    python bench/control_plane.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import alternate, median, say

from macgpt.client.connection import Client
from macgpt.paths import layout

BIN = Path(sys.executable).parent
JOB = ["small", "--steps", "250", "--set", "sample_interval=0", "--max-cpu", "100", "--threads", "2"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=900)


def steps_per_s(events: list[dict]) -> float:
    """Median steps/s of the metric lines after the first (which includes warm-up)."""
    rates = [e["steps_per_s"] for e in events if e.get("event", e.get("kind")) == "metrics"]
    return median(rates[1:] or rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="mg-bench-")
    env = {**os.environ, "MACGPT_HOME": home}
    run("macgptd", "start", env=env)
    lay = layout(home)
    client = Client(lay)
    pid = client.call("ping")["pid"]
    daemon = psutil.Process(pid)
    try:
        walls = []
        for _ in range(15):
            t = time.perf_counter()
            run("macgpt", "status", env=env)
            walls.append(time.perf_counter() - t)
        trips = []
        for _ in range(300):
            t = time.perf_counter()
            client.call("ping")
            trips.append(time.perf_counter() - t)
        say(f"`macgpt status` wall time: median {median(walls) * 1000:.0f} ms (target < 300 ms) "
            f"{'OK' if median(walls) < 0.3 else 'MISS'}; control round trip median {median(trips) * 1000:.2f} ms "
            f"(target < 10 ms) {'OK' if median(trips) < 0.01 else 'MISS'}")
        time.sleep(2)
        c0, t0 = sum(daemon.cpu_times()[:2]), time.perf_counter()
        time.sleep(20)
        idle = 100 * (sum(daemon.cpu_times()[:2]) - c0) / (time.perf_counter() - t0)
        rss = daemon.memory_info().rss / 2**20
        say(f"daemon idle: {idle:.2f}% of one core (target < 0.5%) {'OK' if idle < 0.5 else 'MISS'}; "
            f"RSS {rss:.0f} MB (target < 80 MB) {'OK' if rss < 80 else 'MISS'}")

        supervising = []

        def under_daemon() -> float:
            job = json.loads(run("macgpt", "submit", *JOB, "--json", env=env).stdout)["job"]
            c0, t0 = sum(daemon.cpu_times()[:2]), time.perf_counter()
            events = [json.loads(x) for x in run("macgpt", "logs", str(job), "-f", "--json", env=env).stdout.splitlines()]
            supervising.append(100 * (sum(daemon.cpu_times()[:2]) - c0) / (time.perf_counter() - t0))
            return steps_per_s([{"event": e["kind"], **e["data"]} for e in events])

        def in_foreground() -> float:
            r = run("macgpt", "train", *JOB, "--json", "--fresh", "--out", f"{home}/fg", env=env)
            return steps_per_s([json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")])

        ours, theirs = alternate(under_daemon, in_foreground, args.rounds)
        ratio = median(ours) / median(theirs)
        say(f"training throughput under the daemon vs `macgpt train`: {median(ours):.2f} vs {median(theirs):.2f} steps/s "
            f"= {ratio:.3f} (target >= 0.97) {'OK' if ratio >= 0.97 else 'MISS'} [daemon {ours}, train {theirs}]")
        say(f"daemon CPU while supervising a job: median {median(supervising):.2f}% of one core (target <= 1%) "
            f"{'OK' if median(supervising) <= 1 else 'MISS'} {[round(x, 2) for x in supervising]}")
    finally:
        client.close()
        run("macgptd", "stop", env=env)


if __name__ == "__main__":
    main()
