"""The duty cycler on a real busy child process: CPU share measured from outside, stop and release."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from macgpt.supervisor.dutycycle import DutyCycler
from macgpt.supervisor.workers import FrozenRegistry, WorkerProcess


@pytest.fixture
def busy(tmp_path: Path) -> WorkerProcess:
    w = WorkerProcess(1, tmp_path, "ipc://unused", None, FrozenRegistry(tmp_path / "frozen.json"),
                      argv=[sys.executable, "-c", "import sys\nwhile True: pass", "--"])
    w.start()
    yield w
    w.kill()
    w.wait(5)


def _cpu_share(pid: int, seconds: float) -> float:
    p = psutil.Process(pid)
    t0, c0 = time.monotonic(), sum(p.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0)


def test_a_duty_bounds_the_cpu_a_process_gets_and_release_lets_it_run(busy: WorkerProcess) -> None:
    cycler = DutyCycler()
    try:
        cycler.set(busy, 0.25)
        assert cycler.duty(busy) == 0.25
        assert busy.pid in busy.frozen.pids  # recorded while cycled, so a crash can be undone
        share = _cpu_share(busy.pid, 2.0)
        assert 0.02 < share < 0.4, share  # a free busy loop takes ~1.0 of a core
        cycler.set(busy, 0.0)
        time.sleep(0.3)
        assert psutil.Process(busy.pid).status() == psutil.STATUS_STOPPED
        assert _cpu_share(busy.pid, 0.5) < 0.02
        cycler.release(busy)
        assert cycler.duty(busy) == 1.0 and busy.pid not in busy.frozen.pids
        assert psutil.Process(busy.pid).status() != psutil.STATUS_STOPPED
        assert _cpu_share(busy.pid, 1.0) > 0.1  # runs again (a shared machine may give it less than a core)
    finally:
        cycler.close()


def test_close_continues_every_stopped_process(busy: WorkerProcess) -> None:
    cycler = DutyCycler()
    cycler.set(busy, 0.0)
    time.sleep(0.2)
    assert psutil.Process(busy.pid).status() == psutil.STATUS_STOPPED
    cycler.close()
    time.sleep(0.1)
    assert psutil.Process(busy.pid).status() != psutil.STATUS_STOPPED
