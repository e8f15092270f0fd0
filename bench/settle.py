"""Where does total CPU settle under --max-cpu L, and does the job get the throughput its budget
allows? One run, side by side: each config first unthrottled (--max-cpu 100), then at each limit.

Measured from outside: total machine CPU with psutil every 0.5 s after a settle time, the
worker's tree CPU from its process times, tokens/s from the job's own metrics. "Throughput for
the budget" is tokens/s at L divided by what the unthrottled job would reach on the CPU share L
leaves it: tokens/s free x min(1, (L - other) / its free CPU), other being the machine's CPU
before the job starts. A busy machine (other engineers' tests) moves every figure: say so.

    python bench/settle.py [--configs tiny] [--limits 30,50,70,90] [--seconds 12] [--settle 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import psutil
from responsiveness import Macgpt


def job_args(config: str) -> list[str]:
    return [config, "--steps", "10000000", "--set", "sample_interval=0", "--set", "checkpoint_seconds=0",
            "--set", "log_interval=5", "--fresh", "--json"]


class Job(Macgpt):
    def __init__(self, config: str, limit: float, home: str) -> None:
        super().__init__(home, [*job_args(config), "--max-cpu", f"{limit:g}"])

    def wait_training(self, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while not self.kinds("started"):  # held stopped on a busy machine it may never report a metric
            if time.monotonic() > end or self.proc.poll() is not None:
                raise SystemExit(f"the job did not start training: {self.events[-3:]}")
            time.sleep(0.2)

    def worker_cpu(self) -> float:
        try:
            p = psutil.Process(self.kinds("spawned")[-1]["pid"])
            procs = [p, *p.children(recursive=True)]
            return sum(q.cpu_times().user + q.cpu_times().system for q in procs)
        except psutil.Error:
            return 0.0


def measure(config: str, limit: float, seconds: float, settle: float, home: str) -> dict:
    psutil.cpu_percent()
    other = statistics.mean(psutil.cpu_percent(interval=0.5) for _ in range(4))  # before the job
    job = Job(config, limit, home)
    job.wait_training()
    time.sleep(settle)
    first = len(job.kinds("metrics"))
    c0, t0 = job.worker_cpu(), time.monotonic()
    psutil.cpu_percent()
    totals = [psutil.cpu_percent(interval=0.5) for _ in range(int(seconds / 0.5))]
    worker = 100 * (job.worker_cpu() - c0) / (time.monotonic() - t0) / (os.cpu_count() or 1)
    rates = [e["tokens_per_s"] for e in job.kinds("metrics")[first:] if e.get("tokens_per_s")]
    notes = [e["message"] for e in job.kinds("governor")]
    job.stop()
    return {"limit": limit, "other_before": other, "total": statistics.mean(totals),
            "total_sd": statistics.pstdev(totals), "worker": worker,
            "tokens_per_s": statistics.median(rates) if rates else 0.0, "notes": len(notes),
            "last_note": notes[-1] if notes else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny")
    ap.add_argument("--limits", default="30,50,70,90")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--settle", type=float, default=6.0)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="mg-settle-")
    print(f"{os.cpu_count()} cores; {args.seconds:g} s measured after {args.settle:g} s settling", flush=True)
    for config in args.configs.split(","):
        free = measure(config, 100, args.seconds, args.settle, home)
        print(f"{config} unthrottled: total {free['total']:.1f}% (other before {free['other_before']:.1f}%), "
              f"worker {free['worker']:.1f}%, {free['tokens_per_s']:.0f} tokens/s", flush=True)
        for limit in (float(x) for x in args.limits.split(",")):
            r = measure(config, limit, args.seconds, args.settle, home)
            share = min(1.0, max(0.0, limit - r["other_before"]) / max(free["worker"], 1e-3))
            ratio = r["tokens_per_s"] / max(free["tokens_per_s"] * share, 1e-3)
            print(f"{config} --max-cpu {limit:g}: total {r['total']:.1f}% +- {r['total_sd']:.1f} "
                  f"(error {r['total'] - limit:+.1f}; other before {r['other_before']:.1f}%), worker {r['worker']:.1f}%, "
                  f"{r['tokens_per_s']:.0f} tokens/s = {ratio:.2f} of the budget's share; "
                  f"{r['notes']} governor lines, last: {r['last_note']!r}", flush=True)


if __name__ == "__main__":
    main()
