"""The named configurations from the guide's table: tiny (~13K), small (~66K), original (~2.5M).

Block (non-embedding) parameter counts follow the guide; the training defaults start from its
values (batch 4, 200 steps, lr 1e-3, a generation test every 25 steps) and change only what the
quality bar needs — see docs/benchmarks.md for the runs behind each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from macgpt.config.schema import ConfigError, ModelConfig, TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    model: ModelConfig
    train: TrainConfig


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            "quick check that everything works (seconds)",
            ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64),
            TrainConfig(steps=200, batch_size=32, lr=1e-2, warmup_steps=10),
        ),
        Preset(
            "small",
            "balance of speed and quality (tens of seconds)",
            ModelConfig(n_layer=2, n_head=4, n_embd=52, block_size=64),
            TrainConfig(steps=300, batch_size=32, lr=1e-2, warmup_steps=20),
        ),
        Preset(
            "original",
            "the full model (minutes)",
            ModelConfig(n_layer=3, n_head=8, n_embd=256, block_size=256),
            TrainConfig(steps=300, batch_size=16, lr=3e-3, warmup_steps=30),
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or ConfigError naming the closest one."""
    try:
        return PRESETS[name]
    except KeyError:
        from difflib import get_close_matches

        close = get_close_matches(name, PRESETS, n=1, cutoff=0.4)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown config {name!r}{hint}; choose one of: {', '.join(PRESETS)}"
        ) from None
