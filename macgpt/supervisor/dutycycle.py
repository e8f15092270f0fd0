"""Duty cycles: a worker runs a fraction of every period, whatever it does.

Where a cgroup can be written (``cpuquota.py``) a duty is a kernel CPU quota on the worker's
process tree (duty x threads cores); elsewhere it is SIGSTOP/SIGCONT, as follows.

A small thread of its own (the main loop's timing is too coarse for a 100 ms period). A duty
of 0 keeps the worker stopped, 1 lets it run freely. ``release`` continues a worker and stops
cycling it; it is called before any kill, so a stopped process is always continued first.
A cycled pid stays in the on-disk registry until released, so a crash of the supervisor in
the middle of a period leaves a record that the next start uses to continue it.
"""

from __future__ import annotations

import threading
import time

import psutil

from macgpt.supervisor.cpuquota import Quotas
from macgpt.supervisor.workers import WorkerProcess

PERIOD = 0.1  # seconds


class DutyCycler:
    def __init__(self, period: float = PERIOD, quotas: Quotas | None = None) -> None:
        self.period = period
        self.quotas = quotas
        self._quota: dict[int, float] = {}  # pid -> duty held by a kernel quota
        self._duty: dict[int, tuple[WorkerProcess, float]] = {}  # pid -> (worker, duty)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="duty-cycle", daemon=True)
        self._thread.start()

    def set(self, worker: WorkerProcess, duty: float, threads: int | None = None) -> None:
        if worker.exempt:
            return
        if self.quotas is not None and self._by_quota(worker, duty, threads):
            return
        with self._lock:
            if duty >= 1.0:
                self._duty.pop(worker.pid, None)
                worker.thaw(forget=False)  # stays recorded until released: throttling comes and goes
            else:
                self._duty[worker.pid] = (worker, max(0.0, duty))
                worker.record()  # recorded for as long as it is cycled
                if duty <= 0.0:
                    worker.freeze()
        self._wake.set()

    def _by_quota(self, worker: WorkerProcess, duty: float, threads: int | None) -> bool:
        """Hold a duty between 0 and 1 by the kernel quota (leaving any signal cycle), lift it at 1;
        False where the quota cannot be used (the signals then do it)."""
        assert self.quotas is not None
        if duty <= 0.0:
            return False  # a full stop stays a SIGSTOP: the quota has no zero
        try:
            tree = [worker.pid, *(c.pid for c in psutil.Process(worker.pid).children(recursive=True))]
        except psutil.Error:
            return False
        if self.quotas.attach(worker.job_id, tree) is None:
            return False
        cores = None if duty >= 1.0 else duty * max(1, threads or 1)
        if not self.quotas.set(worker.pid, cores):
            return False
        with self._lock:
            if self._duty.pop(worker.pid, None) is not None:
                worker.thaw(forget=False)  # it was stopped or signal-cycled: the quota takes over
            if cores is None:
                self._quota.pop(worker.pid, None)
            else:
                self._quota[worker.pid] = duty
        return True

    def release(self, worker: WorkerProcess) -> None:
        """Continue the worker and stop cycling it."""
        if worker.proc is None:
            return
        if self.quotas is not None:
            self._quota.pop(worker.pid, None)
            self.quotas.forget(worker.pid)
        with self._lock:
            self._duty.pop(worker.pid, None)
            worker.thaw()

    def duty(self, worker: WorkerProcess) -> float:
        with self._lock:
            entry = self._duty.get(worker.pid) if worker.proc is not None else None
            if entry is None and worker.proc is not None:
                return self._quota.get(worker.pid, 1.0)
        return 1.0 if entry is None else entry[1]

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(2.0)
        with self._lock:
            for worker, _ in self._duty.values():
                worker.thaw()
            self._duty.clear()

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                cycling = [(w, d) for w, d in self._duty.values() if 0.0 < d < 1.0]
            if not cycling:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            start = time.monotonic()
            with self._lock:
                for w, _ in cycling:
                    if w.pid in self._duty:
                        w.thaw_for_cycle()
            for w, d in sorted(cycling, key=lambda wd: wd[1]):
                _sleep_until(start + d * self.period)
                with self._lock:
                    if w.pid in self._duty and 0.0 < self._duty[w.pid][1] < 1.0:
                        w.freeze_for_cycle()
            _sleep_until(start + self.period)


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
