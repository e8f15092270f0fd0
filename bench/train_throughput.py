"""Training throughput: our worker loop vs a minimal plain-PyTorch loop, side by side.

Both train the same model (macgpt.model.GPT) with the same fused AdamW, batch and thread count
on the built-in data. Ours is the real ``TrainingLoop`` (metrics, checkpoints every 100 steps
and every 30 s, knob polling) minus generation tests and evaluation, timed from the start to its
last step's metrics (the end-of-job saves, which a plain loop does not do, are timed apart); the
reference is the classic nanoGPT inner loop with nothing else. Runs alternate; the ratio of the
medians is printed.

    python bench/train_throughput.py [--presets tiny,small,original] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from common import NullLink, alternate, builtin_streams, median, preset_trainer, say

from macgpt.config.presets import get_preset
from macgpt.model import GPT
from macgpt.worker.loop import TrainingLoop
from macgpt.worker.trainer import lr_at


class StepClock(NullLink):
    """Notes when the last step's metrics are sent, before the end-of-job saves."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps, self.last_step_at = steps, 0.0

    def send(self, kind: str, **fields) -> None:
        super().send(kind, **fields)
        if kind == "metrics" and fields["step"] == self.steps:
            self.last_step_at = time.perf_counter()


FINAL_SAVES: list[float] = []


def ours(name: str, steps: int, threads: int, streams) -> float:
    tok, train, test = streams
    tr = preset_trainer(name, tok, train, test, steps=steps, threads=threads, sample_interval=0, eval_interval=0)
    tr.eval_stream = None  # no final evaluation
    clock = StepClock(steps)
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        TrainingLoop(tr, Path(d), clock).run()
        FINAL_SAVES.append(time.perf_counter() - clock.last_step_at)
    return steps * tr.cfg.batch_size * tr.model_cfg.block_size / (clock.last_step_at - start)


def reference(name: str, steps: int, threads: int, streams) -> float:
    tok, train, _ = streams
    p = get_preset(name)
    cfg = dataclasses.replace(p.model, vocab_size=tok.vocab_size)
    tc = p.train
    torch.set_num_threads(threads)
    torch.manual_seed(tc.seed)
    model = GPT(cfg)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    rest = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=True)
    block, batch = cfg.block_size, tc.batch_size
    offsets = torch.arange(block + 1)
    tc = dataclasses.replace(tc, steps=steps)
    start = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        ix = torch.randint(train.numel() - block - 1, (batch,))
        rows = train[ix.unsqueeze(1) + offsets]
        _, loss, _ = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    return steps * batch * block / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small,original")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    streams = builtin_streams()
    steps = {"tiny": 60, "small": 200, "original": 20}  # a few seconds a run each
    say(f"threads {args.threads}; {args.rounds} alternating rounds per preset; tokens/s")
    for name in args.presets.split(","):
        n = steps.get(name, 50)
        ours(name, max(5, n // 10), args.threads, streams)  # warm-up both paths
        reference(name, max(5, n // 10), args.threads, streams)
        FINAL_SAVES.clear()
        a, b = alternate(partial(ours, name, n, args.threads, streams),
                         partial(reference, name, n, args.threads, streams), args.rounds)
        ratio = median(a) / median(b)
        say(f"{name:9s} ours {median(a):9.0f} tok/s | reference {median(b):9.0f} tok/s | ratio {ratio:.3f} "
            f"(target >= 0.98) {'OK' if ratio >= 0.98 else 'MISS'}  [ours {[round(x) for x in a]}, ref {[round(x) for x in b]}]; "
            f"end-of-job saves {median(FINAL_SAVES):.3f}s")


if __name__ == "__main__":
    main()
