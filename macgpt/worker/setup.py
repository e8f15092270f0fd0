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
from macgpt.config.schema import LEGACY_RECIPE
from macgpt.data.sources import describe_change
from macgpt.fsutil import atomic_write_text
from macgpt.worker import checkpoint, dataprep
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


def prepare(spec: JobSpec, job_dir: Path, cache_dir: Path | None, note: Note, emit: Note | None = None,
            device: Any = None) -> Trainer:
    """``emit(phase, **fields)`` reports long preparation ("tokenizer", "encode") as progress;
    ``device`` overrides the job's (a rank's own GPU)."""
    emit = emit or (lambda *_a, **_k: None)
    t0 = time.perf_counter()
    c = dataprep.corpora(spec)
    note("data", texts=c.train.texts, chars=c.train.text_bytes, bytes=c.train.text_bytes,
         eval_texts=c.eval.texts if c.eval else 0, holdout=c.holdout,
         files=[f.path for f in c.train.files][:20], identity=c.train.identity[:12])
    dataprep.encode_threads(spec.train.threads)

    for stale in job_dir.glob(".*.tmp-*"):  # half-written files of a worker killed mid-write
        stale.unlink(missing_ok=True)
    state, ckpt_path, warnings = checkpoint.load_latest(job_dir)
    for w in warnings:
        note("warning", message=w)
    if state is not None:
        check_same_data(state, c, ckpt_path, spec)
    tok_path = job_dir / "tokenizer.json"
    init, init_model = (None, None)
    if state is None and spec.train.init_from:  # a new job from another model's weights
        from macgpt.worker.initfrom import load_init

        init, init_model = load_init(spec.train.init_from, job_dir)
    if state is not None and not tok_path.exists():
        atomic_write_text(tok_path, state["tokenizer_json"])  # never a half-written tokenizer
    tokenizer, origin = dataprep.tokenizer(spec, c, tok_path, cache_dir, emit)
    note("tokenizer", origin=origin, vocab_size=tokenizer.vocab_size, path=str(tok_path),
         sha256=tokenizer.sha256[:12])

    train_tokens, eval_tokens = dataprep.token_files(c, tokenizer, (cache_dir or job_dir) / "tokens", emit)
    model_cfg = dataclasses.replace(init_model or spec.model, vocab_size=tokenizer.vocab_size)
    device = device if device is not None else resolve_device(spec.train.device)
    train_cfg = spec.train
    if spec.data and train_cfg.sample_prompt == BUILTIN_PROMPT:  # own data, no --prompt: speak its language
        train_cfg = dataclasses.replace(train_cfg, sample_prompt=held_out_prompt(dataprep.first_texts(c)))
    trainer = Trainer(model_cfg, train_cfg, tokenizer, train_tokens, eval_tokens, device)
    trainer.corpus = c.identity
    note("model", device=device.type, threads=trainer.threads,
         tokens=len(train_tokens), eval_tokens=len(eval_tokens) if eval_tokens is not None else 0,
         token_file=str(train_tokens.path), chunks_per_epoch=trainer.batcher.chunks_per_epoch(),
         params=trainer.model.num_params(), params_block=trainer.model.num_params(True))

    if init is not None:
        trainer.model.load_state_dict(init["model"])
        note("initialized", path=spec.train.init_from, from_step=init["step"])
    if state is not None:
        check_resumable(state, trainer, ckpt_path)
        trainer.load_state_dict(state)
        note("resumed", step=trainer.step, path=str(ckpt_path))
    note("ready", seconds=round(time.perf_counter() - t0, 3))
    return trainer


def agree_on_start(trainer: Trainer, ranks: Any, job_dir: Path, note: Note) -> None:
    """Every rank starts from the same tokenizer and step. On one machine they read one job
    directory; machines each keep their own, and one may have died writing its newest checkpoint:
    all then go back to the newest step every machine holds (checkpoints are written at the same
    steps everywhere, the last two kept)."""
    from macgpt.worker import distributed

    device = trainer.device
    low, high = distributed.agree_min(int(trainer.tokenizer.sha256[:15], 16), device)
    if low != high:
        raise ResumeError("the ranks trained different tokenizers from the same data (a different `tokenizers` "
                          "version on some machine?); copy node 0's tokenizer.json into every job directory")
    low, high = distributed.agree_min(trainer.step, device)
    if low == high:
        return
    if trainer.step != low:
        state = checkpoint.load_step(job_dir, low) if low > 0 else None
        if state is None:
            raise ResumeError(f"{job_dir}: the other ranks continue from step {low}, which this machine has no "
                              "checkpoint of; copy node 0's newest ckpt-*.pt into this job directory")
        trainer.load_state_dict(state)
        note("resumed", step=trainer.step, path=f"step {low}, the newest every machine holds")


def check_same_data(state: dict[str, Any], c: dataprep.Corpora, path: Path | None, spec: JobSpec) -> None:
    """Refuse to continue a run on other data than it was trained on (a checkpoint from before
    corpora were recorded is accepted)."""
    saved = state.get("corpus")
    if not saved:
        return
    now = c.identity
    if saved["train"]["identity"] != now["train"]["identity"]:
        what = describe_change(saved["train"], c.train)
    elif (saved.get("eval") or {}).get("identity") != (now.get("eval") or {}).get("identity") \
            or saved.get("holdout") != now["holdout"]:
        what = "the evaluation data differs"
    else:
        return
    raise ResumeError(
        f"{path}: this run was trained on other data ({what}); it will not continue on the new data. "
        f"To start fresh: `macgpt train {spec.config} ... --fresh` (or another --name / --out), "
        "or submit a new job"
    )


def check_resumable(state: dict[str, Any], trainer: Trainer, path: Path | None) -> None:
    if state["tokenizer_sha256"] != trainer.tokenizer.sha256:
        raise ResumeError(f"{path}: was trained with a different tokenizer than {trainer.tokenizer.sha256[:12]}")
    saved = {"recipe": LEGACY_RECIPE, **state["model_config"]}
    current = dataclasses.asdict(trainer.model_cfg)
    # Dropout is how the model trains, not its shape: a run continues under the dropout asked now.
    diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v and k != "dropout"}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
        raise ResumeError(f"{path}: model shape differs ({detail}); start a fresh job to change it")
