"""Small builders shared by the tests: a tokenizer, streams and a trainer on the built-in data."""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import torch

from macgpt.config.presets import get_preset
from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import load_corpus
from macgpt.worker.batches import token_stream
from macgpt.worker.tokenizer import BPETokenizer
from macgpt.worker.trainer import Trainer


@cache
def tokenizer(vocab: int = 600) -> BPETokenizer:
    return BPETokenizer.train(load_corpus([builtin_path(BUILTIN_TRAIN)]).texts, vocab)


@cache
def streams(vocab: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    tok = tokenizer(vocab)
    return (token_stream(tok, load_corpus([builtin_path(BUILTIN_TRAIN)]).texts),
            token_stream(tok, load_corpus([builtin_path(BUILTIN_TEST)]).texts))


def trainer(preset: str = "tiny", vocab: int = 600, model: dict[str, Any] | None = None, **train: Any) -> Trainer:
    p = get_preset(preset)
    tok = tokenizer(vocab)
    mc = dataclasses.replace(p.model, vocab_size=tok.vocab_size, **(model or {}))
    tc = dataclasses.replace(p.train, **{"threads": 1, "batch_size": 4, **train})  # small, fast steps
    tr, ev = streams(vocab)
    return Trainer(mc, tc, tok, tr, ev, torch.device("cpu"))
