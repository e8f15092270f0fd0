"""Commands that talk to the daemon: submit, status, logs, sample, pause, resume, cancel,
checkpoint, limits. Each is a plain function returning an exit code."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from macgpt.client import lines, render
from macgpt.client.connection import Client, DaemonNotRunning, RemoteError
from macgpt.client.exitcodes import Exit
from macgpt.client.render import fmt_bytes
from macgpt.paths import layout
from macgpt.protocol import FINISHED

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec


def _client(home: str | None) -> Client:
    return Client(layout(home))


def remote(f: Any) -> Any:
    """Daemon down -> exit 3; a refused request -> its message and exit 2 or 1."""

    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return f(*args, **kwargs)
        except DaemonNotRunning as e:
            click.echo(f"error: {e}", err=True)
            return Exit.NO_DAEMON
        except RemoteError as e:
            click.echo(f"error: {e.message}", err=True)
            return Exit.USAGE if e.code in ("invalid_argument", "not_found", "conflict") else Exit.FAILURE

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


@remote
def submit(home: str | None, spec: JobSpec, follow: bool, as_json: bool, hooks: dict[str, Any] | None = None) -> int:
    client = _client(home)
    overrides = {**spec.train.__dict__, **spec.model.__dict__}
    args = {
        "config": spec.config, "overrides": overrides, "data": list(spec.data),
        "eval_data": list(spec.eval_data), "name": spec.name, "limits": spec.own_limits,
    }
    if hooks:
        args["hooks"] = hooks
    result = client.call("submit", args)
    if as_json and not follow:
        print(json.dumps(result, ensure_ascii=False))
        return Exit.OK
    if not follow:
        click.echo(result["job"])
        return Exit.OK
    click.echo(f"job {result['job']} queued ({result['name']}, position {result['position']})", err=True)
    return _follow(client, result["job"], as_json)


@remote
def logs(home: str | None, job: int | None, follow: bool, as_json: bool) -> int:
    client = _client(home)
    if job is None:
        job = _latest(client)
    if follow:
        return _follow(client, job, as_json)
    _state, events = client._history(job, 0)
    for ev in events:
        _print_event(ev, as_json)
    _sparklines(home, [job], as_json)
    return Exit.OK


def _sparklines(home: str | None, jobs: list[int], as_json: bool) -> None:
    """On a terminal, one loss sparkline per job from its metrics file."""
    if as_json or not sys.stdout.isatty():
        return
    from macgpt.client.observe import loss_line

    zh = lines.current() == "zh"
    for job in jobs:
        line = loss_line(layout(home).job_dir(job), label=lines.W["zh" if zh else "en"]["loss"])
        if line:
            click.echo(f"任务 {job}：{line}" if zh else f"job {job}: {line}")


def _latest(client: Client) -> int:
    jobs = client.call("status")["jobs"]
    if not jobs:
        raise RemoteError("not_found", "there are no jobs yet; submit one with `macgpt submit tiny`")
    return int(jobs[0]["id"])


def _print_event(ev: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(ev, ensure_ascii=False), flush=True)
        return
    line = render.event_line(ev["kind"], ev["data"])
    if line:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev["t"]))
        click.echo(f"{stamp} {line}")


def _follow(client: Client, job: int, as_json: bool) -> int:
    """Print the job's events until it finishes; a progress bar on a terminal."""
    final_state = None
    bar = None if as_json or not sys.stdout.isatty() else _ProgressBar(job)
    try:
        for ev in client.follow(job):
            if ev["kind"] == "state":
                final_state = ev["data"]["state"]
            if bar is not None:
                bar.update(ev)
                line = render.event_line(ev["kind"], ev["data"])
                if line and ev["kind"] != "metrics":
                    bar.console.print(line, markup=False, highlight=False)
            else:
                _print_event(ev, as_json)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; job {job} keeps running (macgpt logs {job} -f)", err=True)
        return Exit.OK
    finally:
        if bar is not None:
            bar.close()
    return Exit.OK if final_state in (None, "completed") or final_state not in FINISHED else Exit.FAILURE


class _ProgressBar:
    def __init__(self, job: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.lang = lines.current()
        self.console = Console()
        self.progress = Progress(
            TextColumn(f"任务 {job}" if self.lang == "zh" else f"job {job}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, transient=False,
        )
        starting = "启动中" if self.lang == "zh" else "starting"
        self.task = self.progress.add_task("train", total=None, info=starting)
        self.progress.start()
        self.governor = ""

    def update(self, ev: dict[str, Any]) -> None:
        d = ev["data"]
        if ev["kind"] == "governor":
            self.governor = str(d.get("state") or "")
        if ev["kind"] == "metrics":
            info = lines.progress_info(d, self.governor, self.lang)
            self.progress.update(self.task, total=d["max_steps"], completed=d["step"], info=info)
        elif ev["kind"] == "state":
            self.progress.update(self.task, info=lines.event_line("state", d, self.lang) or d["state"])

    def close(self) -> None:
        self.progress.stop()


@remote
def status(home: str | None, job: int | None, as_json: bool) -> int:
    r = _client(home).call("status", {"job": job} if job else {})
    if as_json:
        print(json.dumps(r, ensure_ascii=False, default=str))
        return Exit.OK
    d = r["daemon"]
    lim = d["limits"]
    governor = (d.get("governor") or {}).get("message")
    click.echo(f"daemon pid {d['pid']}, up {render.fmt_duration(d['uptime'])}; limits: CPU ≤ {lim['max_cpu']:g}%, "
               f"memory ≤ {lim['max_memory']:g}%, on battery: {lim['on_battery']}" + (f"; {governor}" if governor else ""))
    if not r["jobs"]:
        click.echo("no jobs yet: macgpt submit tiny")
        return Exit.OK
    rows = []
    for j in r["jobs"]:
        state = j["state"] + (f" ({j['reason']})" if j.get("reason") else "")
        batch = "-" if j["batch_size"] is None else (
            f"{j['micro_batch']}/{j['batch_size']}" if j["micro_batch"] != j["batch_size"] else str(j["batch_size"]))
        rows.append([
            str(j["id"]), j["name"], j["config"], state if len(state) <= 48 else state[:47] + "…",
            f"{j['step']}/{j['max_steps']}", render.fmt_num(j["loss"], 3), render.fmt_num(j["eval_loss"], 3),
            "-" if j["steps_per_s"] is None else f"{j['steps_per_s']:.1f}/s",
            "-" if j["threads"] is None else str(j["threads"]), batch,
            "-" if j.get("cpu_percent") is None else f"{j['cpu_percent']:.0f}%",
            "-" if j["rss"] is None else fmt_bytes(j["rss"]), render.fmt_duration(j["checkpoint_age"]),
        ])
    click.echo(render.table(["ID", "NAME", "CONFIG", "STATE", "STEP", "LOSS", "EVAL", "SPEED", "THREADS", "BATCH",
                             "CPU", "MEM", "CKPT AGE"], rows))
    for j in r["jobs"]:
        if j.get("governor"):
            click.echo(f"job {j['id']}: {j['governor']}")
        if j.get("warning") and j["state"] not in ("completed", "cancelled"):
            click.echo(f"job {j['id']}: ⚠ {j['warning']}")
        if len(j.get("reason") or "") > 48 and j["state"] not in ("completed",):
            click.echo(f"job {j['id']}: {j['state']}: {j['reason']}")
    _sparklines(home, [j["id"] for j in r["jobs"]], as_json)
    return Exit.OK


@remote
def control(home: str | None, cmd: str, job: int) -> int:
    r = _client(home).call(cmd, {"job": job}, timeout=60.0 if cmd == "checkpoint" else None)
    if cmd == "checkpoint":
        click.echo(f"job {job}: checkpoint at step {r['step']} → {r['path']}")
    else:
        click.echo(f"job {job}: {r['state']}")
    return Exit.OK


@remote
def limits(home: str | None, changes: dict[str, Any], as_json: bool) -> int:
    r = _client(home).call("limits", {k: v for k, v in changes.items() if v is not None})
    if as_json:
        print(json.dumps(r))
    else:
        hard = r["hard_memory"] or min(100.0, r["max_memory"] + 15)
        click.echo(f"max CPU {r['max_cpu']:g}% | max memory {r['max_memory']:g}% (hard {hard:g}%) "
                   f"| on battery: {r['on_battery']} | hang after {r['hang_seconds']:g}s")
    return Exit.OK


@remote
def sample(home: str | None, prompt: str, job: int | None, params: dict[str, Any], as_json: bool) -> int:
    client = _client(home)
    args = {"prompt": prompt, **params}
    if job is not None:
        args["job"] = job
    streamed: list[str] = []

    def piece(result: dict[str, Any]) -> None:
        if not as_json:
            if not streamed:
                sys.stdout.write(prompt)
            sys.stdout.write(result["text"])
            sys.stdout.flush()
        streamed.append(result["text"])

    r = client.call("sample", args, timeout=60.0, on_partial=piece)
    if r.get("source") == "checkpoint":
        from macgpt.client import local

        if not as_json:
            click.echo(f"(job {r['job']} is {r['state']}: sampling from {r['path']})", err=True)
        return local.sample_model(Path(r["path"]), prompt, params, as_json)
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
    else:
        if not streamed:
            sys.stdout.write(r["text"])
        sys.stdout.write("\n")
        if r.get("truncated_prompt"):
            click.echo("note: the prompt was longer than the context and was cut from the left", err=True)
    return Exit.OK
