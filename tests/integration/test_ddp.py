"""One job over several processes (torch.distributed, gloo on this CPU), with real torchrun ranks:
the same model as one process, resume on another number of ranks, a killed rank restarting the
group from its checkpoint, the ranks governed as one unit, and two "machines" meeting at a
rendezvous (two `macgpt train --nnodes 2` on this host, each with its own run directory)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from macgpt.worker.checkpoint import load_file

from ..conftest import MACGPT
from .live import Hog, LiveRun, governor, wait_for

STEPS = 40
# fp32 Newton-Schulz: on CPUs that multiply bf16 natively the default rounds the last-bit
# differences of a gradient summed in another order up to 1e-3 (docs/scale-out.md).
JOB = ["tiny", "--steps", str(STEPS), "--batch-size", "8", "--max-cpu", "100", "--set", "log_interval=1",
       "--set", "sample_interval=0", "--set", "muon_dtype=float32", "--set", "vocab_size=500"]


def train(home: Path, out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run([MACGPT, "--home", str(home), "train", *JOB, "--out", str(out), "--json", *extra],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    return r


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}  # the latest line of a step after a restart


def close_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a / "final_model.pt")["model"], load_file(b / "final_model.pt")["model"]
    for name, t in wa.items():
        assert torch.allclose(t, wb[name], atol=atol), (name, (t - wb[name]).abs().max())


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, the whole batch."""
    home = tmp_path_factory.mktemp("ddp-home")
    out = home / "alone"
    train(home, out)
    return out


def test_two_ranks_train_the_same_model_as_one_process(alone: Path, home: Path) -> None:
    out = home / "two"
    r = train(home, out, "--nproc", "2")
    spread = [json.loads(line) for line in r.stdout.splitlines() if '"spread"' in line]
    assert spread and spread[0]["world"] == 2 and spread[0]["rows"] == [0, 4]
    a, b = losses(alone), losses(out)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-4  # the bar, per step
    close_weights(alone, out, atol=1e-4)
    # one checkpoint and one metrics file per machine: the second rank wrote nothing of its own
    assert len(list(out.glob("ckpt-*.pt"))) >= 1 and len((out / "metrics.jsonl").read_text().splitlines()) == STEPS + 1


def test_uneven_shares_keep_the_batch(alone: Path, home: Path) -> None:
    out = home / "three"
    train(home, out, "--nproc", "3")  # 8 rows as 3 + 3 + 2, each weighed by its share
    a, b = losses(alone), losses(out)
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-4


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_a_checkpoint_of_one_rank_count_continues_on_another(alone: Path, home: Path, first: int, then: int) -> None:
    out = home / f"from{first}"
    train(home, out, "--nproc", str(first), "--set", "checkpoint_interval=20")
    (out / f"ckpt-{STEPS:08d}.pt").unlink()  # as if it had stopped at step 20
    (out / "final_model.pt").unlink()
    r = train(home, out, "--nproc", str(then), "--set", "checkpoint_interval=20")
    resumed = [json.loads(line) for line in r.stdout.splitlines() if '"resumed"' in line and '"setup"' in line]
    assert resumed and resumed[0]["step"] == 20
    close_weights(alone, out, atol=1e-4)  # the same model as one process all the way


def test_a_killed_rank_restarts_the_group_from_its_checkpoint_bitwise(home: Path) -> None:
    job = [*JOB, "--steps", "400", "--nproc", "2", "--set", "checkpoint_interval=25"]
    clean = home / "clean"
    subprocess.run([MACGPT, "train", *job, "--out", str(clean)], capture_output=True, text=True, timeout=300, check=True)
    killed = home / "killed"
    run = LiveRun([*job, "--out", str(killed)], home)
    run.wait(lambda e: e["event"] == "checkpoint" and e["step"] >= 100, timeout=120)
    ranks = _ranks(killed)
    assert len(ranks) == 2
    ranks[-1].kill()  # the second rank dies: the first fails in its next collective, torchrun's agent exits
    run.wait(lambda e: e["event"] == "completed", timeout=240)
    assert run.proc.wait(60) == 0
    restarts = run.kinds("restarting")
    assert len(restarts) == 1 and restarts[0]["crashes"] == 1  # one crash of the group, counted once
    a, b = load_file(clean / "final_model.pt"), load_file(killed / "final_model.pt")
    assert a["step"] == b["step"] == 400
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def _ranks(job_dir: Path) -> list[psutil.Process]:
    """The rank processes of a run (not torchrun's agent), oldest first."""
    found = [p for p in psutil.process_iter(["cmdline", "create_time"])
             if (c := " ".join(p.info["cmdline"] or [])) and f"--job-dir {job_dir}" in c and "-m macgpt.worker" in c
             and "torch.distributed.run" not in c]
    return sorted(found, key=lambda p: (p.info["create_time"], p.pid))


def test_the_ranks_are_stopped_and_continued_together(home: Path) -> None:
    out = home / "governed"
    run = LiveRun(["tiny", "--steps", "1000000", "--batch-size", "8", "--nproc", "2", "--set", "vocab_size=500",
                   "--set", "sample_interval=0", "--set", "log_interval=5", "--out", str(out)], home)
    try:
        run.wait(lambda e: e["event"] == "metrics", timeout=120)
        ranks = _ranks(out)
        assert len(ranks) == 2
        hog = Hog()
        i, _ = run.wait(lambda e: governor(e, "stopped"), timeout=15)
        # both ranks (each in a session of its own, under torchrun) enter the stop once scheduled
        wait_for(lambda: all(p.status() == psutil.STATUS_STOPPED for p in ranks), timeout=2.0, interval=0.01)
        time.sleep(3.0)
        assert all(p.status() == psutil.STATUS_STOPPED for p in ranks)
        hog.stop()
        j, _ = run.wait(lambda e: e["event"] == "governor" and e.get("state") in ("throttled", "full"), after=i, timeout=20)
        k, first = run.wait(lambda e: e["event"] == "metrics", after=j, timeout=30)
        _, later = run.wait(lambda e: e["event"] == "metrics" and e["step"] > first["step"], after=k + 1, timeout=30)
        assert later["step"] > first["step"]  # both continued: a rank left stopped would stall the other
        assert not run.kinds("restarting")  # a stop of the whole group is never taken for a hang
    finally:
        assert run.stop() == 130


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_meet_at_the_rendezvous(alone: Path, home: Path) -> None:
    """Two nodes of one rank each (here on one host, each with its own run directory, as two
    machines would have): both train the model of one process and each keeps it."""
    rdzv = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([MACGPT, "train", *JOB, "--nnodes", "2", "--node-rank", str(r), "--rdzv", rdzv,
                               "--out", str(home / f"node{r}"), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    for r in (0, 1):
        close_weights(alone, home / f"node{r}", atol=1e-4)
    a, b = load_file(home / "node0" / "final_model.pt"), load_file(home / "node1" / "final_model.pt")
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())  # DDP keeps the replicas equal
