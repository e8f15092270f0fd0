"""One training run's state and its step: model, optimizer, schedule, data order, and the knobs.

``Trainer.train_step`` is the hot path: learning rate, batch, forward/backward (split into
micro-batches when the governor shrank the batch), clip, step. Everything needed to continue
bit-for-bit lives in ``state_dict`` (weights, optimizer, step, data position, RNG).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import resource
import sys
from dataclasses import asdict
from typing import Any

import torch

from macgpt.config.schema import ModelConfig, TrainConfig, micro_batch_at_most
from macgpt.model import GPT
from macgpt.worker import distributed
from macgpt.worker.batches import Batcher, eval_batches
from macgpt.worker.optim import make_optimizer
from macgpt.worker.progress import Reporter, counted
from macgpt.worker.sampling import SampleParams, SampleResult, sample_text
from macgpt.worker.tokencache import TokenFile
from macgpt.worker.tokenizer import BPETokenizer

RECENT = 20  # steps in the "train loss" reported at the end (the quality bar's window)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda: no CUDA device is available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device=mps: Apple's Metal backend is not available here")
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig, peak: float | None = None) -> float:
    """Linear warm-up to ``peak`` (default ``lr``), then cosine decay to ``peak * min_lr_ratio`` at the last step."""
    top = cfg.lr if peak is None else peak
    if step < cfg.warmup_steps:
        return top * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = top * cfg.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (top - floor)


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Trainer:
    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        tokenizer: BPETokenizer,
        train_stream: torch.Tensor | TokenFile,
        eval_stream: torch.Tensor | TokenFile | None,
        device: torch.device,
    ) -> None:
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.tokenizer = tokenizer
        self.device = device
        torch.manual_seed(train_cfg.seed)
        self.model = GPT(model_cfg).to(device)
        self.optimizer = make_optimizer(self.model, model_cfg.recipe, train_cfg)
        self.batcher = Batcher(train_stream, model_cfg.block_size, train_cfg.seed)
        self.eval_stream = eval_stream
        self.step = 0
        self.micro_batch = train_cfg.batch_size
        self.loss_sum = 0.0
        self.recent: list[float] = []
        self.last_eval: dict[str, float] | None = None
        self.corpus: dict[str, Any] | None = None  # the data's identity, kept in checkpoints
        self.ranks: distributed.Ranks | None = None
        self.ddp: torch.nn.Module | None = None  # the model as DDP wraps it, when spread over ranks
        self.rows = (0, train_cfg.batch_size)  # this rank's rows of each step's batch
        self.set_threads(train_cfg.threads)

    def spread(self, ranks: distributed.Ranks) -> None:
        """Train as one of ``ranks``: DDP keeps the replicas equal (its construction copies rank 0's
        weights to all), this rank trains its share of each step. Every rank calls this together."""
        from torch.nn.parallel import DistributedDataParallel

        self.ranks = ranks
        self.rows = distributed.share(self.cfg.batch_size, ranks)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (rotary tables) are the same constants everywhere: no broadcast at each forward
        # (the option's name changed in torch 2.13).
        known = inspect.signature(DistributedDataParallel).parameters
        quiet = {"forward_sync_buffers": False} if "forward_sync_buffers" in known else {"broadcast_buffers": False}
        self.ddp = DistributedDataParallel(self.model, device_ids=ids, **quiet)
        self.set_threads(self.cfg.threads)

    # -- knobs ------------------------------------------------------------------------------
    def set_threads(self, n: int) -> int:
        """Use ``n`` CPU threads from the next step on (0: one per core); spread over ranks, ``n``
        is this machine's count, shared by its ranks. Returns the machine's count in use."""
        n = n if n > 0 else (os.cpu_count() or 1)
        local = self.ranks.local_world if self.ranks else 1
        torch.set_num_threads(max(1, n // local))
        self.threads = torch.get_num_threads() * local
        return self.threads

    def set_micro_batch(self, n: int) -> int:
        """Split each step into micro-batches of at most ``n`` sequences (gradient accumulation
        keeps the effective batch, so the run trains the same model). Returns the size used:
        the largest divisor of the batch size not above ``n``."""
        self.micro_batch = micro_batch_at_most(self.cfg.batch_size, n)
        return self.micro_batch

    # -- training ---------------------------------------------------------------------------
    def train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg, self.cfg.muon_lr if group.get("muon") else None)
        x, y = self.batcher.next_batch(self.cfg.batch_size, self.rows if self.ddp is not None else None)
        if self.device.type != "cpu":
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        m = self.micro_batch
        if self.ddp is not None:
            value = self._spread_step(x, y)
        elif m == self.cfg.batch_size:
            _, loss, _ = self.model(x, y)
            loss.backward()
            value = loss.item()
        else:
            parts = self.cfg.batch_size // m
            value = 0.0
            for i in range(parts):
                _, loss, _ = self.model(x[i * m : (i + 1) * m], y[i * m : (i + 1) * m])
                (loss / parts).backward()
                value += loss.item() / parts
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.loss_sum += value
        self.recent.append(value)
        if len(self.recent) > RECENT:
            del self.recent[0]
        return value

    def _spread_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Forward and backward of this rank's rows. DDP averages the gradients over the ranks, so
        each rank weighs its mean loss by its share of the batch times the rank count: the sum is
        the gradient of the whole batch's mean loss, however the rows were split. Only the last
        micro-batch synchronises. Returns the whole batch's mean loss (one all-reduce)."""
        assert self.ddp is not None and self.ranks is not None
        n = x.size(0)
        m = micro_batch_at_most(n, self.micro_batch)
        parts = n // m
        weight = n * self.ranks.world / self.cfg.batch_size / parts
        value = 0.0
        for i in range(parts):
            sync = i == parts - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[operator]
                _, loss, _ = self.ddp(x[i * m : (i + 1) * m], y[i * m : (i + 1) * m])
                (loss * weight).backward()
            value += loss.item() / parts
        return distributed.total(value * n / self.cfg.batch_size, self.device)

    @property
    def avg_loss(self) -> float:
        return self.loss_sum / max(1, self.step)

    @property
    def recent_loss(self) -> float:
        return sum(self.recent) / max(1, len(self.recent))

    @property
    def epoch(self) -> int:
        return self.batcher.epoch

    @torch.no_grad()
    def evaluate(self, batch_size: int = 16, limit: int | None = None,
                 progress: Reporter | None = None) -> dict[str, float] | None:
        """Mean loss and perplexity over an evenly spread sample of ``limit`` (default: the
        ``eval_tokens`` setting; 0: every) tokens of the test text (None without test text);
        ``progress`` hears of each batch."""
        if self.eval_stream is None or self.eval_stream.numel() < 2:
            return None
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            cap = self.cfg.eval_tokens if limit is None else limit
            for x, y in counted(eval_batches(self.eval_stream, self.model_cfg.block_size, batch_size, cap), progress):
                _, loss, _ = self.model(x.to(self.device), y.to(self.device))
                total += loss.item() * y.numel()
                count += y.numel()
        finally:
            self.model.train(was_training)
        mean = total / count
        self.last_eval = {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}
        return self.last_eval

    def sample(self, prompt: str, params: SampleParams, on_text: Any = None) -> SampleResult:
        return sample_text(self.model, self.tokenizer, prompt, params, on_text)

    # -- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "data": self.batcher.state(),
            "rng": torch.get_rng_state(),
            "loss_sum": self.loss_sum,
            "recent": list(self.recent),
            "last_eval": self.last_eval,
            "tokenizer_json": self.tokenizer.json,
            "tokenizer_sha256": self.tokenizer.sha256,
            "corpus": self.corpus,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.batcher.load_state(state["data"])
        torch.set_rng_state(state["rng"])
        self.loss_sum = float(state["loss_sum"])
        self.recent = [float(v) for v in state["recent"]]
        self.last_eval = state.get("last_eval")
