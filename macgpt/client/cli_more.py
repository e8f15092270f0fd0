"""The commands for everyday housekeeping and scripting (issue 13): ls, rm, prune, wait, extend and
completion. ``cli.py`` adds ``COMMANDS`` to the ``macgpt`` group."""

from __future__ import annotations

from typing import Any

import click

from macgpt.client.exitcodes import Exit
from macgpt.client.surface import input_errors, state_filter

JOBS = click.argument("jobs", nargs=-1, required=True, type=click.IntRange(1), metavar="JOB...")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="print the answer as one JSON object")


STATE_FILTER = click.option("--state", "states", callback=state_filter, metavar="S[,S...]",
                            help="only jobs in these states (queued, running, paused, completed, failed, ...)")
NAME_FILTER = click.option("--name", metavar="GLOB", default=None, help="only jobs whose name matches, e.g. 'exp-*'")


@click.command(name="ls")
@STATE_FILTER
@NAME_FILTER
@click.option("--json", "as_json", is_flag=True, help="the same JSON as `status --json`")
@click.pass_context
@input_errors
def ls(ctx: click.Context, states: set[str] | None, name: str | None, as_json: bool) -> int:
    """A compact list of jobs with their disk use (read from the home when the daemon is down)."""
    from macgpt.client import jobs

    return jobs.status(ctx.obj["home"], None, as_json, states, name, compact=True)


@click.command()
@JOBS
@click.option("--force", is_flag=True, help="stop a running job first (it writes a checkpoint), then remove it")
@AS_JSON
@click.pass_context
@input_errors
def rm(ctx: click.Context, jobs: tuple[int, ...], force: bool, as_json: bool) -> int:
    """Remove JOB...: the queue entry, its history and its directory. A running job is refused
    unless --force; nothing is removed when any JOB is refused."""
    from macgpt.client import house

    return house.rm(ctx.obj["home"], list(jobs), force, as_json)


def _age(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from macgpt.client.house import parse_age

    if value is None:
        return None
    try:
        return parse_age(value)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--older-than ")) from None


@click.command()
@click.option("--older-than", callback=_age, metavar="AGE", help="only jobs finished at least AGE ago: 30m, 12h, 7d")
@click.option("--state", "states", callback=state_filter, metavar="S[,S...]", default="completed,failed,cancelled",
              show_default=True, help="finished states to prune")
@click.option("--dry-run", is_flag=True, help="say what would be removed, remove nothing")
@AS_JSON
@click.pass_context
@input_errors
def prune(ctx: click.Context, older_than: float | None, states: set[str], dry_run: bool, as_json: bool) -> int:
    """Remove finished jobs (and their files) in bulk; running, queued and paused jobs are never pruned."""
    from macgpt.client import house

    return house.prune(ctx.obj["home"], states, older_than, dry_run, as_json)


@click.command()
@JOBS
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="S",
              help="give up after S seconds (exit 1)")
@AS_JSON
@click.pass_context
@input_errors
def wait(ctx: click.Context, jobs: tuple[int, ...], timeout: float | None, as_json: bool) -> int:
    """Wait until every JOB has finished; exit 0 when all completed, 1 when any failed or was cancelled."""
    from macgpt.client import house

    return house.wait(ctx.obj["home"], list(jobs), timeout, as_json)


@click.command()
@click.argument("shell", type=click.Choice(("bash", "zsh", "fish")))
def completion(shell: str) -> Any:
    """Print the tab-completion script for SHELL, e.g. `macgpt completion bash >> ~/.bashrc`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    root = click.get_current_context().find_root().command
    click.echo(cls(root, {}, "macgpt", "_MACGPT_COMPLETE").source())
    return Exit.OK


@click.command()
@click.argument("job", type=click.IntRange(1))
@click.option("--steps", type=click.IntRange(1, 10_000_000), required=True, metavar="N",
              help="optimizer steps to train beyond the job's last checkpoint")
@AS_JSON
@click.pass_context
@input_errors
def extend(ctx: click.Context, job: int, steps: int, as_json: bool) -> int:
    """Train a completed JOB N steps further on the same data, from its final checkpoint. The cosine
    schedule is stretched to the new total: the learning rate rises from the old floor to the longer
    cosine's value at that step, then decays to the floor at the new end."""
    from macgpt.client import house

    return house.extend(ctx.obj["home"], job, steps, as_json)


COMMANDS = (ls, rm, prune, wait, completion, extend)
