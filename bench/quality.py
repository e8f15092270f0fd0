"""Each preset's default run on the built-in data, exactly as a user runs it (`macgpt train`).

Prints the quality bar of the guide (train loss = mean of the last 20 steps: tiny <= 4.0,
small <= 3.0, original <= 2.0), the held-out eval loss, both also per character (a smaller
vocabulary lowers the per-token loss without the model being better), wall time, peak RSS
beside the estimate, and the last generation test for "你好，".

    python bench/quality.py [--presets tiny,small,original] [--runs 3] [--recipe classic]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import builtin_streams, median, say

from macgpt.config.presets import get_preset
from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import load_corpus

BAR = {"tiny": 4.0, "small": 3.0, "original": 2.0}
MACGPT = str(Path(sys.executable).with_name("macgpt"))


def run(preset: str, home: str, out: Path, recipe: str | None = None) -> list[dict]:
    extra = ["--set", f"recipe={recipe}"] if recipe else []
    r = subprocess.run([MACGPT, "train", preset, "--json", "--fresh", "--out", str(out), *extra], capture_output=True, text=True,
                       env={**os.environ, "MACGPT_HOME": home})
    if r.returncode != 0:
        raise SystemExit(f"{preset} failed: {r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny,small,original")
    ap.add_argument("--runs", type=int, default=3, help="runs per preset for the wall-time median")
    ap.add_argument("--recipe", default=None, help="classic: `--set recipe=classic` (its own defaults)")
    args = ap.parse_args()
    chars = {}
    for name in args.presets.split(","):
        vocab = get_preset(name).model.vocab_size
        if vocab not in chars:
            _, train, test = builtin_streams(vocab)
            chars[vocab] = (train.numel() / load_corpus([builtin_path(BUILTIN_TRAIN)]).chars,
                            test.numel() / load_corpus([builtin_path(BUILTIN_TEST)]).chars)
        with tempfile.TemporaryDirectory() as home:
            walls, summary, events = [], None, []
            for i in range(args.runs):
                events = run(name, home, Path(home) / f"run{i}", args.recipe)
                summary = events[-1]
                walls.append(summary["wall_seconds"])
        tpc, epc = chars[vocab]
        samples = [e["text"] for e in events if e["event"] == "sample"]
        p = get_preset(name)
        tc = p.train_for(args.recipe or p.model.recipe)
        say(f"== {name} ({args.recipe or p.model.recipe}): {p.model.n_layer}x{p.model.n_embd}, vocab {vocab}, {tc.steps} steps, "
            f"batch {tc.batch_size}, lr {tc.lr:g}")
        ok = summary["train_loss"] <= BAR[name]
        say(f"   train loss (last 20 steps) {summary['train_loss']:.3f} (bar {BAR[name]}) {'OK' if ok else 'MISS'}; "
            f"{summary['train_loss'] * tpc:.3f} nats/char")
        say(f"   eval loss {summary['eval_loss']:.3f} (perplexity {summary['perplexity']:.1f}); "
            f"{summary['eval_loss'] * epc:.3f} nats/char")
        say(f"   wall time median {median(walls):.2f}s of {[round(w, 2) for w in walls]} "
            f"(training {summary['train_seconds']:.2f}s); peak RSS {summary['peak_rss'] / 2**20:.0f} MB "
            f"(training estimate {summary['estimated_training_bytes'] / 2**20:.1f} MB + runtime)")
        say(f"   generation test: {samples[-1]!r}")


if __name__ == "__main__":
    main()
