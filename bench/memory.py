"""Memory of a tiny training process: peak RSS (target < 500 MB) and no growth over 5,000 steps.

Runs the real worker loop in this process (fresh interpreter: run it on its own) and samples RSS
every 250 steps; growth is the RSS at the end minus the RSS at step 1,000 (after warm-up).

    python bench/memory.py [--steps 5000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import NullLink, builtin_streams, preset_trainer, say

from macgpt.worker.loop import TrainingLoop, current_rss_bytes
from macgpt.worker.trainer import peak_rss_bytes


class SamplingLink(NullLink):
    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.samples = every, []

    def send(self, kind, **fields) -> None:
        super().send(kind, **fields)
        if kind == "metrics" and fields["step"] % self.every == 0:
            self.samples.append((fields["step"], current_rss_bytes()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    args = ap.parse_args()
    tok, train, test = builtin_streams()
    before = current_rss_bytes()
    tr = preset_trainer("tiny", tok, train, test, steps=args.steps, log_interval=50, sample_interval=500)
    link = SamplingLink(250)
    with tempfile.TemporaryDirectory() as d:
        TrainingLoop(tr, Path(d), link).run()
    mb = 2**20
    after_warmup = next(rss for step, rss in link.samples if step >= min(1000, args.steps // 5))
    end = link.samples[-1][1]
    peak = peak_rss_bytes()
    say(f"tiny, {args.steps} steps: RSS before the model {before / mb:.0f} MB, peak {peak / mb:.0f} MB (target < 500 MB) "
        f"{'OK' if peak < 500 * mb else 'MISS'}")
    say(f"RSS at step {link.samples[0][0]}: {link.samples[0][1] / mb:.1f} MB, after warm-up {after_warmup / mb:.1f} MB, "
        f"at the end {end / mb:.1f} MB: growth {(end - after_warmup) / mb:+.1f} MB "
        f"{'OK' if end - after_warmup < 10 * mb else 'MISS'} (samples every 250 steps: "
        f"{[round(r / mb, 1) for _, r in link.samples]})")


if __name__ == "__main__":
    main()
