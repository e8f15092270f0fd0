"""Which levers the governor uses on this machine, and why the others are not in use.

A pure description from what the machine offers (platform, cgroup hierarchy, PSI), so that
``macgpt limits`` can say it; ``here()`` reads the facts. Only levers that the test suite
exercises on a machine like CI's (Linux, cgroup v1, PSI present, root, no systemd user manager)
are in use: the kernel CPU quota (cgroup v1 or a delegated v2 subtree) among them; memory.high,
cgroup.freeze and macOS QoS classes are reported, not used.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    platform: str  # sys.platform
    cgroup_v2: bool  # a unified hierarchy is mounted at /sys/fs/cgroup
    cgroup_writable: bool  # our own cgroup can be written (delegated to us)
    psi: bool  # /proc/pressure/cpu exists
    cpu_quota: str | None = None  # the cgroup holding workers to a kernel CPU quota, if any
    no_quota_why: str = ""


def describe(m: Machine) -> list[str]:
    """One line per lever: in use, or not and why."""
    linux = m.platform.startswith("linux")
    out = ["priority: nice 19 + SCHED_IDLE on every thread" if linux
           else "priority: nice 19 + PRIO_DARWIN_BG" if m.platform == "darwin" else "priority: nice 19",
           "threads and micro-batch: commands to the worker, chosen from its measured CPU",
           (f"duty cycle: a kernel CPU quota on each worker's process tree ({m.cpu_quota}); full stop: SIGSTOP"
            if m.cpu_quota else "duty cycle / stop: SIGSTOP-SIGCONT of the worker's process group"),
           "memory: non-reclaimable size (RssAnon + VmSwap)" if linux else "memory: RSS"]
    if linux and not m.cpu_quota:
        out.append(f"kernel CPU quota (cgroup cpu controller): not in use: {m.no_quota_why}")
    if linux:
        why = ("this machine has a cgroup v1 hierarchy" if not m.cgroup_v2 else
               "no delegated cgroup v2 subtree is writable by this user" if not m.cgroup_writable else
               "available here, not implemented yet")
        out.append(f"cgroup v2 memory.high and cgroup.freeze: not in use: {why}")
        out.append("PSI (/proc/pressure): " + ("cpu some avg10 read and shown in status; not acted on (machine-wide "
                                              "it counts our own workers' waiting threads too)" if m.psi else "absent"))
    if m.platform == "darwin":
        out.append("background QoS per computing thread: not in use (untested here)")
    return out


def here() -> Machine:
    """The facts of this machine."""
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    writable = False
    if v2:
        try:
            with open("/proc/self/cgroup") as f:
                path = next((line.split("::", 1)[1].strip() for line in f if line.startswith("0::")), "")
            writable = os.access(os.path.join("/sys/fs/cgroup", path.lstrip("/"), "cgroup.procs"), os.W_OK)
        except OSError:
            writable = False
    from macgpt.supervisor.cpuquota import open_root

    root, how = open_root() if sys.platform.startswith("linux") else (None, "not Linux")
    return Machine(sys.platform, v2, writable, os.path.exists("/proc/pressure/cpu"), how if root else None, how)
