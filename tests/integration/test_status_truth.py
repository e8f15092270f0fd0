"""`status` tells one story: a queued job says what it waits for; a paused or held job shows no
speed; the state, the reason and the governor's line agree; one figure for other programs' CPU.
A real daemon and real workers, the limits changed live."""

from __future__ import annotations

from pathlib import Path

from .live import job_status, wait_for
from .test_daemon import FAST_JOB, cli, cli_json, daemon  # noqa: F401  (daemon: the fixture)


def agree(j: dict) -> None:
    """The invariants of one running job's row."""
    assert j["state"] == "running", j
    if j["governor_state"] in ("stopped", "battery"):
        assert j["steps_per_s"] is None and j["tokens_per_s"] is None, j
        assert j["reason"] == j["governor"], j
    elif j["governor_state"] == "throttled":
        assert j["governor"].startswith("throttled"), j
    elif j["governor_state"] == "full":
        assert j["governor"].startswith("full speed") and j["duty"] == 1.0, j


def governed(jid: int, states: tuple[str, ...]) -> dict:
    return wait_for(lambda: (lambda s: s if s.get("governor_state") in states else None)(job_status(jid)), timeout=30)


def test_status_fields_agree_while_queued_throttled_stopped_and_paused(daemon: Path) -> None:  # noqa: F811
    assert cli("limits", "--max-cpu", "100").returncode == 0  # starts even on a busy machine
    for _ in range(2):
        assert cli("submit", "tiny", "--steps", "100000", *FAST_JOB).returncode == 0
    wait_for(lambda: job_status(1)["state"] == "running" and job_status(1)["step"] > 0, timeout=120)
    queued = job_status(2)
    assert queued["state"] == "queued"
    assert "waiting for a free slot" in queued["reason"] and "position 1" in queued["reason"], queued["reason"]
    agree(governed(1, ("full",)))

    assert cli("limits", "--max-cpu", "30").returncode == 0
    agree(governed(1, ("throttled", "stopped")))  # stopped when the machine is busy: it is shared

    assert cli("limits", "--max-cpu", "1").returncode == 0
    j = governed(1, ("stopped",))
    agree(j)
    other = cli_json("status")["daemon"]["governor"]["other_cpu"]
    assert j["reason"].startswith("stopped: other programs use") and other >= 0

    assert cli("limits", "--max-cpu", "70").returncode == 0
    assert cli("pause", "1").returncode == 0
    j = wait_for(lambda: (lambda s: s if s["state"] == "paused" else None)(job_status(1)), timeout=60)
    assert j["steps_per_s"] is None and j["tokens_per_s"] is None
    assert j["governor_state"] == "paused" and j["governor"].startswith("paused by you"), j
    for jid in ("1", "2"):
        cli("cancel", jid)
