"""How a job's worker is launched: one process, or torchrun's ranks for a job spread by ``nproc``/``nnodes``.

A job with more than one rank is started through torchrun (``python -m torch.distributed.run``):
its agent process is the worker the supervisor sees (spawned, signalled, reaped, restarted), and
it starts ``nproc`` ranks of ``python -m macgpt.worker`` with the standard RANK / WORLD_SIZE /
LOCAL_RANK environment. torchrun puts each rank in a session of its own, so the supervisor signals
the agent's whole process tree (``WorkerProcess``). Its own restarts are off (``--max-restarts 0``):
a dead rank ends the agent and the supervisor restarts the group from the last checkpoint, counted
as one crash. Standard library only: the client prints these lines without importing torch.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from macgpt.config.schema import TrainConfig

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec

PRINTED_RESTARTS = 3  # torchrun's own elastic restarts where no macgpt supervisor runs the node


def world_size(train: TrainConfig) -> int:
    return train.nproc * train.nnodes


def spread(train: TrainConfig) -> bool:
    """Whether the job runs as several torch.distributed ranks."""
    return world_size(train) > 1


def rendezvous(train: TrainConfig, node_rank: int | None = None) -> list[str]:
    """torchrun's options for where the ranks meet: a free local port on one machine, node 0's
    HOST:PORT (static rendezvous: node ``r`` holds global ranks ``r*nproc ...``) on several."""
    if train.nnodes == 1:
        return ["--standalone", "--nnodes", "1"]
    host, _, port = train.rdzv.rpartition(":")
    rank = train.node_rank if node_rank is None else node_rank
    return ["--nnodes", str(train.nnodes), "--node-rank", str(rank), "--master-addr", host.strip("[]"),
            "--master-port", port]


def torchrun_prefix(train: TrainConfig, python: str = sys.executable) -> list[str]:
    """The command that starts this node's ranks; the worker's own arguments follow it."""
    return [python, "-m", "torch.distributed.run", *rendezvous(train), "--nproc-per-node", str(train.nproc),
            "--max-restarts", "0", "-m", "macgpt.worker"]


def for_spec(spec: JobSpec | None) -> tuple[list[str] | None, dict[str, str] | None]:
    """(launcher, environment) of a job's worker: torchrun's command and each rank's share of the
    cores for a spread job (torchrun would otherwise give each rank one thread), else (None, None)."""
    if spec is None or not spread(spec.train):
        return None, None
    cores = spec.train.threads or os.cpu_count() or 1
    return torchrun_prefix(spec.train), {"OMP_NUM_THREADS": str(max(1, cores // spec.train.nproc))}


SPIN_UNDER_QUOTA = "20000"  # libgomp's wait spins, against its default 300,000


def worker_env(spec: JobSpec | None, max_cpu: float, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a worker starts with, over the daemon's own: each rank's threads (a spread
    job), and, under a CPU limit below 100 %, shorter OpenMP spin-waits. PyTorch's OpenMP threads
    (libgomp, Linux) spin after each parallel region; unthrottled that spinning is free, but a quota
    or a duty cycle counts it, so it spends the budget on nothing. Measured side by side at
    ``--max-cpu 70`` (bench/settle.py, 2 rounds): tiny, small, original gained 4-11 % tokens/s;
    at ``--max-cpu 100`` they lost 2-8 %, hence only under a limit. The user's own
    ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` wins. The policy is fixed when the worker starts."""
    env = dict(for_spec(spec)[1] or {})
    if max_cpu < 100 and "GOMP_SPINCOUNT" not in environ and "OMP_WAIT_POLICY" not in environ:
        env["GOMP_SPINCOUNT"] = SPIN_UNDER_QUOTA
    return env


def expected_rss(spec: JobSpec | None, estimate: Callable[..., Any], runtime: int) -> int:
    """What the job's processes should hold together: each rank's model, optimizer and batch share,
    and an interpreter with torch per rank (plus torchrun's agent)."""
    if spec is None:
        return runtime
    ranks = spec.train.nproc
    per_rank = estimate(spec.model, max(1, spec.train.batch_size // world_size(spec.train))).training_bytes
    return ranks * (per_rank + runtime) + (runtime if spread(spec.train) else 0)


def node_lines(train: TrainConfig, macgpt_argv: Sequence[str], job_dir: str) -> list[str]:
    """For each node: the ``macgpt train`` line (supervised and governed there) and the bare torchrun
    line (no macgpt supervisor: torchrun's elastic restarts, resuming from the job directory)."""
    lines = []
    for node in range(train.nnodes):
        argv = _without_node_rank(macgpt_argv) + (["--node-rank", str(node)] if train.nnodes > 1 else [])
        bare = ["torchrun", *rendezvous(train, node), "--nproc-per-node", str(train.nproc),
                "--max-restarts", str(PRINTED_RESTARTS), "-m", "macgpt.worker", "--job-dir", job_dir]
        lines += [f"# node {node}" + (" (rank 0: its job directory gets the model)" if node == 0 else ""),
                  shlex.join(argv), "# or, without macgpt's supervisor on that node:", shlex.join(bare)]
    return lines


def _without_node_rank(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--node-rank":
            skip = True
        elif not arg.startswith("--node-rank=") and arg != "--print-torchrun":
            out.append(arg)
    return out
