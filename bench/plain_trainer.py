"""What users run today: a plain PyTorch training loop with every core at normal priority (or, with
--idle, at nice 19 + SCHED_IDLE: the priority-only approach). Prints steps/s every second. Its
optimizer is the one `macgpt train` builds for the preset's recipe (modern: Muon + AdamW), so the
two do the same work per step; ``--adamw`` gives plain AdamW as before issue 16.

    python bench/plain_trainer.py [--threads N] [--idle] [--preset original] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from macgpt.config.presets import get_preset
from macgpt.model import GPT
from macgpt.priority import lower
from macgpt.worker.optim import make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--idle", action="store_true")
    ap.add_argument("--preset", default="original")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--adamw", action="store_true", help="plain AdamW instead of the recipe's optimizer")
    args = ap.parse_args()
    if args.idle:
        lower()
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    cfg = dataclasses.replace(preset.model, vocab_size=2000, block_size=args.block_size)
    model = GPT(cfg)
    if args.adamw:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    else:
        opt = make_optimizer(model, cfg.recipe, preset.train_for(cfg.recipe))
    data = torch.randint(0, 2000, (200_000,))
    offsets = torch.arange(args.block_size + 1)
    steps, last = 0, time.perf_counter()
    while True:
        ix = torch.randint(data.numel() - args.block_size - 1, (args.batch_size,))
        rows = data[ix.unsqueeze(1) + offsets]
        _, loss, _ = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        now = time.perf_counter()
        if now - last >= 1.0:
            print(f"{steps / (now - last):.3f}", flush=True)
            steps, last = 0, now


if __name__ == "__main__":
    sys.exit(main())
