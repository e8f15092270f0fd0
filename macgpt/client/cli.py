"""``macgpt``: the click command line. Each command parses its options and forwards to a plain
function; input errors become one clear line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from macgpt import __version__
from macgpt.client import cli_more
from macgpt.client.options import (
    SampleArg,
    check_data,
    check_device,
    job_options,
    limit_option,
    presets_help,
    resolve_init_from,
    spec_from_options,
)
from macgpt.client.surface import HOME_HELP, Group, input_errors, state_filter
from macgpt.paths import layout
from macgpt.protocol import COMMANDS, SAMPLE_DEFAULTS


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="macgpt")
@click.option("--home", envvar="MACGPT_HOME", type=click.Path(file_okay=False), default=None, help=HOME_HELP)
@click.option("--lang", type=click.Choice(("zh", "en")), envvar="MACGPT_LANG", default=None,
              help="language of log lines, the progress bar and status (default: $MACGPT_LANG, else the locale)")
@click.pass_context
def main(ctx: click.Context, home: str | None, lang: str | None) -> None:
    """Train tiny GPT models on your laptop without making it unresponsive."""
    ctx.obj = {"home": home, **(ctx.obj or {})}
    if lang:
        import os

        os.environ["MACGPT_LANG"] = lang  # read by client/lines.py wherever a line is rendered


@main.command()
@job_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="run directory (default: HOME/runs/NAME); the same command again resumes there")
@click.option("--fresh", is_flag=True, help="discard the run directory's checkpoints and start over")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event, then a summary")
@click.pass_context
@input_errors
def train(ctx: click.Context, out: Path | None, fresh: bool, as_json: bool, **opts: Any) -> int:
    """Train CONFIG (tiny, small, original) in the foreground, supervised like a daemon job.

    Ctrl+C saves a checkpoint and exits; the same command again continues where it stopped.
    """
    from macgpt.client import local

    resolve_init_from(opts, ctx.obj["home"])
    spec = spec_from_options(opts)
    if opts.get("print_torchrun"):
        from macgpt.client import scaleout

        return scaleout.print_lines(spec, layout(ctx.obj["home"]), out)
    spec = check_data(spec)
    check_device(spec)
    return local.train(spec, layout(ctx.obj["home"]), out, fresh, as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--max-memory", type=click.FloatRange(1, 100), default=60.0, show_default=True,
              help="memory budget (total percent) used for the 'fits' column")
@input_errors
def configs(as_json: bool, max_memory: float) -> int:
    """The guide's configuration self-test: system, presets, memory needs, current load."""
    from macgpt.client import local

    return local.configs(as_json, max_memory)


_TOKENS = COMMANDS["sample"]["max_new_tokens"]


def sample_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("-n", "--tokens", "max_new_tokens", type=click.IntRange(int(_TOKENS.lo or 1), int(_TOKENS.hi or 1)),
                     default=SAMPLE_DEFAULTS["max_new_tokens"], show_default=True, help="new tokens at most"),
        click.option("--temperature", type=SampleArg("temperature", float), default=SAMPLE_DEFAULTS["temperature"],
                     show_default=True, help="0: always the most likely token"),
        click.option("--top-k", type=SampleArg("top_k", int), default=SAMPLE_DEFAULTS["top_k"], show_default=True,
                     help="0: off"),
        click.option("--top-p", type=SampleArg("top_p", float), default=SAMPLE_DEFAULTS["top_p"], show_default=True,
                     help="nucleus sampling: keep the most likely tokens up to this probability (1: off)"),
        click.option("--repetition-penalty", type=SampleArg("repetition_penalty", float),
                     default=SAMPLE_DEFAULTS["repetition_penalty"], show_default=True,
                     help="above 1 makes tokens already in the text less likely (1: off)"),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
                     help="random seed (default: a new one each time, printed so a text can be repeated)"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command()
@click.argument("prompt")
@click.option("--job", type=click.IntRange(1), default=None, help="job id (default: the most recent job)")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="sample from this checkpoint file (or `macgpt export` directory) instead of a job")
@sample_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object with the text")
@click.pass_context
@input_errors
def sample(ctx: click.Context, prompt: str, job: int | None, model: Path | None, as_json: bool,
           **params: Any) -> int:
    """Generate text from a job (live weights while it runs) or a checkpoint file."""
    from macgpt.client import local

    local.check_prompt(prompt)
    local.choose_seed(params, as_json)
    if model is not None:
        return local.sample_model(model, prompt, params, as_json)
    from macgpt.client import jobs

    return jobs.sample(ctx.obj["home"], prompt, job, params, as_json)


@main.command()
@click.option("--model", type=click.Path(path_type=Path), required=True, help="checkpoint file")
@click.option("--data", multiple=True, metavar="FILE", help="text to evaluate on (default: built-in test set)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "every", is_flag=True, help="every token (default: an evenly spread sample of ~64K tokens)")
@input_errors
def evaluate(model: Path, data: tuple[str, ...], as_json: bool, every: bool) -> int:
    """Loss, perplexity and token count of a checkpoint on held-out text (the guide's evaluate.py)."""
    from macgpt.client import local

    return local.evaluate(model, list(data), as_json, every)


@main.command()
@job_options
@click.option("--after", multiple=True, type=click.IntRange(1), metavar="JOB",
              help="start only when JOB has completed (fail if it fails); repeatable")
@click.option("--notify/--no-notify", default=False, envvar="MACGPT_NOTIFY",
              help="a desktop notification when the job completes or fails (default: $MACGPT_NOTIFY)")
@click.option("--on-finish", metavar="CMD", default=None,
              help="shell command run once when the job ends (env: MACGPT_JOB_ID, MACGPT_JOB_STATE, MACGPT_FINAL_LOSS, "
                   "MACGPT_MODEL_PATH, ...)")
@click.option("--follow", is_flag=True, help="follow the job to its end (progress bar on a terminal)")
@click.option("--json", "as_json", is_flag=True, help="print the answer (or, with --follow, each event) as JSON")
@click.pass_context
@input_errors
def submit(ctx: click.Context, after: tuple[int, ...], follow: bool, as_json: bool, notify: bool,
           on_finish: str | None, **opts: Any) -> int:
    """Queue a training job of CONFIG on the daemon; prints the job id."""
    from macgpt.client import jobs

    resolve_init_from(opts, ctx.obj["home"])
    spec = spec_from_options(opts)
    if opts.get("print_torchrun"):
        from macgpt.client import scaleout

        return scaleout.print_lines(spec, None, None)
    spec = check_data(spec)
    check_device(spec)
    hooks = {"notify": notify, "on_finish": on_finish} if notify or on_finish else None
    return jobs.submit(ctx.obj["home"], spec, follow, as_json, list(after), hooks=hooks)


@main.command()
@click.argument("job", type=click.IntRange(1), required=False)
@click.option("--json", "as_json", is_flag=True, help="the documented JSON schema (see README)")
@click.option("--state", "states", callback=state_filter, metavar="S[,S...]",
              help="only jobs in these states, e.g. running,queued")
@click.option("--name", metavar="GLOB", default=None, help="only jobs whose name matches, e.g. 'exp-*'")
@click.pass_context
@input_errors
def status(ctx: click.Context, job: int | None, as_json: bool, states: set[str] | None, name: str | None) -> int:
    """Jobs, their state and why, progress, speed, disk use, resources, and what the governor does
    (read from the home when the daemon is down)."""
    from macgpt.client import jobs

    return jobs.status(ctx.obj["home"], job, as_json, states, name)


@main.command()
@click.argument("job", type=click.IntRange(1), required=False)
@click.option("-f", "--follow", is_flag=True, help="keep printing new events until the job ends")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
@click.pass_context
@input_errors
def logs(ctx: click.Context, job: int | None, follow: bool, as_json: bool) -> int:
    """A job's metrics and events (default: the most recent job)."""
    from macgpt.client import jobs

    return jobs.logs(ctx.obj["home"], job, follow, as_json)


def _control_command(name: str, doc: str) -> None:
    @main.command(name=name, help=doc)
    @click.argument("job", type=click.IntRange(1))
    @click.option("--json", "as_json", is_flag=True, help="print the answer as one JSON object")
    @click.pass_context
    @input_errors
    def command(ctx: click.Context, job: int, as_json: bool) -> int:
        from macgpt.client import jobs

        return jobs.control(ctx.obj["home"], name, job, as_json)


_control_command("pause", "Pause JOB at its next step boundary (a queued job is held back).")
_control_command("resume", "Resume a paused JOB, or continue a cancelled or failed one from its last checkpoint.")
_control_command("cancel", "Cancel JOB (a running worker saves a checkpoint first).")
_control_command("checkpoint", "Make a running JOB write a checkpoint now.")


@main.command()
@limit_option("max_cpu", typed=True, say_default=False)
@limit_option("max_memory", typed=True, say_default=False)
@limit_option("on_battery", typed=True, say_default=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@input_errors
def limits(ctx: click.Context, max_cpu: float | None, max_memory: float | None, on_battery: str | None,
           as_json: bool) -> int:
    """Show the limits in force, or change them live."""
    from macgpt.client import jobs

    return jobs.limits(ctx.obj["home"], {"max_cpu": max_cpu, "max_memory": max_memory,
                                         "on_battery": on_battery}, as_json)


# -- issue 14: metrics, plots ------------------------------------------------------------------
@main.command()
@click.argument("job")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row instead of JSON lines")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the default; for a uniform surface)")
@click.pass_context
@input_errors
def metrics(ctx: click.Context, job: str, as_csv: bool, as_json: bool) -> int:
    """Print JOB's metrics file (a job id, or a `macgpt train` run directory): one record per
    logged step, evaluation, pause and governor decision."""
    from macgpt.client import observe

    return observe.metrics(ctx.obj["home"], job, as_csv)


@main.command()
@click.argument("jobs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file to write (default: loss.png in the first job's directory)")
@click.option("--json", "as_json", is_flag=True, help='print {"path": ...} as JSON')
@click.pass_context
@input_errors
def plot(ctx: click.Context, jobs: tuple[str, ...], out: Path | None, as_json: bool) -> int:
    """Plot train and eval loss against step for one or more JOBS (overlaid), with tokens/s and
    CPU below and the governor's throttles and pauses shaded; prints the PNG's path."""
    from macgpt.client import observe

    return observe.plot(ctx.obj["home"], jobs, out, as_json)


@main.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write model.safetensors, tokenizer.json, config.json and README.md here")
@click.option("--tensorboard", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write the metrics as TensorBoard event files here (needs macgpt[tensorboard])")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
@click.pass_context
@input_errors
def export(ctx: click.Context, job: str, out: Path | None, tensorboard: Path | None, as_json: bool) -> int:
    """Export JOB's model (final, else newest checkpoint) for `sample --model DIR` and `evaluate`,
    and/or its metrics for TensorBoard."""
    from macgpt.client import export as exporter

    return exporter.export(ctx.obj["home"], job, out, tensorboard, as_json)


train.help = (train.help or "") + presets_help()
submit.help = (submit.help or "") + presets_help()

for _command in cli_more.COMMANDS:  # ls, rm, prune, wait, completion, extend
    main.add_command(_command)


def run() -> None:
    try:
        main(prog_name="macgpt")
    finally:
        _close_sockets()


def _close_sockets() -> None:
    """Close every socket before the interpreter exits: left to garbage collection, the context
    may be terminated before a socket is closed, and terminating then waits for it forever."""
    zmq = sys.modules.get("zmq")
    if zmq is not None and getattr(zmq.Context, "_instance", None) is not None:
        zmq.Context.instance().destroy(linger=0)
