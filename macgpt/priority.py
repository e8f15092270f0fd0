"""Lowest scheduling priority the platform offers, for a whole process (every thread).

Linux: nice 19 and ``SCHED_IDLE`` on each thread (BOINC's method). macOS: nice 19 and the
background QoS band (``PRIO_DARWIN_BG``), which keeps the process on the efficiency cores.
Standard library only: the supervisor applies it to workers, and a worker to itself at start.
"""

from __future__ import annotations

import os
import sys

PRIO_DARWIN_PROCESS = 4  # from <sys/resource.h>; Python's os module does not export these
PRIO_DARWIN_BG = 0x1000


def thread_ids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def lower(pid: int = 0) -> list[str]:
    """Lower ``pid`` (0: this process) as far as allowed; returns what took effect."""
    pid = pid or os.getpid()
    done: list[str] = []
    if sys.platform.startswith("linux"):
        ok_nice = ok_idle = True
        for tid in thread_ids(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, 19)
            except OSError:
                ok_nice = False
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except (OSError, AttributeError):
                ok_idle = False
        if ok_nice:
            done.append("nice19")
        if ok_idle:
            done.append("sched_idle")
    else:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
            done.append("nice19")
        except OSError:
            pass
        if sys.platform == "darwin":
            try:
                os.setpriority(PRIO_DARWIN_PROCESS, pid, PRIO_DARWIN_BG)
                done.append("darwin_bg")
            except OSError:
                pass
    return done
