"""Everything before the first step: data, tokenizer, model, and the resume from a checkpoint.

Each phase reports itself through ``note`` so the user sees where start-up time goes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from macgpt.config.job import JobSpec
from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import Corpus, load_corpus
from macgpt.worker import checkpoint
from macgpt.worker.batches import token_stream
from macgpt.worker.tokenizer import load_or_train
from macgpt.worker.trainer import Trainer, resolve_device

Note = Callable[..., None]


class ResumeError(Exception):
    """The job directory holds a checkpoint this job cannot continue from."""


BUILTIN_PROMPT = "你好，"
TURN = "<|im_start|>"


def held_out_prompt(texts: list[str] | tuple[str, ...], chars: int = 6, words: int = 3) -> str:
    """The start of the first held-out text: its turn marker (if any) and a few characters, or a
    few words where the text is written with spaces (English)."""
    text = next((t.strip() for t in texts if t.strip()), BUILTIN_PROMPT)
    marker = TURN if text.startswith(TURN) else ""
    body = text[len(marker):].lstrip()
    start = " ".join(body.split()[:words]) if body.isascii() and " " in body else body[:chars]
    return marker + start


def corpora(spec: JobSpec) -> tuple[Corpus, Corpus | None]:
    train_files = list(spec.data) or [builtin_path(BUILTIN_TRAIN)]
    eval_files = list(spec.eval_data) or ([] if spec.data else [builtin_path(BUILTIN_TEST)])
    return load_corpus(train_files), (load_corpus(eval_files) if eval_files else None)


def prepare(spec: JobSpec, job_dir: Path, cache_dir: Path | None, note: Note) -> Trainer:
    t0 = time.perf_counter()
    train_corpus, eval_corpus = corpora(spec)
    note("data", texts=len(train_corpus.texts), chars=train_corpus.chars,
         eval_texts=len(eval_corpus.texts) if eval_corpus else 0, files=list(train_corpus.files))

    for stale in job_dir.glob(".*.tmp-*"):  # half-written files of a worker killed mid-write
        stale.unlink(missing_ok=True)
    state, ckpt_path, warnings = checkpoint.load_latest(job_dir)
    for w in warnings:
        note("warning", message=w)
    tok_path = job_dir / "tokenizer.json"
    if state is not None and not tok_path.exists():
        tok_path.write_text(state["tokenizer_json"], encoding="utf-8")
    tokenizer, origin = load_or_train(
        train_corpus.texts, train_corpus.sha256, spec.model.vocab_size, tok_path, cache_dir
    )
    note("tokenizer", origin=origin, vocab_size=tokenizer.vocab_size, path=str(tok_path),
         sha256=tokenizer.sha256[:12])

    train_stream = token_stream(tokenizer, train_corpus.texts)
    eval_stream = token_stream(tokenizer, eval_corpus.texts) if eval_corpus else None
    model_cfg = dataclasses.replace(spec.model, vocab_size=tokenizer.vocab_size)
    device = resolve_device(spec.train.device)
    train_cfg = spec.train
    if spec.data and train_cfg.sample_prompt == BUILTIN_PROMPT:  # own data, no --prompt: speak its language
        train_cfg = dataclasses.replace(train_cfg, sample_prompt=held_out_prompt((eval_corpus or train_corpus).texts))
    trainer = Trainer(model_cfg, train_cfg, tokenizer, train_stream, eval_stream, device)
    note("model", device=device.type, threads=trainer.threads,
         tokens=int(train_stream.numel()),
         eval_tokens=int(eval_stream.numel()) if eval_stream is not None else 0,
         chunks_per_epoch=trainer.batcher.chunks_per_epoch(),
         params=trainer.model.num_params(), params_block=trainer.model.num_params(True))

    if state is not None:
        check_resumable(state, trainer, ckpt_path)
        trainer.load_state_dict(state)
        note("resumed", step=trainer.step, path=str(ckpt_path))
    note("ready", seconds=round(time.perf_counter() - t0, 3))
    return trainer


def check_resumable(state: dict[str, Any], trainer: Trainer, path: Path | None) -> None:
    if state["tokenizer_sha256"] != trainer.tokenizer.sha256:
        raise ResumeError(f"{path}: was trained with a different tokenizer than {trainer.tokenizer.sha256[:12]}")
    saved = state["model_config"]
    current = dataclasses.asdict(trainer.model_cfg)
    diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"{path}: model shape differs ({detail}); start a fresh job to change it")
