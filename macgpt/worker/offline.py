"""Use a checkpoint without a running job: sample from it, evaluate it (the guide's generate.py
and evaluate.py). The checkpoint alone rebuilds model and tokenizer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from macgpt.config.schema import ConfigError, ModelConfig, check_model, from_dict
from macgpt.data.texts import load_corpus
from macgpt.model import GPT
from macgpt.worker.batches import eval_batches, token_stream
from macgpt.worker.checkpoint import CheckpointError, load_file
from macgpt.worker.sampling import SampleParams, SampleResult, sample_text
from macgpt.worker.tokenizer import BPETokenizer


@dataclasses.dataclass
class Loaded:
    model: GPT
    tokenizer: BPETokenizer
    step: int
    path: Path


def load_model(path: str | Path) -> Loaded:
    path = Path(path)
    if path.is_dir():  # a directory written by `macgpt export --out`
        from macgpt.worker.export import load_dir

        return load_dir(path)
    state = load_file(path)
    try:
        cfg = check_model(from_dict(ModelConfig, state["model_config"]))
        tokenizer = BPETokenizer.from_json(state["tokenizer_json"])
        model = GPT(cfg)
        model.load_state_dict(state["model"])
    except (KeyError, ConfigError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a usable model checkpoint: {e}") from None
    model.eval()
    return Loaded(model, tokenizer, int(state.get("step", 0)), path)


def sample(
    path: str | Path, prompt: str, params: SampleParams, on_text: Callable[[str], None] | None = None
) -> tuple[SampleResult, Loaded]:
    loaded = load_model(path)
    return sample_text(loaded.model, loaded.tokenizer, prompt, params, on_text), loaded


@torch.no_grad()
def evaluate(path: str | Path, data: list[str]) -> dict[str, Any]:
    loaded = load_model(path)
    corpus = load_corpus(data)
    stream = token_stream(loaded.tokenizer, corpus.texts)
    total, count = 0.0, 0
    for x, y in eval_batches(stream, loaded.model.cfg.block_size, 16):
        _, loss, _ = loaded.model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    if count == 0:
        raise ValueError("the evaluation data has fewer than 2 tokens")
    mean = total / count
    return {
        "loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count,
        "chars": corpus.chars, "texts": len(corpus.texts), "step": loaded.step,
        "model": str(loaded.path), "files": list(corpus.files),
    }
