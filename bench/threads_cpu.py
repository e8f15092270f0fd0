"""Does a live torch.set_num_threads change really change the process's CPU use here?

Trains `original` in this process and switches the thread count between phases without
restarting; prints the cores used (CPU seconds / wall seconds) and steps/s of each phase.

    python bench/threads_cpu.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import time

from common import builtin_streams, preset_trainer, say


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    tok, train, test = builtin_streams()
    tr = preset_trainer("original", tok, train, test, threads=os.cpu_count() or 2, batch_size=16)
    for _ in range(3):
        tr.train_step()
    for threads in (os.cpu_count() or 2, 1, os.cpu_count() or 2, 1):
        tr.set_threads(threads)
        t0, c0 = time.perf_counter(), sum(os.times()[:2])
        steps = 0
        while time.perf_counter() - t0 < args.seconds:
            tr.train_step()
            steps += 1
        wall, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - c0
        say(f"threads {threads}: {cpu / wall:.2f} cores busy, {steps / wall:.2f} steps/s")


if __name__ == "__main__":
    main()
