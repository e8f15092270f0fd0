"""Parameter counts and memory estimates computed from a config alone (no torch needed).

``tests/test_estimate.py`` checks the counts against the real ``GPT`` module, and
``macgpt train`` prints the measured peak RSS beside the training estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from macgpt.config.schema import ModelConfig

FLOAT_BYTES = 4  # fp32 weights, gradients, optimizer state and activations
RUNTIME_BYTES = 300 * 2**20  # a worker's memory before its model exists: Python, torch, tokenizers (measured)


@dataclass(frozen=True)
class Estimate:
    params_block: int  # transformer blocks + final LayerNorm (what the guide's table counts)
    params_total: int  # plus token and position embeddings, and the modern recipe's untied head
    weights_bytes: int
    training_bytes: int  # weights + gradients + AdamW moments + activations at this batch


def count_params(cfg: ModelConfig) -> tuple[int, int]:
    """(non-embedding, total) parameter counts of ``GPT(cfg)``."""
    c = cfg.n_embd
    if cfg.recipe == "modern":  # no biases, RMSNorm gains, no position table, an untied head
        non_embedding = cfg.n_layer * (12 * c * c + 2 * c) + c
        return non_embedding, non_embedding + 2 * cfg.vocab_size * c
    ln = 2 * c if cfg.bias else c
    linear_biases = (3 * c + c + 4 * c + c) if cfg.bias else 0
    block = 12 * c * c + linear_biases + 2 * ln
    non_embedding = cfg.n_layer * block + ln
    embedding = cfg.vocab_size * c + cfg.block_size * c
    return non_embedding, non_embedding + embedding


def activation_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Activations kept for the backward pass, roughly: per token and layer about 16 widths
    (LayerNorms, q/k/v, attention output, the 4x MLP before and after GELU) plus the
    attention rows, and the logits with their softmax and gradient (3 x vocab per token)."""
    tokens = batch_size * cfg.block_size
    per_layer = 16 * cfg.n_embd + 2 * cfg.n_head * cfg.block_size
    per_token = cfg.n_layer * per_layer + 2 * cfg.n_embd + 3 * cfg.vocab_size
    return tokens * per_token * FLOAT_BYTES


def estimate(cfg: ModelConfig, batch_size: int) -> Estimate:
    block, total = count_params(cfg)
    weights = total * FLOAT_BYTES
    # weights, gradients and AdamW's two moments: four copies of every parameter
    training = 4 * weights + activation_bytes(cfg, batch_size)
    return Estimate(block, total, weights, training)
