"""Finish hooks on a real daemon: `--on-finish` runs once per finished job with the right
environment, `--notify` calls the desktop notifier, a bad hook is refused at submit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from macgpt import metricsfile

from ..conftest import MACGPT, MACGPTD
from .live import job_status, wait_for

FAST_JOB = ["--set", "vocab_size=500", "--batch-size", "8", "--threads", "1"]
HOOK = 'env | grep ^MACGPT_ | sort > "$OUT/$MACGPT_JOB_ID.env"; echo "$MACGPT_JOB_ID" >> "$OUT/calls"'


@pytest.fixture
def daemon_with_notifier(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A daemon whose PATH has a `notify-send` that records its arguments (a real program)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{tmp_path}/notified"\necho >> "{tmp_path}/notified"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OUT", str(tmp_path))
    # limits at 100%: the shared test machine is busy, and these tests are about hooks, not the governor
    r = subprocess.run([MACGPTD, "start", "--max-cpu", "100"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    yield tmp_path
    subprocess.run([MACGPTD, "stop", "--timeout", "60"], capture_output=True, text=True, timeout=90)


def submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MACGPT, "submit", "tiny", *FAST_JOB, *args], capture_output=True, text=True, timeout=60)


def test_on_finish_runs_once_per_finished_job_with_its_environment(daemon_with_notifier: Path, home: Path) -> None:
    out = daemon_with_notifier
    done = submit("--steps", "20", "--name", "done", "--on-finish", HOOK, "--notify")
    held = submit("--steps", "20", "--name", "held", "--on-finish", HOOK)
    plain = submit("--steps", "10", "--name", "plain")
    assert [r.returncode for r in (done, held, plain)] == [0, 0, 0], done.stderr + held.stderr
    first, second, third = (int(r.stdout) for r in (done, held, plain))
    for queued in (second, third):
        assert subprocess.run([MACGPT, "cancel", str(queued)], capture_output=True, timeout=60).returncode == 0
    wait_for(lambda: job_status(first)["state"] == "completed", timeout=280)
    wait_for(lambda: (out / "calls").exists() and len((out / "calls").read_text().split()) >= 2, timeout=30)
    calls = sorted(int(x) for x in (out / "calls").read_text().split())
    assert calls == sorted([first, second])  # once each; the cancelled job without a hook ran none
    env = dict(line.split("=", 1) for line in (out / f"{first}.env").read_text().splitlines())
    status = job_status(first)
    assert env["MACGPT_JOB_STATE"] == "completed" and env["MACGPT_JOB_NAME"] == "done"
    assert float(env["MACGPT_FINAL_LOSS"]) == pytest.approx(status["loss"])
    assert env["MACGPT_MODEL_PATH"] == status["final_model"] and Path(env["MACGPT_MODEL_PATH"]).exists()
    assert env["MACGPT_STEP"] == "20"
    cancelled = dict(line.split("=", 1) for line in (out / f"{second}.env").read_text().splitlines())
    assert cancelled["MACGPT_JOB_STATE"] == "cancelled" and cancelled["MACGPT_MODEL_PATH"] == ""
    notified = (out / "notified").read_text().splitlines()
    assert len(notified) == 1 and f"macgpt: job {first} (done) completed|loss " in notified[0]
    # the daemon also recorded the governor's decisions in each job's metrics file
    m = metricsfile.read(metricsfile.path_in(home / "jobs" / f"{first:06d}"))
    assert [r["step"] for r in m.of("train")][-1] == 20 and m.skipped == []


def test_a_bad_hook_is_refused_at_submit_and_nothing_is_queued(daemon_with_notifier: Path) -> None:
    from macgpt.client.connection import Client, RemoteError
    from macgpt.paths import layout

    client = Client(layout())
    base = {"config": "tiny", "overrides": {"steps": 5}}
    for hooks, words in (({"notify": "yes"}, "hooks.notify must be true or false"),
                         ({"on_finish": ""}, "hooks.on_finish must be a non-empty command"),
                         ({"mail": "me"}, "unknown hook(s) ['mail']")):
        with pytest.raises(RemoteError) as e:
            client.call("submit", {**base, "hooks": hooks})
        assert e.value.code == "invalid_argument" and words in e.value.message
    assert client.call("status")["jobs"] == []
    r = subprocess.run([MACGPT, "status", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["jobs"] == []
