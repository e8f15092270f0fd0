"""The kernel CPU quota lever: finding a writable cgroup (pure parsing, and this machine), and a
real process tree held to its quota, measured from outside with psutil."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from macgpt.supervisor.cpuquota import Quotas, _mounts, _own_path, open_root
from macgpt.supervisor.dutycycle import DutyCycler
from macgpt.supervisor.workers import FrozenRegistry, WorkerProcess

MOUNTS_V1 = """cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0"""
GROUP = "mg-test.slice"  # a made-up group: the hierarchy's names, not a path of any machine
CGROUP_V1 = f"4:memory:/a\n3:cpu,cpuacct:/{GROUP}\n0::/{GROUP}/mg-job.scope"


def test_the_cpu_controller_and_our_own_group_are_read_from_proc() -> None:
    v1, v2 = _mounts(MOUNTS_V1)
    assert v1 == Path("/sys/fs/cgroup/cpu,cpuacct") and v2 == Path("/sys/fs/cgroup/unified")
    assert _own_path(CGROUP_V1, 1) == f"/{GROUP}" and _own_path(CGROUP_V1, 2) == f"/{GROUP}/mg-job.scope"
    assert _mounts("proc /proc proc rw 0 0") == (None, None)


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACGPT_NO_CGROUP", "1")
    assert open_root() == (None, "turned off by MACGPT_NO_CGROUP=1")


def _writable_v1_cpu() -> bool:
    v1, _ = _mounts(Path("/proc/mounts").read_text()) if os.path.exists("/proc/mounts") else (None, None)
    return v1 is not None and os.access(v1, os.W_OK)


@pytest.fixture
def tree(tmp_path: Path) -> WorkerProcess:
    """A worker of two busy processes (a parent and the child it forks): two cores of demand."""
    spin = "import os\nos.fork()\nwhile True: pass"
    w = WorkerProcess(7, tmp_path, "ipc://unused", None, FrozenRegistry(tmp_path / "frozen.json"),
                      argv=[sys.executable, "-c", spin, "--"])
    w.start()
    deadline = time.monotonic() + 10
    while not psutil.Process(w.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield w
    w.kill()
    w.wait(5)


def _tree_cores(pid: int, seconds: float) -> float:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    t0, c0 = time.monotonic(), sum(sum(p.cpu_times()[:2]) for p in procs)
    time.sleep(seconds)
    return (sum(sum(p.cpu_times()[:2]) for p in procs) - c0) / (time.monotonic() - t0)


def test_a_duty_is_a_kernel_quota_on_the_whole_tree_and_release_removes_it(tree: WorkerProcess) -> None:
    root, why = open_root()
    if not _writable_v1_cpu() and root is None:  # a machine where the lever is not offered: it says why
        assert why
        return
    assert root is not None, why  # CI's kind of machine (root, cgroup v1): the lever must be in use
    cycler = DutyCycler(quotas=Quotas(root))
    try:
        cycler.set(tree, 0.25, threads=2)  # 0.5 of a core for the whole tree, the forked child included
        group = cycler.quotas.groups[tree.pid]
        members = set((group / "cgroup.procs").read_text().split())
        assert {str(p.pid) for p in [psutil.Process(tree.pid), *psutil.Process(tree.pid).children()]} <= members
        assert cycler.quotas.quota(tree.pid) == pytest.approx(0.5)
        assert cycler.duty(tree) == 0.25 and psutil.Process(tree.pid).status() != psutil.STATUS_STOPPED  # no signals
        held = _tree_cores(tree.pid, 2.0)
        assert 0.3 < held < 0.62, held  # two spinning processes, held to half a core
        cycler.set(tree, 1.0, threads=2)
        assert cycler.quotas.quota(tree.pid) is None and cycler.duty(tree) == 1.0
        assert _tree_cores(tree.pid, 1.0) > held + 0.2  # free again
        cycler.set(tree, 0.0, threads=2)  # a full stop is still SIGSTOP
        time.sleep(0.2)
        assert psutil.Process(tree.pid).status() == psutil.STATUS_STOPPED
        cycler.release(tree)
        assert psutil.Process(tree.pid).status() != psutil.STATUS_STOPPED
        tree.kill()
        tree.wait(5)
        time.sleep(0.2)
        cycler.release(tree)  # after the exit: the group goes
        assert not group.exists()
    finally:
        cycler.close()
