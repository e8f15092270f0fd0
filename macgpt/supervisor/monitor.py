"""Readings of the machine and of our workers (psutil), about four times a second, cheaply.

The only module of the governor that touches the system for input. It turns counters into
percentages over the interval since the previous reading. A process born during the interval
counts all its CPU time; one that left a worker's tree mid-interval took its last CPU time with
it, so such a reading is marked invalid: its "other load" is not trusted.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from functools import cache

import psutil

BATTERY_EVERY = 5.0  # seconds between battery reads (sysfs scans are not free)
SWAP_EVERY = 2.0  # seconds between swap reads (shown, not acted on; /proc/vmstat is long)
CHILDREN_EVERY = 1.0  # seconds between full scans for child processes (not needed on Linux)
LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True)
class WorkerReading:
    pid: int
    cpu: float  # percent of the whole machine (100 = every core busy), whole process tree
    rss: int  # bytes, whole process tree
    stopped: bool  # in SIGSTOP
    anon: int | None = None  # non-reclaimable bytes of the tree (Linux: RssAnon + VmSwap); None: unknown


@dataclass(frozen=True)
class Readings:
    t: float  # monotonic seconds
    interval: float
    ncpu: int
    total_cpu: float  # machine percent
    ours_cpu: float
    other_cpu: float  # total minus ours, never negative
    mem_percent: float
    mem_available: int
    mem_total: int
    swap_percent: float
    workers: dict[int, WorkerReading] = field(default_factory=dict)  # by job id
    on_battery: bool | None = None  # None: no battery (a desktop)
    battery_percent: float | None = None
    memory_pressure: str | None = None  # macOS: normal, warn, critical
    cpu_pressure: float | None = None  # Linux PSI: % of the last 10 s some runnable task waited for a CPU
    valid: bool = True  # False: a process left a worker's tree mid-interval, so other_cpu is unreliable

    def brief(self) -> dict[str, float]:
        return {"total_cpu": round(self.total_cpu, 1), "ours_cpu": round(self.ours_cpu, 1),
                "other_cpu": round(self.other_cpu, 1), "mem_percent": round(self.mem_percent, 1)}


def cpu_pressure(path: str = "/proc/pressure/cpu") -> float | None:
    """PSI's ``some avg10`` for CPU (Linux 4.20+), or None where there is none. Shown in status;
    the policy does not act on it: machine-wide it also counts our own workers' waiting threads."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError:
        return None
    for part in first.split():
        if part.startswith(b"avg10="):
            try:
                return float(part[6:])
            except ValueError:
                return None
    return None


def _busy(t: psutil._common.scputimes) -> float:  # type: ignore[name-defined]
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _available(t: psutil._common.scputimes) -> float:  # type: ignore[name-defined]
    """CPU time this machine really had: a virtual machine's stolen time is nobody's load here."""
    return sum(t) - getattr(t, "steal", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


class Monitor:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.ncpu = psutil.cpu_count() or 1
        self._last_t = clock()
        self._last_cpu = psutil.cpu_times()
        self._procs: dict[int, psutil.Process] = {}
        self._kids: dict[int, psutil.Process] = {}  # handles of workers' child processes
        self._tree: dict[int, tuple[int, ...]] = {}  # worker pid -> its descendants at the last reading
        self._children: dict[int, tuple[int, ...]] = {}
        self._children_at: dict[int, float] = {}
        self._cpu: dict[int, float] = {}  # pid -> its CPU seconds at the last reading
        self._self_cpu = 0.0
        self._own_cpu(1.0)
        self._battery: tuple[bool | None, float | None] = (None, None)
        self._battery_at = -1e9
        self._swap, self._swap_at = 0.0, -1e9
        self._first = True  # the first interval is start-up noise (ours included): never trusted

    def read(self, workers: dict[int, int]) -> Readings:
        """One reading; ``workers`` maps job id to worker pid."""
        now = self.clock()
        cpu = psutil.cpu_times()
        dt = max(1e-3, now - self._last_t)
        busy = _busy(cpu) - _busy(self._last_cpu)
        elapsed = _available(cpu) - _available(self._last_cpu)
        total = max(0.0, min(100.0, 100.0 * busy / elapsed)) if elapsed > 0 else 0.0
        self._last_t, self._last_cpu = now, cpu

        valid = True
        readings: dict[int, WorkerReading] = {}
        for job, pid in workers.items():
            r, complete = self._worker(pid, dt)
            valid = valid and complete
            if r is not None:
                readings[job] = r
        for gone in set(self._procs) - set(workers.values()):
            self._forget(gone)
        tracked = {p for pid in workers.values() for p in (pid, *self._tree.get(pid, ()))}
        for p in set(self._cpu) - tracked:
            self._cpu.pop(p, None)
            self._kids.pop(p, None)
        ours = sum(w.cpu for w in readings.values()) + self._own_cpu(dt)
        vm = psutil.virtual_memory()
        if now - self._swap_at >= SWAP_EVERY:
            self._swap, self._swap_at = psutil.swap_memory().percent, now
        on_battery, percent = self._read_battery(now)
        valid, self._first = valid and not self._first, False
        return Readings(
            t=now, interval=dt, ncpu=self.ncpu, total_cpu=total, ours_cpu=min(ours, 100.0),
            other_cpu=max(0.0, total - ours), mem_percent=vm.percent, mem_available=vm.available,
            mem_total=vm.total, swap_percent=self._swap, workers=readings, on_battery=on_battery,
            battery_percent=percent, memory_pressure=memory_pressure(), cpu_pressure=cpu_pressure(),
            valid=valid,
        )

    def _worker(self, pid: int, dt: float) -> tuple[WorkerReading | None, bool]:
        """One worker's whole tree and whether its CPU over the interval is complete (False when
        a process left the tree mid-interval: its last CPU time is lost). None when it is gone."""
        try:
            proc = self._procs.get(pid)
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            kids = self._child_pids(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            self._forget(pid)
            return None, False
        complete = not set(self._tree.get(pid, ())) - set(kids)
        self._tree[pid] = kids
        seconds, rss, anon, stopped = 0.0, 0, 0, False
        for p in (pid, *kids):
            try:
                handle = proc if p == pid else self._handle(p)
                with handle.oneshot():
                    t = handle.cpu_times()
                    total = t.user + t.system
                    sizes = _proc_memory(p) if LINUX else None
                    if sizes is None:
                        sizes = (handle.memory_info().rss, None)
                    rss += sizes[0]
                    anon = anon + sizes[1] if anon is not None and sizes[1] is not None else None
                    if p == pid:
                        stopped = handle.status() == psutil.STATUS_STOPPED
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                if p == pid:
                    self._forget(pid)
                    return None, False
                complete = False
                continue
            # First sight: every process of a tree is ours from birth (we spawned the worker; its
            # children are seen at the first reading after they start), so all its CPU time counts.
            last = self._cpu.get(p, 0.0)
            self._cpu[p] = total
            seconds += max(0.0, total - last)
        cpu = 100.0 * seconds / (dt * self.ncpu)
        return WorkerReading(pid, cpu, rss, stopped, anon), complete

    def _own_cpu(self, dt: float) -> float:
        """The supervisor's own CPU (and its guardian's): ours, not other programs'."""
        t = os.times()
        now = t.user + t.system + t.children_user + t.children_system
        last, self._self_cpu = self._self_cpu, now
        return max(0.0, 100.0 * (now - last) / (dt * self.ncpu))

    def descendants(self, pid: int) -> tuple[int, ...]:
        """A worker's child processes as of the last reading."""
        return self._tree.get(pid, ())

    def _handle(self, pid: int) -> psutil.Process:
        handle = self._kids.get(pid)
        if handle is None:
            handle = self._kids[pid] = psutil.Process(pid)
        return handle

    def _child_pids(self, proc: psutil.Process) -> tuple[int, ...]:
        """Descendants of a worker: /proc/<pid>/task/<tid>/children on Linux (cheap, every
        reading); elsewhere psutil's scan of all processes, once a second."""
        pid = proc.pid
        found = linux_descendants(pid)
        if found is not None:
            return found
        now = self.clock()
        if now - self._children_at.get(pid, -1e9) >= CHILDREN_EVERY:
            self._children[pid] = tuple(sorted(c.pid for c in proc.children(recursive=True)))
            self._children_at[pid] = now
        return self._children.get(pid, ())

    def _forget(self, pid: int) -> None:
        for d in (self._procs, self._children, self._children_at, self._cpu, self._tree):
            d.pop(pid, None)  # type: ignore[attr-defined]

    def _read_battery(self, now: float) -> tuple[bool | None, float | None]:
        if now - self._battery_at >= BATTERY_EVERY:
            self._battery_at = now
            try:
                b = psutil.sensors_battery()
            except (AttributeError, OSError, RuntimeError):
                b = None
            self._battery = (None, None) if b is None else (not b.power_plugged, float(b.percent))
        return self._battery


def linux_descendants(pid: int) -> tuple[int, ...] | None:
    """Every descendant of ``pid`` from /proc/<pid>/task/<tid>/children (cheap enough for every
    reading), or None where that file does not exist (not Linux, or an old kernel)."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return None
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                found += kids
                todo += kids
        except OSError:
            continue
    return tuple(sorted(found))


def descendants(pid: int) -> tuple[int, ...]:
    """Every descendant of ``pid``: /proc on Linux, psutil's scan of all processes elsewhere."""
    found = linux_descendants(pid)
    if found is not None:
        return found
    try:
        return tuple(sorted(c.pid for c in psutil.Process(pid).children(recursive=True)))
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ()


def _proc_memory(pid: int) -> tuple[int, int] | None:
    """(RSS, non-reclaimable: anonymous resident + swapped) bytes from /proc/PID/status, in one
    read; None when the file is unreadable or lacks the fields (a kernel thread, an old kernel)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields: dict[bytes, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        if key in (b"VmRSS", b"RssAnon", b"VmSwap"):
            fields[key] = int(rest.split()[0]) * 1024
    if b"VmRSS" not in fields or b"RssAnon" not in fields:
        return None
    return fields[b"VmRSS"], fields[b"RssAnon"] + fields.get(b"VmSwap", 0)


def memory_pressure() -> str | None:
    """macOS's memory pressure level (no privileges needed); None elsewhere."""
    if sys.platform != "darwin":
        return None
    level = _sysctl_int(b"kern.memorystatus_vm_pressure_level")
    return {1: "normal", 2: "warn", 4: "critical"}.get(level or 0)


@cache
def _libc():  # loaded once: this is asked four times a second
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _sysctl_int(name: bytes) -> int | None:
    import ctypes

    try:
        libc = _libc()
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if libc.sysctlbyname(name, ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
            return None
        return value.value
    except OSError:
        return None


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
