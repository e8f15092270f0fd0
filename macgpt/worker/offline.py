"""Use a checkpoint without a running job: sample from it, evaluate it (the guide's generate.py
and evaluate.py). The checkpoint alone rebuilds model and tokenizer."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from macgpt.config.schema import ConfigError, stored_model_config
from macgpt.data.sources import Manifest, texts_of
from macgpt.worker import modelfile
from macgpt.worker.batches import eval_batches, joined, token_stream
from macgpt.worker.checkpoint import CheckpointError, load_file
from macgpt.worker.export import load_dir
from macgpt.worker.modelfile import Loaded
from macgpt.worker.sampling import SampleParams, SampleResult, sample_text
from macgpt.worker.tokencache import TokenFile, build, open_tokens
from macgpt.worker.tokenizer import BPETokenizer

BYTES_PER_TOKEN_BOUND = 8  # no text averages more UTF-8 bytes per token: a sample this big is enough


def load_model(path: str | Path) -> Loaded:
    path = Path(path)
    if path.is_dir():  # a directory written by `macgpt export --out`
        return load_dir(path)
    state = load_file(path)
    try:
        cfg = stored_model_config(state["model_config"])
        tokenizer = BPETokenizer.from_json(state["tokenizer_json"])
        model = modelfile.build(cfg, state.get("model"), path)
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
def evaluate(path: str | Path, manifest: Manifest, limit: int = 65536) -> dict[str, Any]:
    """Loss on an evenly spread sample of about ``limit`` tokens of validated files (0: every
    token, encoded into a temporary token file so memory stays flat)."""
    loaded = load_model(path)
    block = loaded.model.cfg.block_size
    with tempfile.TemporaryDirectory(prefix="macgpt-eval-") as tmp:
        if limit:
            stride = max(1, math.ceil(manifest.text_bytes / (limit * BYTES_PER_TOKEN_BOUND)))
            texts = [t for i, t in enumerate(texts_of(manifest)) if i % stride == 0]
            chars = sum(len(t) for t in texts)
            stream: torch.Tensor | TokenFile = token_stream(loaded.tokenizer, texts)
        else:
            out = Path(tmp) / "eval.tok"
            tok = loaded.tokenizer
            chars = 0

            def counted() -> Any:
                nonlocal chars
                for t in texts_of(manifest):
                    chars += len(t)
                    yield "eval", joined(t)

            build({"eval": out}, counted(), tok.encode_batch,
                  tok.vocab_size, tok.sha256, {"eval": manifest.identity})
            stream, why = open_tokens(out, tok.sha256, manifest.identity)
            if stream is None:
                raise OSError(f"the evaluation tokens could not be read back: {why}")
        total, count = 0.0, 0
        for x, y in eval_batches(stream, block, 16, limit):
            _, loss, _ = loaded.model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
        chars_seen = chars * count / max(1, len(stream) - 1)
        if isinstance(stream, TokenFile):
            stream.close()
    if count == 0:
        raise ValueError("the evaluation data has fewer than 2 tokens")
    mean = total / count
    return {
        "loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count,
        "chars": round(chars_seen), "bytes": manifest.text_bytes,
        "texts": manifest.texts, "step": loaded.step, "model": str(loaded.path),
        "files": [f.path for f in manifest.files], "sampled": bool(limit),
    }
