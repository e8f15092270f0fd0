"""From validated files to token files: the job's corpora, its tokenizer, and the cached encoding.

Runs in the worker, under the governor. The tokenizer learns from a bounded, evenly spread
sample; the corpus is encoded once into token files keyed by (corpus, tokenizer) and reused by
every later job and restart. Without ``--eval-data``, about 2 % of the texts (chosen by a hash
of each text, so always the same ones) are held out for evaluation and never trained on.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macgpt.config.job import JobSpec
from macgpt.data import job_files
from macgpt.data.sources import Manifest, changed_files, parse, texts_in_range, texts_of, validate
from macgpt.errors import DataError
from macgpt.worker import tokencache
from macgpt.worker.batches import joined
from macgpt.worker.tokencache import Rate, TokenFile
from macgpt.worker.tokenizer import BPETokenizer, load_or_train

HOLDOUT_MODULUS = 50  # one text in 50 (~2 %) is held out when there is no eval data

Emit = Callable[..., None]  # progress(phase, **fields)


def held_out(text: str) -> bool:
    return zlib.crc32(text.encode("utf-8")) % HOLDOUT_MODULUS == 0


@dataclass(frozen=True)
class Corpora:
    train: Manifest
    eval: Manifest | None
    holdout: bool  # eval texts are the held-out share of train

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint records, to refuse a resume on other data."""
        return {"train": self.train.to_dict(), "eval": self.eval.to_dict() if self.eval else None,
                "holdout": self.holdout}

    def key(self, part: str) -> str:
        base = self.train.identity if part == "train" or self.holdout else self.eval.identity  # type: ignore[union-attr]
        return hashlib.sha256(f"{base}|holdout={self.holdout}|{part}".encode()).hexdigest()


def corpora(spec: JobSpec) -> Corpora:
    """The job's manifests: the ones validated at submit (after a cheap ``stat`` check that the
    files are unchanged), else validated here (built-in data, or a spec written by hand)."""
    recorded = spec.manifest or {}
    if recorded.get("train"):
        train = Manifest.from_dict(recorded["train"])
        ev = Manifest.from_dict(recorded["eval"]) if recorded.get("eval") else None
        changed = changed_files(train) + (changed_files(ev) if ev else [])
        if changed:
            raise DataError([*changed, "submit the job again to validate the new content"])
    else:
        files, evals = job_files(spec.data, spec.eval_data)
        train = validate(files)
        ev = validate(evals) if evals else None
    holdout = bool(spec.data) and not spec.eval_data
    return Corpora(train, ev, holdout)


def first_texts(c: Corpora, n: int = 3) -> list[str]:
    """The first few held-out texts (the eval data's, else the hold-out's), read lazily."""
    if c.eval is not None:
        return list(itertools.islice(texts_of(c.eval), n))
    texts = texts_of(c.train)
    return list(itertools.islice((t for t in texts if held_out(t) or not c.holdout), n))


SAMPLE_SPANS = 256  # evenly spread places a big file's tokenizer sample is read from


def _sample(c: Corpora, cap_bytes: int) -> Iterator[str]:
    """Training texts for the tokenizer: all of them up to ``cap_bytes``; beyond, about
    ``cap_bytes`` read from ``SAMPLE_SPANS`` evenly spread places of each file (whose share is
    its size), so the time does not grow with the corpus. A .gz file cannot be entered in the
    middle: it is read through, keeping every k-th text."""
    big = c.train.text_bytes > cap_bytes
    total = sum(f.size for f in c.train.files)
    for f in c.train.files:
        if big and not f.path.lower().endswith(".gz"):
            quota = cap_bytes * f.size // max(1, total)
            span = max(1, quota // SAMPLE_SPANS)
            step = max(span, f.size // SAMPLE_SPANS)
            texts: Iterator[str] = (t for start in range(0, f.size, step) for t in texts_in_range(Path(f.path), start, span))
        else:
            stride = max(1, math.ceil(c.train.text_bytes / cap_bytes))
            texts = (t for i, t in enumerate(parse(Path(f.path), [])) if i % stride == 0)
        yield from (t for t in texts if not (c.holdout and held_out(t)))


def tokenizer(spec: JobSpec, c: Corpora, job_path: Path, cache_dir: Path | None,
              emit: Emit) -> tuple[BPETokenizer, str]:
    cap = int(spec.train.tokenizer_sample_mb * 1e6)
    rule = f"spans={SAMPLE_SPANS},cap={cap}" if c.train.text_bytes > cap else "all"
    sample_id = hashlib.sha256(f"{c.key('train')}|sample={rule}".encode()).hexdigest()
    total = min(c.train.text_bytes, cap)
    rate = Rate(total)

    def watched() -> Iterator[str]:
        done = 0
        for text in _sample(c, cap):
            done += len(text.encode("utf-8"))
            if rate.due():
                emit("tokenizer", **rate.fields(done))
            yield text
        emit("tokenizer", **rate.fields(done))

    return load_or_train(watched(), sample_id, spec.model.vocab_size, job_path, cache_dir)


def token_files(c: Corpora, tok: BPETokenizer, cache_dir: Path, emit: Emit) -> tuple[TokenFile, TokenFile | None]:
    """The train (and eval) token files, built now unless a whole one is cached."""
    parts = ["train"] + (["eval"] if c.eval or c.holdout else [])
    paths = {p: cache_dir / f"{hashlib.sha256((c.key(p) + tok.sha256).encode()).hexdigest()[:40]}.tok" for p in parts}
    opened = {p: tokencache.open_tokens(paths[p], tok.sha256, c.key(p)) for p in parts}
    missing = {p: paths[p] for p in parts if opened[p][0] is None}
    if missing:
        for p in missing:
            if opened[p][1] != "not built yet":
                emit("encode", note=f"token cache {paths[p].name} {opened[p][1]}: rebuilding")
        _encode(c, tok, missing, emit)
        opened.update({p: tokencache.open_tokens(paths[p], tok.sha256, c.key(p)) for p in missing})
    for p in parts:
        if opened[p][0] is None:
            raise OSError(f"token file {paths[p]} could not be read back: {opened[p][1]}")
    return opened["train"][0], opened["eval"][0] if "eval" in opened else None  # type: ignore[return-value]


def _encode(c: Corpora, tok: BPETokenizer, outputs: dict[str, Path], emit: Emit) -> None:
    if c.holdout:
        sources = [(c.train, lambda t: "eval" if held_out(t) else "train", ("train", "eval"))]
    else:
        sources = [(c.train, lambda t: "train", ("train",))]
        if c.eval is not None:
            sources.append((c.eval, lambda t: "eval", ("eval",)))
    todo = [(m, route, {p: outputs[p] for p in parts if p in outputs}) for m, route, parts in sources]
    todo = [t for t in todo if t[2]]
    rate = Rate(sum(m.text_bytes for m, _, _ in todo))
    base = 0

    def report(done: int) -> None:
        if rate.due():
            emit("encode", **rate.fields(base + done))

    for manifest, route, targets in todo:
        pairs = ((route(t), joined(t)) for t in texts_of(manifest))
        tokencache.build(targets, pairs, tok.encode_batch, tok.vocab_size, tok.sha256,
                         {n: c.key(n) for n in targets}, report)
        base += manifest.text_bytes
    emit("encode", **rate.fields(base))


def encode_threads(n: int) -> None:
    """Threads for batch encoding: ``tokenizers`` reads this once, at its first parallel call."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(n if n > 0 else (os.cpu_count() or 1)))
