"""Helpers shared by the benchmark scripts: built-in data, medians, a null link, and docs output."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from macgpt.config.presets import get_preset
from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import load_corpus
from macgpt.worker.batches import token_stream
from macgpt.worker.tokenizer import BPETokenizer
from macgpt.worker.trainer import Trainer

T = TypeVar("T")
OUT = Path(__file__).resolve().parent / "out"


def builtin_streams(vocab: int = 2000) -> tuple[BPETokenizer, torch.Tensor, torch.Tensor]:
    train = load_corpus([builtin_path(BUILTIN_TRAIN)]).texts
    tok = BPETokenizer.train(train, vocab)
    test = load_corpus([builtin_path(BUILTIN_TEST)]).texts
    return tok, token_stream(tok, train), token_stream(tok, test)


def preset_trainer(name: str, tok: BPETokenizer, train: torch.Tensor, test: torch.Tensor, **train_overrides: Any) -> Trainer:
    p = get_preset(name)
    mc = dataclasses.replace(p.model, vocab_size=tok.vocab_size)
    tc = dataclasses.replace(p.train, **train_overrides)
    return Trainer(mc, tc, tok, train, test, torch.device("cpu"))


class NullLink:
    """The worker loop's link with nobody listening: events are built and dropped."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, kind: str, **fields: Any) -> None:
        self.sent += 1

    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        return []

    def orphaned(self) -> bool:
        return False


def alternate(a: Callable[[], T], b: Callable[[], T], rounds: int) -> tuple[list[T], list[T]]:
    """``rounds`` results of each, run side by side with the order flipped every round, so that
    a drift of the machine falls on both alike."""
    xs: list[T] = []
    ys: list[T] = []
    for i in range(rounds):
        if i % 2 == 0:
            xs.append(a())
            ys.append(b())
        else:
            ys.append(b())
            xs.append(a())
    return xs, ys


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def say(*parts: Any) -> None:
    print(*parts, flush=True)
    sys.stdout.flush()


# -- other people's programs on a shared machine ------------------------------------------------------
def wait_quiet(below: float = 5.0, seconds: float = 3.0, timeout: float = 600.0) -> None:
    """Until total CPU has stayed under ``below`` % for ``seconds`` (the previous run gone too)."""
    import psutil

    end, quiet = time.monotonic() + timeout, 0.0
    psutil.cpu_percent()
    while quiet < seconds and time.monotonic() < end:
        quiet = quiet + 0.5 if psutil.cpu_percent(interval=0.5) < below else 0.0


def _machine_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def tree_cpu(root: Any = None) -> float:
    """CPU seconds of a process (default: this one) and every descendant, living or reaped."""
    import psutil

    me = root or psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


class Foreign:
    """Machine CPU used during a measurement by processes outside this script's process tree
    (other people's programs), in percent of the whole machine. ``percent()`` since ``start()``."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.busy, self.tree, self.t = _machine_busy(), tree_cpu(), time.monotonic()

    def percent(self) -> float:
        import os

        busy, tree, t = _machine_busy(), tree_cpu(), time.monotonic()
        return max(0.0, 100 * ((busy - self.busy) - (tree - self.tree)) / max(1e-3, t - self.t) / (os.cpu_count() or 1))
