"""Issue 14: what the metrics file costs the training loop.

The tiny preset's worker loop in-process, side by side (order flipped each round): metrics every
step (``log_interval=1``, ten times the default rate) written to ``metrics.jsonl``, against the
same loop with the recorder switched off. Prints both medians and their ratio, and the cost of one
append measured on its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import NullLink, alternate, builtin_streams, median, preset_trainer, say

from macgpt import metricsfile
from macgpt.worker.loop import TrainingLoop


def run(streams: tuple, steps: int, record: bool) -> float:
    tok, train, test = streams
    tr = preset_trainer("tiny", tok, train, test, steps=steps, log_interval=1, sample_interval=0, eval_interval=0,
                        checkpoint_interval=0, checkpoint_seconds=0, threads=1)
    with tempfile.TemporaryDirectory() as d:
        loop = TrainingLoop(tr, Path(d), NullLink())
        if not record:
            loop.recorder._append = lambda kind, fields: None  # the baseline: no file at all
        start = time.perf_counter()
        loop.run()
        return (time.perf_counter() - start) / steps


def append_cost(n: int = 2000) -> float:
    record = {"step": 1, "epoch": 1, "loss": 5.1, "avg_loss": 5.3, "lr": 1e-3, "tokens_per_s": 2e4, "steps_per_s": 6.0,
              "threads": 2, "batch_size": 48, "micro_batch": 48, "rss": 3e8, "cpu_percent": 55.0}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "metrics.jsonl"
        start = time.perf_counter()
        for _ in range(n):
            metricsfile.append(path, "train", record)
        return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    streams = builtin_streams()
    with_file, without = alternate(lambda: run(streams, args.steps, True), lambda: run(streams, args.steps, False),
                                   args.rounds)
    a, b = median(with_file), median(without)
    say(f"seconds per step, metrics every step: with metrics.jsonl {a * 1000:.2f} ms, without {b * 1000:.2f} ms; "
        f"ratio {a / b:.3f} ({args.rounds} rounds of {args.steps} steps)")
    say(f"one append on its own: {append_cost() * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
