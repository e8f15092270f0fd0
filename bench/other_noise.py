"""How noisy is the governor's "other programs" reading on a quiet machine, and what does the
hold window make of it? The daemon's own ``Monitor`` reads a plain trainer (idle priority) four
times a second, free and under a 10 Hz SIGSTOP/SIGCONT duty cycle driven from here; printed: the
per-reading other load (total - ours), and the mean of its maximum over the trailing 5 s window,
which is what the governor subtracts from the limit (``governor.decide``). Run it on a quiet
machine: everything other programs use shows up as "other".

    python bench/other_noise.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from macgpt.supervisor.monitor import Monitor

HERE = Path(__file__).resolve().parent
HOLD = 5.0


def run(threads: int, duty: float, seconds: float) -> None:
    p = subprocess.Popen([sys.executable, str(HERE / "plain_trainer.py"), "--threads", str(threads), "--idle",
                          "--preset", "small", "--batch-size", "16"], stdout=subprocess.DEVNULL)
    time.sleep(6)  # imports and warm-up
    stop = threading.Event()

    def cycle() -> None:
        while not stop.is_set():
            if duty < 1:
                time.sleep(0.1 * duty)
                os.kill(p.pid, signal.SIGSTOP)
                time.sleep(0.1 * (1 - duty))
                os.kill(p.pid, signal.SIGCONT)
            else:
                time.sleep(0.1)

    th = threading.Thread(target=cycle, daemon=True)
    th.start()
    m = Monitor()
    time.sleep(0.25)
    m.read({1: p.pid})
    rs = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.25)
        r = m.read({1: p.pid})
        if r.valid:
            rs.append((r.t, r.other_cpu, r.total_cpu, r.ours_cpu))
    stop.set()
    th.join()
    os.kill(p.pid, signal.SIGCONT)
    p.kill()
    p.wait()
    other = [x[1] for x in rs]
    window = [max(y[1] for y in rs if x[0] - HOLD < y[0] <= x[0]) for x in rs if x[0] - rs[0][0] >= HOLD]
    print(f"{threads} thread(s), duty {duty:.1f}: total {statistics.mean(x[2] for x in rs):.1f}%, "
          f"ours {statistics.mean(x[3] for x in rs):.1f}%; other per reading: mean {statistics.mean(other):.2f}, "
          f"sd {statistics.pstdev(other):.2f}, max {max(other):.1f}; its max over the {HOLD:g} s hold window: "
          f"mean {statistics.mean(window):.2f} (what the budget subtracts)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    for threads, duty in ((1, 1.0), (2, 1.0), (1, 0.5), (2, 0.6)):
        run(threads, duty, args.seconds)


if __name__ == "__main__":
    main()
