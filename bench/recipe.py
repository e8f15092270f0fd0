"""The modern recipe against the classic one, side by side in one run (issue 16's targets).

1. Newton–Schulz at the ``original`` shapes: matrices one at a time vs stacked by shape, fp32 vs bf16.
2. The default tiny run with each recipe's preset defaults, alternated, in process: the train
   loss of the guide's bar and the training time, with their ratio.
3. Each preset's shape on the shared real corpus (``shared/data/real_chat``, found by walking up
   from the repository; its held-out split is the eval file), both recipes at the same batch,
   threads and data for ``--steps`` steps: held-out loss at 300 and at the end, the wall time the
   modern recipe needs to reach the classic recipe's final held-out loss (evaluations are not
   counted), and the optimizer's share of a modern step. With ``--plain``, a third line: a plain
   nanoGPT-style loop (its own random windows, AdamW with decay on the matrices, warm-up and cosine,
   clip 1.0; no macgpt Trainer) on the same tokens, shape, steps, batch and learning rate as the
   classic recipe, measured with the same held-out evaluation (issue 9's comparison).

    python bench/recipe.py [--parts ns,tiny,corpus] [--presets tiny,small,original] [--steps 1000] [--plain]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import torch
from common import builtin_streams, median, say

from macgpt.config.presets import get_preset
from macgpt.data.texts import load_corpus
from macgpt.model import GPT
from macgpt.worker.batches import eval_batches, token_stream
from macgpt.worker.muon import fast_dtype, newton_schulz
from macgpt.worker.tokenizer import BPETokenizer
from macgpt.worker.trainer import Trainer

THREADS = 2
EVAL_TOKENS = 64 * 1024  # held-out tokens per evaluation (the first ones of the eval split)


def shared_corpus() -> Path | None:
    for d in Path(__file__).resolve().parents:
        if (d / "shared" / "data" / "real_chat" / "train.jsonl").exists():
            return d / "shared" / "data" / "real_chat"
    return None


def ns_part(rounds: int = 3) -> None:
    torch.set_num_threads(THREADS)
    c = get_preset("original").model.n_embd
    mats = [torch.randn(r, k) for _ in range(3) for r, k in ((3 * c, c), (c, c), (4 * c, c), (c, 4 * c))]

    def one_by_one(dtype: torch.dtype) -> float:
        t0 = time.perf_counter()
        for m in mats:
            newton_schulz(m, dtype=dtype)
        return time.perf_counter() - t0

    def stacked(dtype: torch.dtype) -> float:
        t0 = time.perf_counter()
        by: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for m in mats:
            by.setdefault(tuple(m.shape), []).append(m)
        for group in by.values():
            newton_schulz(torch.stack(group), dtype=dtype)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in ("fp32 one by one", "fp32 stacked", "bf16 one by one", "bf16 stacked")}
    for _ in range(rounds):
        times["fp32 one by one"].append(one_by_one(torch.float32))
        times["fp32 stacked"].append(stacked(torch.float32))
        times["bf16 one by one"].append(one_by_one(torch.bfloat16))
        times["bf16 stacked"].append(stacked(torch.bfloat16))
    base = median(times["fp32 one by one"])
    say(f"== Newton-Schulz, 5 steps, the 12 hidden matrices of `original`, {THREADS} threads, median of {rounds}; "
        f"Muon picks {fast_dtype(torch.device('cpu'))} here (stacked by shape, except fp32 on a CPU: one by one)")
    for k, v in times.items():
        say(f"   {k:16s} {median(v) * 1000:8.1f} ms  ({median(v) / base:.2f}x of one by one)")


def tiny_part(rounds: int) -> None:
    """In process: under load the CLI's governor pauses the worker for its neighbours, so wall time
    there measures the neighbours. Same data, threads and code path (``Trainer.train_step``)."""
    tok, train, test = builtin_streams(get_preset("tiny").model.vocab_size)

    def run(recipe: str) -> tuple[float, float, float]:
        p = get_preset("tiny")
        mc = dataclasses.replace(p.model_for(recipe), vocab_size=tok.vocab_size)
        t = Trainer(mc, dataclasses.replace(p.train_for(recipe), threads=THREADS), tok, train, test, torch.device("cpu"))
        t0 = time.perf_counter()
        while t.step < t.cfg.steps:
            t.train_step()
        return t.recent_loss, time.perf_counter() - t0, t.evaluate()["loss"]

    got: dict[str, list[tuple[float, float, float]]] = {"classic": [], "modern": []}
    for i in range(rounds):
        for recipe in (("classic", "modern") if i % 2 == 0 else ("modern", "classic")):
            got[recipe].append(run(recipe))
    say(f"== default tiny run (each recipe's preset defaults, built-in data, {THREADS} threads), {rounds} runs each, alternated")
    wall = {}
    for recipe, runs in got.items():
        wall[recipe] = median([r[1] for r in runs])
        say(f"   {recipe:8s} train loss {[round(r[0], 3) for r in runs]} (bar 4.0), held-out {median([r[2] for r in runs]):.3f}, "
            f"training {wall[recipe]:.2f}s of {[round(r[1], 2) for r in runs]}")
    say(f"   training time ratio modern/classic {wall['modern'] / wall['classic']:.2f} (target <= 0.7)")


def corpus_trainer(name: str, recipe: str, tok: BPETokenizer, train: torch.Tensor, test: torch.Tensor,
                   steps: int) -> Trainer:
    p = get_preset(name)
    batch = p.train.batch_size  # the modern default's batch, for both
    mc = dataclasses.replace(p.model_for(recipe), vocab_size=tok.vocab_size)
    tc = dataclasses.replace(p.train_for(recipe), steps=steps, batch_size=batch, threads=THREADS,
                             warmup_steps=min(p.train_for(recipe).warmup_steps, steps // 10))
    return Trainer(mc, tc, tok, train, test, torch.device("cpu"))


def curve(t: Trainer, every: int) -> tuple[list[tuple[int, float, float]], float]:
    """(step, training seconds so far, held-out loss) every ``every`` steps, and the optimizer's share of the time."""
    step_fn, opt_s = t.optimizer.step, [0.0]

    def timed() -> None:
        t0 = time.perf_counter()
        step_fn()
        opt_s[0] += time.perf_counter() - t0

    t.optimizer.step = timed
    points, train_s = [], 0.0
    while t.step < t.cfg.steps:
        t0 = time.perf_counter()
        for _ in range(min(every, t.cfg.steps - t.step)):
            t.train_step()
        train_s += time.perf_counter() - t0
        points.append((t.step, train_s, t.evaluate()["loss"]))
    return points, opt_s[0] / train_s


def plain_curve(name: str, vocab: int, train: torch.Tensor, test: torch.Tensor, steps: int,
                every: int) -> tuple[list[tuple[int, float, float]], float]:
    """nanoGPT's loop, written out: the classic shape and training settings, nothing of macgpt's
    training code but the model class (the classic recipe is nanoGPT's model)."""
    p = get_preset(name)
    mc = dataclasses.replace(p.model_for("classic"), vocab_size=vocab)
    tc = p.train_for("classic")
    torch.manual_seed(1337)
    model = GPT(mc)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    rest = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=tc.lr, betas=(tc.beta1, tc.beta2))
    warmup, batch, block = min(tc.warmup_steps, steps // 10), get_preset(name).train.batch_size, mc.block_size
    gen = torch.Generator().manual_seed(1337)

    def lr_at(it: int) -> float:
        if it < warmup:
            return tc.lr * (it + 1) / (warmup + 1)
        ratio = 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / max(1, steps - warmup)))
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * ratio)

    def held_out() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in eval_batches(test, block, 16, EVAL_TOKENS):
                total += model(x, y)[1].item() * y.numel()
                count += y.numel()
        model.train()
        return total / count

    points, train_s, it = [], 0.0, 0
    model.train()
    while it < steps:
        t0 = time.perf_counter()
        for _ in range(min(every, steps - it)):
            ix = torch.randint(len(train) - block - 1, (batch,), generator=gen)
            x = torch.stack([train[i:i + block] for i in ix]).long()
            y = torch.stack([train[i + 1:i + 1 + block] for i in ix]).long()
            for g in opt.param_groups:
                g["lr"] = lr_at(it)
            _, loss, _ = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            it += 1
        train_s += time.perf_counter() - t0
        points.append((it, train_s, held_out()))
    return points, 0.0


def corpus_part(presets: list[str], steps: int, every: int, plain: bool = False) -> None:
    root = shared_corpus()
    if root is None:
        say("== shared corpus: ABSENT (no shared/data/real_chat above the repository); corpus part skipped")
        return
    texts = load_corpus([root / "train.jsonl"]).texts
    held_out = load_corpus([root / "eval.jsonl"]).texts
    for name in presets:
        tok = BPETokenizer.train(texts, get_preset(name).model.vocab_size)
        train, test = token_stream(tok, texts), token_stream(tok, held_out)[:EVAL_TOKENS]
        got = {r: curve(corpus_trainer(name, r, tok, train, test, steps), every) for r in ("classic", "modern")}
        if plain:
            got["plain"] = plain_curve(name, tok.vocab_size, train, test, steps, every)
        p = get_preset(name)
        say(f"== {name} shape ({p.model.n_layer}x{p.model.n_embd}, ctx {p.model.block_size}) on {root.name}, "
            f"batch {p.train.batch_size}, {THREADS} threads, {steps} steps, {test.numel()} held-out tokens")
        for recipe, (points, share) in got.items():
            at = {s: loss for s, _, loss in points}
            early = min(at, key=lambda s: abs(s - 300))
            best = min(points, key=lambda x: x[2])
            say(f"   {recipe:8s} held-out @{early} {at[early]:.3f}, @{steps} {points[-1][2]:.3f} (lowest {best[2]:.3f} "
                f"@{best[0]}); training {points[-1][1]:.1f}s"
                + (f"; optimizer {share * 100:.1f}% of the step time" if recipe != "plain" else ""))
            say(f"            curve (step: held-out): {' '.join(f'{s}:{loss:.3f}' for s, _, loss in points)}")
        target = got["classic"][0][-1][2]
        reach = next(((s, sec) for s, sec, loss in got["modern"][0] if loss <= target), None)
        if reach is None:
            say(f"   modern never reached classic's final {target:.3f}")
        else:
            say(f"   modern reached classic's final {target:.3f} at step {reach[0]} after {reach[1]:.1f}s: "
                f"{reach[1] / got['classic'][0][-1][1]:.2f}x classic's time (target <= 0.35)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="ns,tiny,corpus")
    ap.add_argument("--presets", default="tiny,small,original")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50, help="steps between held-out evaluations")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="also a plain nanoGPT-style loop on the corpus")
    args = ap.parse_args()
    parts = args.parts.split(",")
    if "ns" in parts:
        ns_part(args.rounds)
    if "tiny" in parts:
        tiny_part(args.rounds)
    if "corpus" in parts:
        corpus_part(args.presets.split(","), args.steps, args.every, args.plain)


if __name__ == "__main__":
    main()
