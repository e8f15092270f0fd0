"""Command-line options shared by ``train`` and ``submit``, and their translation into a JobSpec.

Numbers are taken as text and parsed by the config schema, so every bad value gets the same
message (field, value, allowed range) whichever command it came through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from macgpt.config import BATTERY_POLICIES

if TYPE_CHECKING:
    from macgpt.config.job import JobSpec
    from macgpt.config.limits import Limits


FIELD_OPTIONS = {  # option name -> config field
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "block_size": "block_size",
    "seed": "seed", "threads": "threads", "device": "device", "prompt": "sample_prompt",
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
        click.option("--prompt", metavar="TEXT", help="prompt of the generation tests (default: the start of a "
                                                      "held-out text of your data; 你好， for the built-in data)"),
        click.option("--set", "set_pairs", multiple=True, metavar="KEY=VALUE",
                     help="any model or training field, e.g. --set n_embd=128; repeatable"),
        click.option("--name", default="", help="a name for the job (letters, digits, . _ -)"),
        click.option("--max-cpu", metavar="P", help="total CPU percent to stay under (default 70)"),
        click.option("--max-memory", metavar="P", help="total memory percent to stay under (default 60)"),
        click.option("--on-battery", type=click.Choice(BATTERY_POLICIES), default=None,
                     help="on battery power: pause (default), throttle or run"),
        click.option("--hard-memory", metavar="P", help="memory percent at which the worker is killed "
                     "and restarted smaller (default: max-memory + 15)"),
        click.option("--hang-seconds", metavar="S", help="seconds without progress before a restart (default 60)"),
        click.option("--max-crashes", metavar="N", help="crashes without saved progress before the job fails (default 8)"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def spec_from_options(opts: dict[str, Any], base_limits: Limits | None = None) -> JobSpec:
    """Validated JobSpec from the shared options; ConfigError or DataError on bad input."""
    from macgpt.config.job import build_spec, parse_set
    from macgpt.config.limits import Limits

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
    keys = ("max_cpu", "max_memory", "on_battery", "hard_memory", "hang_seconds", "max_crashes")
    return {k: opts[k] for k in keys if opts.get(k) is not None}


def check_data(spec: JobSpec) -> tuple[int, int]:
    """Read and validate the job's data now, before anything runs; (train texts, eval texts)."""
    from macgpt.data import BUILTIN_TEST, BUILTIN_TRAIN, builtin_path
    from macgpt.data.texts import load_corpus

    train = load_corpus(list(spec.data) or [builtin_path(BUILTIN_TRAIN)])
    evals = list(spec.eval_data) or ([] if spec.data else [builtin_path(BUILTIN_TEST)])
    return len(train.texts), (len(load_corpus(evals).texts) if evals else 0)
