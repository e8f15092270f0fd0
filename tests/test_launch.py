"""A job spread over ranks: the fields' checks, each rank's share, torchrun's command lines, and
signals that reach ranks living in sessions of their own (real processes)."""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from macgpt.config.job import build_spec
from macgpt.config.schema import ConfigError
from macgpt.supervisor import launch
from macgpt.supervisor.workers import FrozenRegistry, WorkerProcess
from macgpt.worker.distributed import Ranks, from_env, share


def ranks(rank: int, world: int, local_world: int | None = None) -> Ranks:
    local_world = local_world or world
    return Ranks(rank=rank, world=world, local_rank=rank % local_world, local_world=local_world,
                 node=rank // local_world, nnodes=world // local_world)


@pytest.mark.parametrize(("batch", "world"), [(8, 2), (8, 3), (48, 5), (7, 7), (1, 1)])
def test_shares_cover_the_batch_once_and_differ_by_at_most_one(batch: int, world: int) -> None:
    parts = [share(batch, ranks(r, world)) for r in range(world)]
    assert parts[0][0] == 0 and parts[-1][1] == batch
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))  # contiguous, no overlap
    sizes = [hi - lo for lo, hi in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_ranks_from_torchruns_environment() -> None:
    assert from_env({}) is None and from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    r = from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"})
    assert r == Ranks(rank=3, world=4, local_rank=1, local_world=2, node=1, nnodes=2) and not r.speaker and not r.main


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nproc": "9"}, "nproc=9 x nnodes=1 = 9 ranks need batch_size >= 9"),
    ({"nnodes": "2"}, "nnodes=2 needs rdzv=HOST:PORT"),
    ({"nnodes": "2", "rdzv": "nohost"}, "rdzv='nohost': expected HOST:PORT"),
    ({"nnodes": "2", "rdzv": "h:99999"}, "expected HOST:PORT"),
    ({"nnodes": "2", "node_rank": "2", "rdzv": "h:1"}, "node_rank=2 is out of range: expected < nnodes=2"),
])
def test_bad_spreads_are_refused_naming_the_fields(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        build_spec("tiny", {"batch_size": "8", **overrides})


def test_torchrun_lines() -> None:
    one = build_spec("tiny", {"nproc": "2"}).train
    assert launch.torchrun_prefix(one, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
        "--max-restarts", "0", "-m", "macgpt.worker"]
    two = build_spec("tiny", {"nproc": "2", "nnodes": "2", "node_rank": "1", "rdzv": "10.0.0.5:29500"}).train
    assert launch.rendezvous(two) == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.5",
                                      "--master-port", "29500"]
    lines = launch.node_lines(two, ["macgpt", "train", "tiny", "--node-rank", "1", "--print-torchrun"], "/r")
    assert lines[1] == "macgpt train tiny --node-rank 0" and lines[5] == "macgpt train tiny --node-rank 1"
    assert lines[3].startswith("torchrun --nnodes 2 --node-rank 0 --master-addr 10.0.0.5") and "--job-dir /r" in lines[3]
    spec = build_spec("tiny", {"nproc": "2", "threads": "4"})
    assert launch.for_spec(spec)[1] == {"OMP_NUM_THREADS": "2"} and launch.for_spec(build_spec("tiny")) == (None, None)
    assert launch.expected_rss(spec, lambda m, b: type("E", (), {"training_bytes": b})(), 10) == 2 * (24 + 10) + 10



def test_workers_under_a_cpu_limit_spin_less_unless_the_user_said_otherwise() -> None:
    spread = build_spec("tiny", {"nproc": "2", "threads": "4"})
    assert launch.worker_env(build_spec("tiny"), 70, {}) == {"GOMP_SPINCOUNT": launch.SPIN_UNDER_QUOTA}
    assert launch.worker_env(build_spec("tiny"), 100, {}) == {}
    assert launch.worker_env(spread, 30, {}) == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": launch.SPIN_UNDER_QUOTA}
    assert launch.worker_env(spread, 100, {}) == {"OMP_NUM_THREADS": "2"}
    assert launch.worker_env(build_spec("tiny"), 70, {"GOMP_SPINCOUNT": "5"}) == {}  # theirs is inherited
    assert launch.worker_env(build_spec("tiny"), 70, {"OMP_WAIT_POLICY": "active"}) == {}


TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.05)"], start_new_session=True)
while True:
    time.sleep(0.05)
"""


def test_signals_reach_ranks_in_sessions_of_their_own(tmp_path: Path) -> None:
    registry = FrozenRegistry(tmp_path / "stopped.json")
    w = WorkerProcess(1, tmp_path, "ipc://unused", None, registry, launcher=[sys.executable, "-c", TREE, "--"])
    w.start()
    try:
        child = psutil.Process(_child_of(w.pid))
        assert os.getpgid(child.pid) == child.pid != w.pid  # a group of its own, as torchrun's ranks have
        w.freeze()
        _wait(lambda: psutil.Process(w.pid).status() == psutil.STATUS_STOPPED and child.status() == psutil.STATUS_STOPPED)
        assert set(registry.pids) == {w.pid, child.pid}  # the guardian would continue both
        w.thaw()
        _wait(lambda: child.status() != psutil.STATUS_STOPPED and psutil.Process(w.pid).status() != psutil.STATUS_STOPPED)
        assert registry.pids == set()
    finally:
        w.kill()
        w.wait(5)
    _wait(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)


def _child_of(pid: int) -> int:
    _wait(lambda: psutil.Process(pid).children())
    return psutil.Process(pid).children()[0].pid


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)
