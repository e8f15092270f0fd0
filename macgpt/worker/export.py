"""Export a checkpoint as a portable directory (safetensors weights, tokenizer, config) and load
one back. Loading checks every tensor's name, shape and dtype against a model built on the
``meta`` device (no memory) before the real model is allocated."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from macgpt import exportformat as fmt
from macgpt.ckptformat import CheckpointError
from macgpt.config.schema import ConfigError, ModelConfig, check_model, from_dict
from macgpt.fsutil import atomic_write_bytes, atomic_write_text
from macgpt.model import GPT
from macgpt.worker.checkpoint import load_file
from macgpt.worker.modelfile import Loaded
from macgpt.worker.tokenizer import BPETokenizer

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def _unaliased(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses shared storage (a tied head): keep the first name, record the others."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, t in tensors.items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            kept[name] = t.detach().contiguous()
    return kept, aliases


def export(checkpoint: Path, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``out``/{model.safetensors, tokenizer.json, config.json, README.md} from a checkpoint file."""
    from safetensors.torch import save

    state = load_file(checkpoint)
    model_cfg = check_model(from_dict(ModelConfig, state["model_config"]))
    tensors, aliases = _unaliased(state["model"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / fmt.WEIGHTS, save(tensors, metadata={"format": "pt", "aliases": json.dumps(aliases)}))
    atomic_write_text(out / fmt.TOKENIZER, state["tokenizer_json"])
    cfg = {"format": fmt.FORMAT, "version": fmt.VERSION, "model_config": asdict(model_cfg),
           "step": int(state.get("step", 0)), "tokenizer_sha256": state.get("tokenizer_sha256"),
           "source": str(checkpoint), "name": info.get("name")}
    atomic_write_text(out / fmt.CONFIG, json.dumps(cfg, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(out / fmt.README, fmt.readme(cfg, info.get("job"), info.get("last")))
    return cfg


def _check_against_model(d: Path, header: fmt.Header, aliases: dict[str, str], cfg: ModelConfig) -> None:
    with torch.device("meta"):
        expected = GPT(cfg).state_dict()
    where = d / fmt.WEIGHTS
    present = set(header.tensors) | set(aliases)
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the model in {fmt.CONFIG}: "
                              f"missing {missing[:5]}, unexpected {extra[:5]}")
    for name, (dtype, shape) in header.tensors.items():
        want = expected[name]
        if shape != tuple(want.shape) or dtype != DTYPES.get(want.dtype):
            raise CheckpointError(f"{where}: tensor {name!r} is {dtype}{list(shape)}, the model in {fmt.CONFIG} "
                                  f"needs {DTYPES.get(want.dtype)}{list(want.shape)}")
    for name, target in aliases.items():
        if target not in header.tensors or tuple(expected[name].shape) != header.tensors[target][1]:
            raise CheckpointError(f"{where}: alias {name!r} -> {target!r} does not match the model")


def load_dir(d: Path) -> Loaded:
    """An exported directory as a ready model; CheckpointError names the file and what is wrong."""
    from safetensors.torch import load_file as load_tensors

    d = Path(d)
    raw, header = fmt.check_dir(d)
    try:
        cfg = check_model(from_dict(ModelConfig, raw["model_config"]))
        aliases = json.loads(header.metadata.get("aliases", "{}"))
    except (ConfigError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{d / fmt.CONFIG}: field 'model_config': {e}") from None
    _check_against_model(d, header, aliases, cfg)
    tokenizer = BPETokenizer.from_json((d / fmt.TOKENIZER).read_text(encoding="utf-8"))
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{d / fmt.TOKENIZER}: vocabulary of {tokenizer.vocab_size}, the model has {cfg.vocab_size}")
    tensors = load_tensors(str(d / fmt.WEIGHTS))
    tensors.update({name: tensors[target] for name, target in aliases.items()})
    model = GPT(cfg)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return Loaded(model, tokenizer, int(raw.get("step", 0)), d)
