"""One surface for every command: `--home` accepted before or after the subcommand, click's own
usage errors re-rendered in macgpt's style (``error: ...``, exit 2), and JSON printed to stdout only."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from macgpt.client.exitcodes import Exit
from macgpt.errors import ConfigError, DataError
from macgpt.paths import PathError

HOME_HELP = "macgpt's data directory (default: $MACGPT_HOME or the platform's user data dir)"


def _set_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        root = ctx.find_root()
        if root.obj is None:
            root.obj = {}
        root.obj["home"] = value


def home_param() -> click.Option:
    """``--home`` for a subcommand: it overrides the group's (and $MACGPT_HOME) when given."""
    return click.Option(["--home"], type=click.Path(file_okay=False), default=None, expose_value=False,
                        is_eager=False, callback=_set_home, help=HOME_HELP)


class Group(click.Group):
    """A click group whose commands all take ``--home`` and whose usage errors look like ours."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "home" for p in cmd.params):
            cmd.params.append(home_param())
        super().add_command(cmd, name)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("\ninterrupted", err=True)
            sys.exit(Exit.INTERRUPTED)
        except click.ClickException as e:
            sys.exit(render_click_error(e))
        sys.exit(int(code or 0) if isinstance(code, int) else 0)


def render_click_error(e: click.ClickException) -> int:
    """click's "Usage: ... Error: Invalid value" as one line in our style; the exit code."""
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    click.echo(f"error: {e.format_message()}{where}", err=True)
    return Exit.USAGE if isinstance(e, click.UsageError) or e.exit_code == 2 else e.exit_code


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (never stderr), flushed at once for pipes."""
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def job_ref(job_id: int, **fields: Any) -> dict[str, Any]:
    """A job named by ``id``, with ``job`` kept as an alias for one release."""
    return {"id": job_id, "job": job_id, **fields}


def input_errors(f: Callable[..., int]) -> Callable[..., None]:
    """Turn bad input into one message and exit 2; a command's return value is its exit code."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = f(*args, **kwargs)
        except (ConfigError, DataError, PathError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(Exit.USAGE)
        sys.exit(int(code or 0))

    return wrapper


def state_filter(_ctx: click.Context, _param: click.Parameter, value: str | None) -> set[str] | None:
    """``--state running,queued`` -> a set; an unknown state is a usage error naming it."""
    from macgpt.client.status_view import parse_states  # its tables load only when a command runs

    try:
        return parse_states(value)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--state: ")) from None
