"""What happens when a job finishes: a desktop notification (``submit --notify``) and the user's
``--on-finish`` command, like pueue's callback. The decisions (message, environment, which
notifier) are pure functions; ``job_finished`` runs them without ever blocking the daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from macgpt.jobrecord import JobRecord
from macgpt.log import get

log = get("macgpt.notify")
MAX_COMMAND = 4096
_children: list[subprocess.Popen[bytes]] = []


def check_hooks(hooks: Any) -> dict[str, Any]:
    """The ``hooks`` of a submit request: {notify?: bool, on_finish?: str}; ValueError names the bad field."""
    if not isinstance(hooks, dict):
        raise ValueError("submit: hooks must be a map")
    unknown = set(hooks) - {"notify", "on_finish"}
    if unknown:
        raise ValueError(f"submit: unknown hook(s) {sorted(map(str, unknown))}; known: notify, on_finish")
    notify, command = hooks.get("notify", False), hooks.get("on_finish")
    if not isinstance(notify, bool):
        raise ValueError(f"submit: hooks.notify must be true or false, got {notify!r}")
    if command is not None and (not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND):
        raise ValueError(f"submit: hooks.on_finish must be a non-empty command of at most {MAX_COMMAND} characters")
    return {"notify": notify, "on_finish": command}


def finish_env(job: JobRecord, job_dir: Path) -> dict[str, str]:
    """The environment of an ``--on-finish`` command."""
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    return {"MACGPT_JOB_ID": s(job.id), "MACGPT_JOB_NAME": s(job.name), "MACGPT_JOB_STATE": s(job.state),
            "MACGPT_JOB_REASON": s(job.reason), "MACGPT_FINAL_LOSS": s(job.loss),
            "MACGPT_EVAL_LOSS": s(job.eval_loss), "MACGPT_STEP": s(job.step),
            "MACGPT_MODEL_PATH": s(job.final_model or job.checkpoint), "MACGPT_JOB_DIR": str(job_dir)}


def message(job: JobRecord) -> tuple[str, str]:
    title = f"macgpt: job {job.id} ({job.name}) {job.state}"
    loss = f"loss {job.loss:.4f} at step {job.step}" if job.loss is not None else f"step {job.step}"
    why = f"; {job.reason}" if job.reason else ""
    return title, (loss + why)[:300]


def notifier(platform: str, title: str, body: str, which: Any = shutil.which) -> list[str] | None:
    """The command that shows a desktop notification here, or None where there is none."""
    if platform == "darwin" and which("osascript"):
        return ["osascript", "-e", f"display notification {json.dumps(body)} with title {json.dumps(title)}"]
    if which("notify-send"):
        return ["notify-send", "--app-name=macgpt", title, body]
    return None


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> None:
    with open(log_path, "ab") as out:
        _children.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          start_new_session=True))


def reap() -> None:
    """Collect finished hook processes (no zombies left behind)."""
    _children[:] = [p for p in _children if p.poll() is None]


def job_finished(job: JobRecord, job_dir: Path, platform: str) -> None:
    """Start the job's hooks; a hook that cannot start is logged, never raised into the daemon."""
    reap()
    try:
        job_dir.mkdir(parents=True, exist_ok=True)  # a job cancelled in the queue never had one
        hooks = job.hooks
        if hooks.get("notify"):
            cmd = notifier(platform, *message(job))
            if cmd:
                _spawn(cmd, dict(os.environ), job_dir / "notify.log")
        if hooks.get("on_finish"):
            env = {**os.environ, **finish_env(job, job_dir)}
            _spawn(["/bin/sh", "-c", hooks["on_finish"]], env, job_dir / "on_finish.log")
            log.info("on_finish_started", job=job.id, command=hooks["on_finish"][:200])
    except (OSError, ValueError, TypeError) as e:
        log.warning("finish_hook_failed", job=job.id, error=str(e))
