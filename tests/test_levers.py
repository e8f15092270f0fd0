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
    assert any(line.startswith("PSI") and "shown in status" in line for line in lines)
    assert any(line.startswith("kernel CPU quota") and "not in use" in line for line in lines)


def test_a_machine_with_a_writable_cgroup_holds_the_duty_by_quota() -> None:
    lines = describe(Machine("linux", False, False, True, cpu_quota="cgroup v1 /sys/fs/cgroup/cpu/macgpt-0"))
    assert any(line.startswith("duty cycle: a kernel CPU quota") and "macgpt-0" in line for line in lines)
    assert not any(line.startswith("kernel CPU quota") for line in lines)


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


def test_cpu_pressure_is_read_from_psi_or_none(tmp_path) -> None:
    from macgpt.supervisor.monitor import cpu_pressure

    f = tmp_path / "cpu"
    f.write_text("some avg10=12.34 avg60=7.54 avg300=4.87 total=2749418503\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert cpu_pressure(str(f)) == 12.34
    assert cpu_pressure(str(tmp_path / "absent")) is None
    here = cpu_pressure()
    assert (here is None) == (not os.path.exists("/proc/pressure/cpu")) and (here is None or 0 <= here <= 100)
