"""Sampling speed with and without the KV cache: 256 new tokens on `original` (target >= 2x).

The model is untrained (speed does not depend on the weights); stopping at <|im_end|> is off so
every run generates exactly 256 tokens. Runs alternate; medians are compared.

    python bench/sampling_speed.py [--preset original] [--tokens 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from common import alternate, median, say

from macgpt.config.presets import get_preset
from macgpt.model import GPT
from macgpt.worker.sampling import SampleParams, generate_ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="original")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = dataclasses.replace(get_preset(args.preset).model, vocab_size=2000)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    params = SampleParams(max_new_tokens=args.tokens, seed=1, stop_at_im_end=False)
    prompt = list(range(5, 15))

    def timed(use_cache: bool) -> float:
        start = time.perf_counter()
        out, _ = generate_ids(model, prompt, params, None, use_cache=use_cache)
        assert len(out) == args.tokens
        return time.perf_counter() - start

    timed(True), timed(False)
    cached, plain = alternate(lambda: timed(True), lambda: timed(False), args.rounds)
    ratio = median(plain) / median(cached)
    say(f"{args.preset} (context {cfg.block_size}), {args.tokens} new tokens: with cache {median(cached):.3f}s "
        f"({args.tokens / median(cached):.0f} tok/s), without {median(plain):.3f}s ({args.tokens / median(plain):.0f} tok/s): "
        f"speed-up {ratio:.2f}x (target >= 2x) {'OK' if ratio >= 2 else 'MISS'}")


if __name__ == "__main__":
    main()
