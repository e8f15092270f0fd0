"""One job over several processes: torch.distributed ranks as torchrun starts them.

A rank reads the standard environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK)
and joins the process group: gloo on a CPU, nccl on CUDA. Every rank holds the whole model (DDP
keeps the replicas equal); each trains its share of every step's batch, cut from the one seeded
order (``share``), so the effective batch and the data order are those of one process, whatever
the number of ranks. The local rank 0 of each machine is its "speaker": it talks to that machine's
supervisor and writes the checkpoints and metrics into that machine's job directory.

Between steps all ranks agree in one small all-reduce (``Control``): stop, pause or checkpoint
if any rank asks (a signal, the supervisor's command), and each machine's thread count and
micro-batch from its speaker. A stop therefore happens at the same step everywhere.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Hangs are the supervisor's to judge (it stops ranks for minutes when the machine is busy, and the
# user may pause for hours): the collectives themselves wait that long rather than time out.
COLLECTIVE_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int
    local_world: int
    node: int
    nnodes: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def speaker(self) -> bool:
        """The rank that speaks for its machine: supervisor link, checkpoints, metrics."""
        return self.local_rank == 0


def from_env(env: dict[str, str] | None = None) -> Ranks | None:
    """This process's place among the ranks, or None when it runs alone."""
    env = dict(os.environ) if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return Ranks(rank=int(env["RANK"]), world=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                 local_world=local_world, node=int(env.get("GROUP_RANK", "0")),
                 nnodes=max(1, world // max(1, local_world)))


def device_for(ranks: Ranks, name: str) -> torch.device:
    """The device of this rank: its own GPU on CUDA (LOCAL_RANK), else the CPU."""
    if name == "mps":
        raise ValueError("device=mps: torch.distributed has no Metal backend; use --nproc 1 on a Mac GPU, "
                         "or --device cpu")
    if name in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() >= ranks.local_world:
        return torch.device("cuda", ranks.local_rank)
    if name == "cuda":
        raise ValueError(f"device=cuda: {ranks.local_world} ranks on this machine need as many GPUs, "
                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} found")
    return torch.device("cpu")


def join(ranks: Ranks, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def share(batch_size: int, ranks: Ranks | None) -> tuple[int, int]:
    """Rows [lo, hi) of each step's batch that this rank trains: as even as possible (the first
    ``batch % world`` ranks take one more), never empty (at most ``batch`` ranks)."""
    if ranks is None:
        return 0, batch_size
    base, extra = divmod(batch_size, ranks.world)
    lo = ranks.rank * base + min(ranks.rank, extra)
    return lo, lo + base + (1 if ranks.rank < extra else 0)


def barrier(device: torch.device) -> None:
    """Wait for every rank (gloo's barrier: a tiny all-reduce, which works on every backend)."""
    flag = torch.zeros(1, device=device)
    dist.all_reduce(flag)


def total(value: float, device: torch.device) -> float:
    """The sum of ``value`` over the ranks."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def agree_min(value: int, device: torch.device) -> tuple[int, int]:
    """(min, max) of ``value`` over the ranks."""
    t = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t[0]), -int(t[1])


@dataclass(frozen=True)
class Agreed:
    stop: bool
    pause: bool
    checkpoint: bool
    threads: int  # this machine's threads for the job (0: no change asked)
    micro_batch: int  # this machine's micro-batch per rank (0: no change asked)


class Control:
    """The per-step agreement: flags any rank raises, and per machine the knobs its speaker sets."""

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks = ranks
        self.device = device
        self.buf = torch.zeros(3 + 2 * ranks.nnodes, dtype=torch.int64, device=device)

    def exchange(self, stop: bool, pause: bool, checkpoint: bool, threads: int = 0, micro_batch: int = 0) -> Agreed:
        b, node = self.buf, self.ranks.node
        b.zero_()
        b[0], b[1], b[2] = int(stop), int(pause), int(checkpoint)
        if self.ranks.speaker:
            b[3 + node], b[3 + self.ranks.nnodes + node] = threads, micro_batch
        dist.all_reduce(b, op=dist.ReduceOp.MAX)
        v = b.tolist()
        return Agreed(stop=bool(v[0]), pause=bool(v[1]), checkpoint=bool(v[2]),
                      threads=v[3 + node], micro_batch=v[3 + self.ranks.nnodes + node])
