"""Commands that talk to the daemon: submit, status, logs, sample, pause, resume, cancel,
checkpoint, limits. Each is a plain function returning an exit code."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from macgpt.client import lines, render
from macgpt.client.connection import Client, DaemonNotRunning, RemoteError
from macgpt.client.exitcodes import Exit
from macgpt.client.offline_home import OFFLINE_NOTE, OFFLINE_NOTE_ZH, OfflineHome
from macgpt.client.surface import emit_json, job_ref
from macgpt.config.limits import hard_memory_percent
from macgpt.jobfiles import disk_usage
from macgpt.paths import layout
from macgpt.protocol import FINISHED

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec


def _client(home: str | None) -> Client:
    return Client(layout(home, create=False))  # a client never creates the home: the daemon does


class HomeMissing(DaemonNotRunning):
    """The daemon is down and its home does not exist: nothing to read, and nothing is created."""

    def __init__(self, home: Path) -> None:
        Exception.__init__(self, f"the macgpt daemon is not running and its home {home} does not exist, so there "
                                 "is nothing to read (check --home or MACGPT_HOME; `macgptd start` creates it)")


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
def submit(home: str | None, spec: JobSpec, follow: bool, as_json: bool, after: list[int] | None = None,
           hooks: dict[str, Any] | None = None) -> int:
    client = _client(home)
    overrides = {**spec.train.__dict__, **spec.model.__dict__}
    args = {
        "config": spec.config, "overrides": overrides, "data": list(spec.data),
        "eval_data": list(spec.eval_data), "name": spec.name, "limits": spec.own_limits,
        "manifest": spec.manifest,
        **({"after": after} if after else {}),
    }
    if hooks:
        args["hooks"] = hooks
    result = client.call("submit", args)
    answer = job_ref(result["job"], **{k: v for k, v in result.items() if k != "job"})
    if as_json:
        emit_json(answer)  # with --follow, the first line; the events follow
    elif not follow:
        click.echo(answer["id"])
    else:
        click.echo(f"任务 {answer['id']} 已排队（{answer['name']}，第 {answer['position']} 位）" if lines.current() == "zh"
                   else f"job {answer['id']} queued ({answer['name']}, position {answer['position']})", err=True)
    return _follow(client, answer["id"], as_json) if follow else Exit.OK


def offline(home: str | None, read: Callable[[OfflineHome], Any]) -> Any:
    """``read`` of the home read directly, after saying so in one line on stderr. Never writes the
    home: a missing one is not created but reported (``HomeMissing``, exit 3)."""
    lay = layout(home, create=False)
    if not lay.home.is_dir():
        raise HomeMissing(lay.home)
    note = OFFLINE_NOTE_ZH if lines.current() == "zh" else OFFLINE_NOTE
    click.echo(note.format(home=lay.home), err=True)
    book = OfflineHome(lay)
    try:
        return read(book)
    finally:
        book.close()


@remote
def logs(home: str | None, job: int | None, follow: bool, as_json: bool) -> int:
    client = _client(home)
    try:
        if job is None:
            job = _latest(client)
        if follow:
            return _follow(client, job, as_json)
        _state, events = client._history(job, 0)
    except DaemonNotRunning:
        if follow:
            raise
        events = offline(home, lambda book: book.history(book.get(job).id))
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
        line = loss_line(layout(home, create=False).job_dir(job), label=lines.W["zh" if zh else "en"]["loss"])
        if line:
            click.echo(f"任务 {job}：{line}" if zh else f"job {job}: {line}")


def _latest(client: Client) -> int:
    jobs = client.call("status")["jobs"]
    if not jobs:
        raise RemoteError("not_found", "there are no jobs yet; submit one with `macgpt submit tiny`")
    return int(jobs[0]["id"])


def _print_event(ev: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(ev)
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
        click.echo(f"\nstopped following; {_now_state(client, job)} (macgpt logs {job} -f)", err=True)
        return Exit.INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    return Exit.OK if final_state in (None, "completed") or final_state not in FINISHED else Exit.FAILURE


def _now_state(client: Client, job: int) -> str:
    """"job 4 keeps running", "job 4 is paused (user)": what the job does now, in words."""
    try:
        j = client.call("status", {"job": job}, timeout=3.0)["jobs"][0]
    except (DaemonNotRunning, RemoteError):
        return f"job {job}: state unknown (the daemon did not answer)"
    if j["state"] in ("running", "starting", "queued"):
        return f"job {job} keeps {'running' if j['state'] != 'queued' else 'its place in the queue'}"
    return f"job {job} is {j['state']}" + (f" ({j['reason']})" if j.get("reason") else "")


class _ProgressBar:
    def __init__(self, job: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.lang = lines.current()
        self.console = console or Console()  # a given one: tests render at a chosen width
        self.narrow = self.console.width < 110  # step and loss first; the rest when there is room
        self.label = f"任务 {job}" if self.lang == "zh" else f"job {job}"
        self.bar_width = 16 if self.narrow else 40
        self.progress = Progress(
            TextColumn(self.label), MofNCompleteColumn(),
            BarColumn(bar_width=self.bar_width),
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
            if self.narrow:  # step and loss first, then what the governor does, then speed; no threads, batch
                parts = info.split(" | ")
                info = " | ".join([parts[0], *parts[4:], parts[1]])
                info = render._cut(info, self._info_room(d["max_steps"]))  # rich would squeeze the step instead
            self.progress.update(self.task, total=d["max_steps"], completed=d["step"], info=info)
        elif ev["kind"] == "state":
            self.progress.update(self.task, info=lines.event_line("state", d, self.lang) or d["state"])
        elif ev["kind"] == "progress" and d.get("total"):
            self.progress.update(self.task, total=d["total"], completed=d.get("done") or 0, info=lines.progress_text(d))

    def _info_room(self, total: int) -> int:
        """Columns left for the text after the bar: the width less the label, ``step/max``, the bar,
        the ETA (at most 8, e.g. 12:34:56) and the four single spaces between the five columns."""
        used = render.cells(self.label) + 2 * len(str(total)) + 1 + self.bar_width + 8 + 4
        return max(12, self.console.width - used - 1)  # and one column spare: a full last column wraps

    def close(self) -> None:
        self.progress.stop()


def status_answer(home: str | None, job: int | None) -> dict[str, Any]:
    """The daemon's status answer (or the home's, read directly when it is down) with disk use added."""
    lay = layout(home, create=False)
    try:
        r = _client(home).call("status", {"job": job} if job else {})
        r["daemon"].setdefault("running", True)
    except DaemonNotRunning:
        r = offline(home, lambda book: book.status(job))
    for j in r["jobs"]:
        j["disk_bytes"] = disk_usage(lay.job_dir(j["id"]))
    r["disk_total"] = disk_usage(lay.jobs) if job is None else sum(j["disk_bytes"] for j in r["jobs"])
    return r


@remote
def status(home: str | None, job: int | None, as_json: bool, states: set[str] | None = None,
           name: str | None = None, compact: bool = False) -> int:
    from macgpt.client import status_view

    r = status_answer(home, job)
    shown = status_view.select(r["jobs"], states, name)
    if as_json:
        emit_json({**r, "jobs": shown})
        return Exit.OK
    width, lang = render.terminal_width(), lines.current()
    zh = lang == "zh"
    if not compact:
        click.echo(status_view.header_line(r, r["jobs"], width, lang))
    if not r["jobs"]:
        click.echo("还没有任务：macgpt submit tiny" if zh else "no jobs yet: macgpt submit tiny")
    elif not shown:
        click.echo("没有符合筛选条件的任务" if zh else "no job matches the filter")
    elif compact:
        click.echo(status_view.ls_lines(shown, width, lang))
    else:
        click.echo("\n".join(status_view.status_lines(r, shown, width, lang)))
    _sparklines(home, [j["id"] for j in shown], as_json)
    return Exit.OK


@remote
def control(home: str | None, cmd: str, job: int, as_json: bool = False) -> int:
    client = _client(home)
    if cmd == "resume":
        state = client.call("status", {"job": job})["jobs"][0]["state"]
        if state in ("cancelled", "failed"):
            cmd = "requeue"  # continue from its last checkpoint
    r = client.call(cmd, {"job": job}, timeout=60.0 if cmd == "checkpoint" else None)
    if as_json:
        emit_json(job_ref(job, **{k: v for k, v in r.items() if k != "job"}))
    else:
        click.echo(_control_line(cmd, job, r, lines.current()))
    return Exit.OK


def _control_line(cmd: str, job: int, r: dict[str, Any], lang: str) -> str:
    if lang == "zh":
        if cmd == "checkpoint":
            return f"任务 {job}：第 {r['step']} 步的检查点 → {r['path']}"
        state = lines.state_zh(r["state"])
        if cmd == "requeue":
            where = f"从第 {r['from_step']} 步" if r.get("from_step") else "从头（没有检查点）"
            return f"任务 {job}：{state}；将{where}继续"
        return f"任务 {job}：{state}"
    if cmd == "checkpoint":
        return f"job {job}: checkpoint at step {r['step']} → {r['path']}"
    if cmd == "requeue":
        where = f"from step {r['from_step']}" if r.get("from_step") else "from the start (no checkpoint)"
        return f"job {job}: {r['state']}; it continues {where}"
    return f"job {job}: {r['state']}"


@remote
def limits(home: str | None, changes: dict[str, Any], as_json: bool) -> int:
    r = _client(home).call("limits", {k: v for k, v in changes.items() if v is not None})
    r["hard_memory"] = hard_memory_percent(r["hard_memory"], r["max_memory"])  # 0 means "max-memory + 15"
    if as_json:
        emit_json(r)
    else:
        click.echo(f"max CPU {r['max_cpu']:g}% | max memory {r['max_memory']:g}% (hard {r['hard_memory']:g}%) "
                   f"| on battery: {r['on_battery']} | hang after {r['hang_seconds']:g}s")
        for line in r.get("levers") or []:
            click.echo(f"  lever: {line}")
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

    try:
        r = client.call("sample", args, timeout=60.0, on_partial=piece)
    except DaemonNotRunning:
        r = offline(home, lambda book: book.sample_source(job))
    if r.get("source") == "checkpoint":
        from macgpt.client import local

        if not as_json:
            click.echo(f"(job {r['job']} is {r['state']}: sampling from {r['path']})", err=True)
        return local.sample_model(Path(r["path"]), prompt, params, as_json, job=r.get("job"))
    if as_json:  # the job it sampled, named by `id` like everywhere else
        emit_json(job_ref(r.get("job"), **{k: v for k, v in r.items() if k != "job"}, seed=params.get("seed")))
    else:
        if not streamed:
            sys.stdout.write(r["text"])
        sys.stdout.write("\n")
        if r.get("truncated_prompt"):
            click.echo("note: the prompt was longer than the context and was cut from the left", err=True)
    return Exit.OK
