"""The finish hooks' decisions: which notifier, what it says, what the command's environment holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from macgpt.jobrecord import JobRecord
from macgpt.protocol import JobState
from macgpt.supervisor import notify

JOB = JobRecord(id=4, name="tiny", config="tiny", state=JobState.COMPLETED, reason=None, queue_order=1.0, created=1.0,
                updated=2.0, started=1.0, finished=2.0, step=200, max_steps=200, loss=3.25, eval_loss=6.5,
                checkpoint=str(Path("jobs", "000004", "ckpt-00000200.pt")), checkpoint_step=200, checkpoint_time=2.0,
                final_model=str(Path("jobs", "000004", "final_model.pt")), error=None, warning=None, restarts=0,
                stored={})


def test_the_notifier_is_osascript_on_macos_notify_send_elsewhere_and_nothing_without_one() -> None:
    everything = lambda name: f"/usr/bin/{name}"  # noqa: E731
    nothing = lambda name: None  # noqa: E731
    mac = notify.notifier("darwin", "macgpt: job 4", 'loss "3.25"', everything)
    assert mac is not None and mac[:2] == ["osascript", "-e"]
    assert mac[2] == 'display notification "loss \\"3.25\\"" with title "macgpt: job 4"'  # quoted, not injected
    assert notify.notifier("linux", "t", "b", everything) == ["notify-send", "--app-name=macgpt", "t", "b"]
    assert notify.notifier("linux", "t", "b", nothing) is None
    assert notify.notifier("darwin", "t", "b", nothing) is None


def test_message_and_environment_of_a_finished_job(tmp_path: Path) -> None:
    assert notify.message(JOB) == ("macgpt: job 4 (tiny) completed", "loss 3.2500 at step 200")
    env = notify.finish_env(JOB, tmp_path)
    assert env["MACGPT_JOB_ID"] == "4" and env["MACGPT_JOB_STATE"] == "completed" and env["MACGPT_FINAL_LOSS"] == "3.25"
    assert env["MACGPT_MODEL_PATH"] == JOB.final_model and env["MACGPT_JOB_REASON"] == ""
    failed = dataclasses.replace(JOB, state=JobState.FAILED, final_model=None, loss=None, reason="out of memory")
    assert notify.finish_env(failed, tmp_path)["MACGPT_MODEL_PATH"] == JOB.checkpoint
    assert notify.message(failed)[1] == "step 200; out of memory"


def test_a_hook_that_cannot_start_is_logged_not_raised(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    notify.job_finished(dataclasses.replace(JOB, stored={"hooks": {"on_finish": "true"}}), blocked / "job", "linux")


@pytest.mark.parametrize("hooks", [{"notify": 1}, {"on_finish": 5}, {"on_finish": " "}, {"x": 1}, []])
def test_bad_hooks_are_refused(hooks: object) -> None:
    with pytest.raises(ValueError, match="submit: "):
        notify.check_hooks(hooks)
