"""Command-line options shared by ``train`` and ``submit``, and their translation into a JobSpec.

Numbers are taken as text and parsed by the config schema, so every bad value gets the same
message (field, value, allowed range) whichever command it came through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from macgpt.config.limits import BOUNDS, Limits, default_text

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec


FIELD_OPTIONS = {  # option name -> config field
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "block_size": "block_size",
    "seed": "seed", "threads": "threads", "device": "device", "init_from": "init_from",
    "prompt": "sample_prompt", "nproc": "nproc", "nnodes": "nnodes", "node_rank": "node_rank", "rdzv": "rdzv",
}


def job_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.argument("config"),
        click.option("--data", multiple=True, metavar="FILE",
                     help="training text: .jsonl ({\"text\": ...} per line) or .txt; repeatable "
                          "(default: the built-in 200 texts)"),
        click.option("--eval-data", multiple=True, metavar="FILE",
                     help="held-out text for evaluation (default: the built-in 30 test texts)"),
        click.option("--steps", metavar="N", help="optimizer steps"),
        click.option("--batch-size", metavar="N", help="sequences per step"),
        click.option("--lr", metavar="X", help="peak learning rate"),
        click.option("--block-size", metavar="N", help="context length in tokens"),
        click.option("--seed", metavar="N", help="random seed"),
        click.option("--threads", metavar="N", help="pin the CPU thread count (0: all cores)"),
        click.option("--device", metavar="NAME", help="auto, cpu, mps or cuda"),
        click.option("--init-from", metavar="JOB|FILE", help="start from a job's (or checkpoint file's) weights, "
                     "shape and tokenizer, e.g. to fine-tune on new data; optimizer and schedule start fresh"),
        click.option("--prompt", metavar="TEXT", help="prompt of the generation tests (default: the start of a "
                                                      "held-out text of your data; 你好， for the built-in data)"),
        click.option("--nproc", metavar="N", help="ranks (processes) on this machine, torch.distributed (DDP): "
                     "the batch is split across them (default 1)"),
        click.option("--nnodes", metavar="M", help="machines the job runs on, each with --nproc ranks (default 1)"),
        click.option("--node-rank", metavar="R", help="this machine's place among --nnodes (0: writes the model)"),
        click.option("--rdzv", metavar="HOST:PORT", help="where the machines meet: node 0's address and a free port"),
        click.option("--print-torchrun", is_flag=True, help="print the command line for every machine and exit"),
        click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
                     help="any model or training field, e.g. --set n_embd=128; repeatable"),
        click.option("--name", default="", help="a name for the job (letters, digits, . _ -)"),
        *(limit_option(key) for key in LIMIT_KEYS),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


LIMIT_KEYS = ("max_cpu", "max_memory", "on_battery", "hard_memory", "hang_seconds", "max_crashes")
_METAVARS = {"max_cpu": "P", "max_memory": "P", "hard_memory": "P", "hang_seconds": "S", "max_crashes": "N"}


def limit_option(key: str, typed: bool = False, say_default: bool = True) -> Callable[..., Any]:
    """The option of one limit, made from its bound in ``config/limits.py``: as text that the schema
    parses (``train``, ``submit``: the same message as for any other field), or typed by click
    (``macgptd``, ``macgpt limits``). ``say_default``: the help names the default."""
    bound = BOUNDS[key]
    name = "--" + key.replace("_", "-")
    text = bound.help + (f" (default {default_text(key)})" if say_default else "")
    if bound.choices:
        return click.option(name, type=click.Choice(bound.choices), default=None, help=text)
    if not typed:
        return click.option(name, metavar=_METAVARS[key], help=text)
    kind = click.IntRange if bound.kind is int else click.FloatRange
    return click.option(name, type=kind(bound.lo, bound.hi), default=None, help=text)


def spec_from_options(opts: dict[str, Any], base_limits: Limits | None = None) -> JobSpec:
    """Validated JobSpec from the shared options; ConfigError or DataError on bad input."""
    from macgpt.config.job import build_spec, parse_set

    overrides: dict[str, Any] = dict(parse_set(opts.get("set_pairs") or ()))
    for opt, fld in FIELD_OPTIONS.items():
        if opts.get(opt) is not None:
            overrides[fld] = opts[opt]
    own = explicit_limits(opts)
    limits = (base_limits or Limits()).updated(own)
    spec = build_spec(opts["config"], overrides, opts.get("data") or (), opts.get("eval_data") or (),
                      opts.get("name") or "", limits, own)
    return spec


def explicit_limits(opts: dict[str, Any]) -> dict[str, Any]:
    """The limits given on the command line (the rest come from the daemon or the defaults)."""
    return {k: opts[k] for k in LIMIT_KEYS if opts.get(k) is not None}


def check_data(spec: JobSpec) -> JobSpec:
    """Validate the job's data now, here, as the user, before anything runs (streamed: constant
    memory, a progress line for big inputs); the spec returned carries the validated file list."""
    import dataclasses

    from macgpt.data import job_files
    from macgpt.data.sources import validate

    progress = _progress_line()
    files, evals = job_files(spec.data, spec.eval_data)
    train = validate(files, progress)
    ev = validate(evals, progress) if evals else None
    if getattr(progress, "shown", False):
        click.echo("", err=True)  # end the progress line
    return dataclasses.replace(spec, manifest={"train": train.to_dict(), "eval": ev.to_dict() if ev else None})


def _progress_line() -> Callable[[int, int], None] | None:
    """A one-line "validating" report on a terminal for inputs over 64 MB."""
    import sys
    import time

    if not sys.stderr.isatty():
        return None
    t0 = time.monotonic()

    def show(done: int, total: int) -> None:
        if total >= 64 << 20:
            rate = done / max(1e-9, time.monotonic() - t0) / 1e6
            click.echo(f"\rvalidating data: {done / 1e6:,.0f} / {total / 1e6:,.0f} MB ({rate:.0f} MB/s)",
                       nl=False, err=True)
            show.shown = True  # type: ignore[attr-defined]

    return show


class SampleArg(click.ParamType):
    """A ``sample`` option checked by the control protocol's own rule for it (finite, in range,
    a temperature 0 or at least 0.01), so the CLI and the daemon refuse the same values."""

    def __init__(self, name: str, kind: type) -> None:
        self.name = name
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from macgpt import protocol

        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid {self.kind.__name__}", param, ctx)
        try:
            return protocol.COMMANDS["sample"][self.name].check("sample", self.name, number)
        except protocol.ProtocolError as e:
            self.fail(e.message.removeprefix("sample: "), param, ctx)


def check_device(spec: JobSpec) -> None:
    """Refuse an explicit ``--device`` this machine cannot use now, instead of a worker failing later.
    torch is imported only for an explicit accelerator, so the usual submit stays fast."""
    device = spec.train.device
    if device not in ("cuda", "mps"):
        return
    from macgpt.errors import ConfigError

    try:
        import torch
    except ImportError:  # the client is installed without torch: the worker will say
        return
    ok = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if not ok:
        raise ConfigError(f"--device {device}: no {device.upper()} device is available on this machine "
                          f"(PyTorch {torch.__version__}); use --device auto or --device cpu")


def presets_help() -> str:
    """The presets and their defaults, for the --help of train and submit."""
    from macgpt.config.presets import PRESETS

    lines = ["\n\n\b\nCONFIG is one of:"]
    for p in PRESETS.values():
        m, t = p.model, p.train
        lines.append(f"  {p.name:<9} {m.n_layer} layer(s) x {m.n_embd}, context {m.block_size}; "
                     f"{t.steps} steps, batch {t.batch_size}, lr {t.lr:g}")
    return "\n".join(lines)


def resolve_init_from(opts: dict[str, Any], home: str | None) -> None:
    """``--init-from 3`` or ``--init-from FILE`` -> the absolute path of a checkpoint that verifies,
    in place; ConfigError naming the value otherwise."""
    value = opts.get("init_from")
    if not value:
        return
    from pathlib import Path

    from macgpt.ckptformat import CheckpointError, verify_file
    from macgpt.errors import ConfigError

    if value.isdigit():
        from macgpt.client.connection import RemoteError
        from macgpt.client.jobs import status_answer
        from macgpt.jobfiles import best_checkpoint
        from macgpt.paths import layout

        try:
            job = status_answer(home, int(value))["jobs"][0]
        except RemoteError as e:
            raise ConfigError(f"--init-from {value}: {e.message}") from None
        path = best_checkpoint(layout(home).job_dir(job["id"]), job["state"])
        if path is None:
            raise ConfigError(f"--init-from {value}: job {value} ({job['state']}) has no checkpoint yet")
    else:
        path = Path(value).expanduser().resolve()
    try:
        verify_file(path)
    except CheckpointError as e:
        raise ConfigError(f"--init-from {value}: {str(e).removeprefix(f'{path}: ')}") from None
    opts["init_from"] = str(path)
