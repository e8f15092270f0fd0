"""Typed configuration of a job: model fields, training fields, their ranges, and validation.

Everything here is plain standard library so that the client can validate a job before it is
queued without importing torch. A value outside its range raises ``ConfigError`` naming the
field, the value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from macgpt.errors import ConfigError

__all__ = ["ConfigError"]


@dataclass(frozen=True)
class Bound:
    """The allowed values of one field: a type and an inclusive (or open) numeric range."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed (e.g. a learning rate must be > 0)
    choices: tuple[str, ...] = ()
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        hi = "" if self.hi is None else f"<= {_fmt(self.hi)}"
        return f"{self.kind.__name__} {' and '.join(x for x in (lo, hi) if x)}".strip()


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _f(default: Any, bound: Bound) -> Any:
    return field(default=default, metadata={"bound": bound})


# The training recipes: "modern" (rotary positions, RMSNorm and QK-norm, ReLU², untied head, zero-initialised
# output projections, Muon for the hidden matrices) and "classic" (nanoGPT's: learned positions, LayerNorm, GELU,
# tied head, AdamW for everything). A stored model config without a recipe predates the field: classic.
RECIPES = ("modern", "classic")
LEGACY_RECIPE = "classic"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; stored in every checkpoint."""

    vocab_size: int = _f(2000, Bound(int, 260, 65536, help="BPE vocabulary size"))
    block_size: int = _f(64, Bound(int, 8, 4096, help="context length in tokens"))
    n_layer: int = _f(1, Bound(int, 1, 48, help="transformer blocks"))
    n_head: int = _f(2, Bound(int, 1, 64, help="attention heads (must divide n_embd)"))
    n_embd: int = _f(32, Bound(int, 8, 4096, help="width of the residual stream"))
    dropout: float = _f(0.0, Bound(float, 0.0, 0.9, help="dropout probability"))
    bias: bool = _f(True, Bound(bool, help="biases in linear and LayerNorm layers (classic recipe only)"))
    recipe: str = _f("modern", Bound(str, choices=RECIPES, help="modern (rotary, QK-norm, ReLU², Muon) or classic (nanoGPT's)"))


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimisation, schedule, intervals, sampling tests and resources."""

    steps: int = _f(200, Bound(int, 1, 10_000_000, help="optimizer steps"))
    batch_size: int = _f(4, Bound(int, 1, 4096, help="sequences per optimizer step"))
    lr: float = _f(1e-3, Bound(float, 0.0, 10.0, lo_open=True, help="peak learning rate"))
    min_lr_ratio: float = _f(0.1, Bound(float, 0.0, 1.0, help="final lr as a share of lr"))
    warmup_steps: int = _f(10, Bound(int, 0, 10_000_000, help="linear warm-up steps"))
    weight_decay: float = _f(0.1, Bound(float, 0.0, 10.0, help="AdamW weight decay"))
    beta1: float = _f(0.9, Bound(float, 0.0, 1.0, help="AdamW beta1"))
    beta2: float = _f(0.99, Bound(float, 0.0, 1.0, help="AdamW beta2"))
    muon_lr: float = _f(0.02, Bound(float, 0.0, 10.0, lo_open=True, help="Muon's peak lr for hidden matrices (modern recipe)"))
    muon_momentum: float = _f(0.95, Bound(float, 0.0, 1.0, help="Muon's Nesterov momentum (modern recipe)"))
    muon_dtype: str = _f("auto", Bound(str, choices=("auto", "float32", "bfloat16"),
                                       help="Newton-Schulz precision (auto: bfloat16 where the hardware multiplies it natively)"))
    grad_clip: float = _f(1.0, Bound(float, 0.0, 1e6, help="gradient norm clip (0: off)"))
    seed: int = _f(1337, Bound(int, 0, 2**31 - 1, help="random seed"))
    threads: int = _f(0, Bound(int, 0, 1024, help="CPU threads (0: all cores)"))
    log_interval: int = _f(10, Bound(int, 1, 1_000_000, help="steps between metric lines"))
    eval_interval: int = _f(0, Bound(int, 0, 10_000_000, help="steps between evaluations (0: at the end only)"))
    sample_interval: int = _f(25, Bound(int, 0, 10_000_000, help="steps between generation tests (0: off)"))
    sample_prompt: str = _f("你好，", Bound(str, help="prompt of the generation tests"))
    sample_tokens: int = _f(32, Bound(int, 1, 4096, help="tokens per generation test"))
    checkpoint_interval: int = _f(100, Bound(int, 0, 10_000_000, help="steps between checkpoints (0: off)"))
    checkpoint_seconds: float = _f(30.0, Bound(float, 0.0, 86400.0, help="seconds between checkpoints (0: off)"))
    device: str = _f("auto", Bound(str, choices=("auto", "cpu", "mps", "cuda"), help="compute device"))
    eval_tokens: int = _f(65536, Bound(int, 0, 2**40, help="tokens of an evenly spread evaluation sample (0: every token)"))
    tokenizer_sample_mb: float = _f(32.0, Bound(float, 0.0, 1e6, lo_open=True,
                                         help="MB of text, evenly spread, that the tokenizer is trained on"))
    init_from: str = _f("", Bound(str, help="start from this checkpoint's weights, shape and tokenizer "
                                          "(a fresh optimizer and schedule); empty: random weights"))
    nproc: int = _f(1, Bound(int, 1, 256, help="ranks (processes) of the job on this machine, torch.distributed; "
                                          "the batch is split across all ranks"))
    nnodes: int = _f(1, Bound(int, 1, 1024, help="machines the job runs on (each runs its own --nproc ranks)"))
    node_rank: int = _f(0, Bound(int, 0, 1023, help="this machine's place among --nnodes (0 writes the model)"))
    rdzv: str = _f("", Bound(str, help="HOST:PORT where the nodes meet (node 0's address), needed with nnodes > 1"))


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


def micro_batch_at_most(batch_size: int, n: int) -> int:
    """The largest micro-batch not above ``n`` that divides the batch (gradient accumulation
    then adds up to exactly the batch, so a throttled run trains the same model)."""
    n = max(1, min(n, batch_size))
    while batch_size % n:
        n -= 1
    return n


def micro_batch_above(batch_size: int, n: int) -> int:
    """The next micro-batch up from ``n``: at most double, and always a divisor of the batch above
    ``n`` (with batch 14: 2 -> 7 -> 14), so a shrunk batch always grows back to the whole."""
    next_up = next((m for m in range(n + 1, batch_size + 1) if batch_size % m == 0), batch_size)
    return max(next_up, micro_batch_at_most(batch_size, 2 * n))


def field_bounds(cls: type) -> dict[str, Bound]:
    return {f.name: f.metadata["bound"] for f in fields(cls)}


def section_of(name: str) -> str:
    """Which section ('model' or 'train') holds a field, or ConfigError naming the closest field."""
    for section, cls in SECTIONS.items():
        if name in field_bounds(cls):
            return section
    known = [n for cls in SECTIONS.values() for n in field_bounds(cls)]
    from difflib import get_close_matches

    close = get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown field {name!r}{hint}; known fields: {', '.join(known)}")


def parse_value(name: str, raw: Any, bound: Bound) -> Any:
    """Convert a command-line string (or a JSON value) into the field's type, checking its range."""
    value: Any = raw
    try:
        if bound.kind is bool:
            if isinstance(raw, str):
                low = raw.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = low in ("true", "1", "yes")
            elif not isinstance(raw, bool):
                raise ValueError
        elif bound.kind is int:
            if isinstance(raw, (bool, float)):
                raise ValueError
            value = int(raw, 10) if isinstance(raw, str) else int(raw)
        elif bound.kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        elif bound.kind is str and not isinstance(raw, str):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r}: expected {bound.describe()}") from None
    if bound.choices and value not in bound.choices:
        raise ConfigError(f"{name}={raw!r}: expected {bound.describe()}")
    if bound.kind in (int, float):
        too_low = bound.lo is not None and (value <= bound.lo if bound.lo_open else value < bound.lo)
        too_high = bound.hi is not None and value > bound.hi
        if too_low or too_high:
            raise ConfigError(f"{name}={raw!r} is out of range: expected {bound.describe()}")
    if bound.kind is str and len(value) > 10_000:
        raise ConfigError(f"{name}: value of {len(value)} characters is too long (at most 10000)")
    return value


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A copy of a config dataclass with validated overrides; ConfigError on any bad one."""
    bounds = field_bounds(type(cfg))
    changes = {}
    for name, raw in overrides.items():
        if name not in bounds:
            section_of(name)  # raises with a suggestion
            raise ConfigError(f"field {name!r} does not belong to {type(cfg).__name__}")
        changes[name] = parse_value(name, raw, bounds[name])
    return dataclasses.replace(cfg, **changes)


def check_model(cfg: ModelConfig) -> ModelConfig:
    """Cross-field checks that single-field ranges cannot express."""
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(
            f"n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head}"
        )
    return cfg


def check_train(cfg: TrainConfig) -> TrainConfig:
    """Cross-field checks of the training fields: how a job spreads over ranks and machines."""
    world = cfg.nproc * cfg.nnodes
    if world > cfg.batch_size:
        raise ConfigError(f"nproc={cfg.nproc} x nnodes={cfg.nnodes} = {world} ranks need batch_size >= {world} "
                          f"(each rank trains at least one sequence of a step); got batch_size={cfg.batch_size}")
    if world > 1 and cfg.device == "mps":
        raise ConfigError(f"nproc={cfg.nproc} with device=mps: torch.distributed has no Metal backend; "
                          "use one rank on a Mac's GPU, or device=cpu")
    if cfg.node_rank >= cfg.nnodes:
        raise ConfigError(f"node_rank={cfg.node_rank} is out of range: expected < nnodes={cfg.nnodes}")
    if cfg.nnodes > 1 or cfg.rdzv:
        host, _, port = cfg.rdzv.rpartition(":")
        if cfg.nnodes > 1 and not cfg.rdzv:
            raise ConfigError(f"nnodes={cfg.nnodes} needs rdzv=HOST:PORT, the address where the nodes meet (node 0's)")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"rdzv={cfg.rdzv!r}: expected HOST:PORT, e.g. 192.168.1.10:29500")
    return cfg


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from a dict (a checkpoint or job file), validating every value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    return with_overrides(cls(), data)


def stored_model_config(data: dict[str, Any]) -> ModelConfig:
    """A model config read back from a checkpoint or job file; one written before recipes existed is classic."""
    if not isinstance(data, dict):
        raise ConfigError(f"ModelConfig: expected a mapping, got {type(data).__name__}")
    return check_model(from_dict(ModelConfig, {"recipe": LEGACY_RECIPE, **data}))
