"""What `macgpt limits` says about the levers, from the machine's facts (pure), and on this machine."""

from __future__ import annotations

import os
import sys

from macgpt.supervisor.levers import Machine, describe, here


def test_a_cgroup_v1_linux_machine_uses_the_signal_levers_and_says_why_not_cgroups() -> None:
    lines = describe(Machine("linux", cgroup_v2=False, cgroup_writable=False, psi=True))
    assert any("SCHED_IDLE" in line for line in lines)
    assert any(line.startswith("duty cycle") for line in lines)
    assert any("cgroup v2" in line and "cgroup v1 hierarchy" in line for line in lines)
    assert any(line.startswith("PSI") and "present" in line for line in lines)


def test_cgroup_v2_reasons_follow_the_facts() -> None:
    locked = describe(Machine("linux", True, False, False))
    assert any("no delegated cgroup v2 subtree" in line for line in locked)
    assert any(line == "PSI (/proc/pressure): absent" for line in locked)
    open_ = describe(Machine("linux", True, True, True))
    assert any("available here, not implemented yet" in line for line in open_)


def test_macos_reports_its_priority_and_no_cgroups() -> None:
    lines = describe(Machine("darwin", False, False, False))
    assert any("PRIO_DARWIN_BG" in line for line in lines)
    assert not any("cgroup" in line for line in lines)


def test_this_machine() -> None:
    m = here()
    assert m.platform == sys.platform
    assert m.psi == os.path.exists("/proc/pressure/cpu")
    assert m.cgroup_v2 == os.path.exists("/sys/fs/cgroup/cgroup.controllers")
