"""Build a model from a checkpoint's config and tensors without trusting the config: the shapes a
config implies are worked out on the meta device (no memory) and must match the file's tensors
before anything real is allocated, so a tiny file cannot make us build a huge model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from macgpt.ckptformat import CheckpointError
from macgpt.config.schema import ModelConfig
from macgpt.model import GPT

if TYPE_CHECKING:
    from macgpt.worker.tokenizer import BPETokenizer


@dataclass
class Loaded:
    """A model ready to use, from a checkpoint file or an exported directory."""

    model: GPT
    tokenizer: BPETokenizer
    step: int
    path: Path


def _expected(cfg: ModelConfig) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], int]:
    """Name -> (shape, dtype) of every tensor the model's state dict holds, and the bytes of its
    distinct parameters (tied weights counted once), from a model built on the meta device."""
    with torch.device("meta"):
        meta = GPT(cfg)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in meta.state_dict().items()}
    nbytes = sum(p.numel() * p.element_size() for p in meta.parameters())
    return shapes, nbytes


def check_tensors(cfg: ModelConfig, tensors: Any, file_bytes: int, where: str) -> None:
    """Raise ``CheckpointError`` unless ``tensors`` are exactly the model's, shape for shape, and
    the model they describe is no bigger than the file that holds them."""
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{where}: 'model' is a {type(tensors).__name__}, not a dict of tensors")
    shapes, nbytes = _expected(cfg)
    if nbytes > file_bytes:
        raise CheckpointError(f"{where}: model_config describes {nbytes} bytes of weights but the file has "
                              f"{file_bytes} bytes; refused before building anything")
    missing = sorted(shapes.keys() - tensors.keys())
    extra = sorted(tensors.keys() - shapes.keys(), key=str)
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match model_config (missing {missing[:5]}, "
                              f"unexpected {extra[:5]})")
    for name, (shape, dtype) in shapes.items():
        t = tensors[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"{where}: tensor {name!r} is {got}; model_config needs {shape} {dtype}")


def build(cfg: ModelConfig, tensors: Any, path: Path) -> GPT:
    """The model with the file's weights, after ``check_tensors`` passed."""
    check_tensors(cfg, tensors, path.stat().st_size, str(path))
    model = GPT(cfg)
    model.load_state_dict(tensors)
    return model
