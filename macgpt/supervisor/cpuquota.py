"""A kernel CPU quota per worker: the duty cycle without signals, where the machine lets us.

Each worker's process tree is put in a cgroup of its own under the cpu controller (cgroup v1
``cpu.cfs_quota_us``, or v2 ``cpu.max`` in a subtree delegated to this user). A duty ``d`` of a
worker running ``n`` threads becomes a quota of ``d * n`` cores: the kernel holds the whole tree
to it in every 100 ms period, child processes and threads the worker ignores included, and no
SIGSTOP/SIGCONT wakes all its threads at once. A full stop (duty 0) is still SIGSTOP. Where no
cgroup can be written (no root, no delegation, macOS) ``open_root`` says why and the governor
keeps the signal duty cycle (``dutycycle.py``). ``MACGPT_NO_CGROUP=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from macgpt.log import get

log = get("macgpt.cpuquota")

PERIOD_US = 100_000


@dataclass(frozen=True)
class Root:
    path: Path  # our directory under the cpu controller, e.g. /sys/fs/cgroup/cpu/macgpt-501
    version: int  # 1 or 2


def _mounts(text: str) -> tuple[Path | None, Path | None]:
    """(the cgroup v1 cpu controller's mount, the cgroup v2 mount) from /proc/mounts."""
    v1 = v2 = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        if parts[2] == "cgroup" and "cpu" in parts[3].split(","):
            v1 = v1 or Path(parts[1])
        elif parts[2] == "cgroup2":
            v2 = v2 or Path(parts[1])
    return v1, v2


def _own_path(cgroup_text: str, version: int) -> str:
    """This process's cgroup for the cpu controller (v1) or the unified hierarchy (v2)."""
    for line in cgroup_text.splitlines():
        _hid, controllers, path = [*line.split(":", 2), "", ""][:3]
        if (version == 2 and controllers == "") or (version == 1 and "cpu" in controllers.split(",")):
            return path.strip()
    return "/"


def open_root() -> tuple[Root | None, str]:
    """Our writable cgroup directory and how it was found, or None and why not."""
    if os.environ.get("MACGPT_NO_CGROUP") == "1":
        return None, "turned off by MACGPT_NO_CGROUP=1"
    try:
        mounts = Path("/proc/mounts").read_text()
        own = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None, "no /proc/mounts (not Linux)"
    v1, v2 = _mounts(mounts)
    candidates = []
    if v1 is not None:
        candidates.append((v1, 1))
    if v2 is not None and "cpu" in _read(v2 / "cgroup.controllers").split():
        candidates.append((v2, 2))
    if not candidates:
        return None, "no cgroup cpu controller is mounted"
    errors = []
    for mount, version in candidates:
        base = mount / _own_path(own, version).lstrip("/") / f"macgpt-{os.getuid()}"
        try:
            base.mkdir(exist_ok=True)
            if version == 2:  # children of ours need the cpu controller enabled here
                (base / "cgroup.subtree_control").write_text("+cpu")
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as e:
            errors.append(f"cgroup v{version} at {base}: {e.strerror or e}")
            continue
        _sweep(base)
        return Root(base, version), f"cgroup v{version} {base}"
    return None, "; ".join(errors)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _sweep(base: Path) -> None:
    """Remove the empty groups of workers that are gone (a daemon killed before cleaning up)."""
    for d in base.glob("job-*"):
        with contextlib.suppress(OSError):
            d.rmdir()  # refused while a process is in it


class Quotas:
    """The cgroup of each worker, by pid."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.groups: dict[int, Path] = {}

    def attach(self, job: int, pids: list[int]) -> Path | None:
        """Put ``pids`` (a worker's tree, leader first) in the worker's group; again for new children."""
        if not pids:
            return None
        group = self.groups.get(pids[0])
        try:
            if group is None:
                group = self.root.path / f"job-{job}-{pids[0]}"
                group.mkdir(exist_ok=True)
                self.groups[pids[0]] = group
            members = set(_read(group / "cgroup.procs").split())
            for pid in pids:
                if str(pid) not in members:
                    with contextlib.suppress(ProcessLookupError):
                        (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            log.warning("cgroup_attach_failed", job=job, error=str(e))
            return None
        return group

    def set(self, pid: int, cores: float | None) -> bool:
        """Hold the group of ``pid`` to ``cores`` (None: no quota). False if it cannot be written."""
        group = self.groups.get(pid)
        if group is None:
            return False
        quota = -1 if cores is None else max(1000, int(cores * PERIOD_US))
        try:
            if self.root.version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
        except OSError as e:
            log.warning("cgroup_quota_failed", group=str(group), error=str(e))
            return False
        return True

    def quota(self, pid: int) -> float | None:
        """The quota in force, in cores (None: none), as the kernel has it."""
        group = self.groups.get(pid)
        if group is None:
            return None
        if self.root.version == 1:
            q = int(_read(group / "cpu.cfs_quota_us") or -1)
            return None if q < 0 else q / int(_read(group / "cpu.cfs_period_us") or PERIOD_US)
        q, _, period = _read(group / "cpu.max").partition(" ")
        return None if q in ("", "max") else int(q) / int(period or PERIOD_US)

    def forget(self, pid: int) -> None:
        """Lift the quota; remove the group once its processes are gone (else at a later call)."""
        group = self.groups.get(pid)
        if group is None:
            return
        with contextlib.suppress(OSError):
            self._lift(group)
        try:
            group.rmdir()
        except OSError:
            return  # still has a process: tried again after the worker exits
        del self.groups[pid]

    def _lift(self, group: Path) -> None:
        if self.root.version == 1:
            (group / "cpu.cfs_quota_us").write_text("-1")
        else:
            (group / "cpu.max").write_text(f"max {PERIOD_US}")
