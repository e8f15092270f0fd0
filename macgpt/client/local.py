"""Commands that work without the daemon: train in the foreground, configs, and using a
checkpoint file directly (sample --model, evaluate). torch is imported only inside the
functions that need it, so the rest of the CLI stays fast."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click

from macgpt import metricsfile
from macgpt.client import render, sysinfo, train_view
from macgpt.client.exitcodes import Exit
from macgpt.client.units import fmt_bytes
from macgpt.config.estimate import estimate
from macgpt.config.job import JobSpec
from macgpt.paths import Layout
from macgpt.protocol import Outcome

RUN_FILES = ("ckpt-*.pt", "ckpt-*.pt.damaged", "final_model.pt", "tokenizer.json", "events.jsonl", "worker.log",
             "metrics.jsonl")


def train(spec: JobSpec, lay: Layout, out: Path | None, fresh: bool, as_json: bool) -> int:
    """One job in the foreground. Its directory and files are the user's alone (0700, 0600), also
    for an ``--out`` outside the private home: the worker sets umask 077 for itself, and so does
    this process, which creates the directory, ``events.jsonl`` and the governor's metrics lines."""
    old_umask = os.umask(0o077)
    try:
        return _train(spec, lay, out, fresh, as_json)
    finally:
        os.umask(old_umask)


# What the end of a `macgpt train` run is called in its summary, and its exit code.
TRAIN_RESULTS: dict[Outcome, tuple[str, int]] = {
    Outcome.COMPLETED: ("completed", Exit.OK),
    Outcome.INTERRUPTED: ("stopped", Exit.INTERRUPTED),  # Ctrl+C: the same command continues it
    Outcome.INVALID: ("invalid", Exit.USAGE),
    Outcome.DISK_FULL: ("disk", Exit.FAILURE),  # a checkpoint could not be written
    Outcome.GAVE_UP: ("failed", Exit.FAILURE),
}


def _train(spec: JobSpec, lay: Layout, out: Path | None, fresh: bool, as_json: bool) -> int:
    from macgpt.supervisor import foreground
    from macgpt.supervisor.lock import AlreadyRunning, DaemonLock

    job_dir = (out or lay.home / "runs" / spec.name).expanduser().resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    run_lock = DaemonLock(job_dir / ".macgpt-train.lock")  # one run per directory, before --fresh deletes
    try:
        run_lock.acquire()
    except AlreadyRunning as e:
        click.echo(f"error: {job_dir}: another `macgpt train` is using this directory ({e}); wait for it, "
                   "or choose another --out", err=True)
        return Exit.FAILURE
    if fresh:
        for pattern in RUN_FILES:
            for p in job_dir.glob(pattern):
                p.unlink()
    t0 = time.monotonic()
    if not as_json:
        train_view.header(spec, job_dir)
    argv_env = os.environ.get("MACGPT_WORKER_ARGV")  # tests run deliberately misbehaving workers
    with open(job_dir / "events.jsonl", "a", encoding="utf-8") as events:
        result = foreground.run(spec, job_dir, lay, _event_printer(events, job_dir, as_json),
                                argv=json.loads(argv_env) if argv_env else None)
    name, code = TRAIN_RESULTS.get(result.outcome, ("failed", Exit.FAILURE))
    summary = _summary(spec, result, name, job_dir, time.monotonic() - t0)
    if as_json:
        print(json.dumps({"event": "summary", **summary}, ensure_ascii=False), flush=True)
    else:
        train_view.footer(summary)
    return code


def _event_printer(events: IO[str], job_dir: Path, as_json: bool) -> Callable[[str, dict[str, Any]], None]:
    """Each event of the run: a JSON line in events.jsonl, governor decisions in the metrics file,
    then a line on the terminal (or the JSON line, with --json)."""

    def on_event(kind: str, data: dict[str, Any]) -> None:
        line = render.json_line(kind, data)
        events.write(line + "\n")
        events.flush()
        if kind == "governor":
            metricsfile.record_governor(job_dir, data)
        if as_json:
            print(line, flush=True)
        else:
            text = render.event_line(kind, data)
            if text:
                click.echo(text)

    return on_event


def _summary(spec: JobSpec, result: Any, name: str, job_dir: Path, wall: float) -> dict[str, Any]:
    live = result.live
    final = live.final or {}
    return {
        "result": name, "job_dir": str(job_dir), "final_model": final.get("final_model"),
        "steps": live.step, "train_loss": final.get("train_loss", live.loss),
        "eval_loss": final.get("eval_loss", live.eval_loss), "perplexity": final.get("perplexity"),
        "wall_seconds": round(wall, 3), "train_seconds": final.get("train_seconds"),
        "peak_rss": final.get("peak_rss", live.peak_rss), "restarts": result.restarts,
        "estimated_training_bytes": estimate(spec.model, spec.train.batch_size).training_bytes,
        "error": result.error or (live.failure or {}).get("message"),
    }


def configs(as_json: bool, max_memory: float) -> int:
    info = sysinfo.system_info()
    rows = sysinfo.preset_report(max_memory)
    usage = sysinfo.current_usage()
    if as_json:
        print(json.dumps({"system": info, "presets": rows, "usage": usage}, ensure_ascii=False, indent=1))
        return Exit.OK
    from rich.console import Console
    from rich.table import Table

    width = render.terminal_width()
    console = Console(width=min(width, 150) if width < 10**6 else 150)  # piped: do not squeeze the table
    console.print("[bold]=== macgpt configuration self-test ===[/bold]")
    console.print(f"system: {info.get('platform')} · Python {info.get('python')} · {info.get('cpu_count')} cores "
                  f"({info.get('physical_cores')} physical) · memory {info.get('memory_gb')} GB, "
                  f"{info.get('available_memory_gb')} GB available", highlight=False)
    narrow = console.width < 120  # an 80-column terminal: the columns that matter, numbers whole
    cols = ("config", "params", "weights", "training est.", "fits") if narrow else (
        "config", "shape", "block params", "total params", "weights", "training est.", "process est.",
        "defaults", f"fits (≤{max_memory:g}% mem)")
    table = Table(show_header=True, header_style="bold")
    for col in cols:
        table.add_column(col, no_wrap=narrow)
    for r in rows:
        fits = "✅ yes" if r["fits"] else "❌ no"
        if narrow:
            table.add_row(r["name"], f"{r['params_total']:,}", fmt_bytes(r["weights_bytes"]),
                          fmt_bytes(r["training_bytes"]), fits)
            continue
        table.add_row(
            r["name"], f"{r['n_layer']}x{r['n_embd']}, {r['n_head']} heads, ctx {r['block_size']}, vocab {r['vocab_size']}",
            f"{r['params_block']:,}", f"{r['params_total']:,}", fmt_bytes(r["weights_bytes"]),
            fmt_bytes(r["training_bytes"]), fmt_bytes(r["process_bytes"]),
            f"{r['steps']} steps, batch {r['batch_size']}, lr {r['lr']:g}", fits,
        )
    console.print(table)
    console.print(f"current use: CPU {usage['cpu_percent']:.1f}%, memory {usage['memory_percent']:.1f}%")
    console.print("✅ configuration OK" if any(r["fits"] for r in rows) else "❌ no preset fits the memory budget")
    return Exit.OK


def check_prompt(prompt: str) -> str:
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise click.UsageError(f"the prompt is not valid UTF-8 (at character {e.start})") from None
    if not prompt.strip():
        raise click.UsageError("the prompt is empty")
    return prompt


def choose_seed(params: dict[str, Any], as_json: bool) -> int:
    """A fresh random seed unless one was given; said on stderr (in --json it is a field) so a text
    can be repeated with --seed."""
    if params.get("seed") is None:
        import secrets

        params["seed"] = secrets.randbelow(2**31)
        if not as_json:
            click.echo(f"(seed {params['seed']}; --seed {params['seed']} repeats this text)", err=True)
    return int(params["seed"])


def sample_model(path: Path, prompt: str, params: dict[str, Any], as_json: bool, job: int | None = None) -> int:
    """Sample from a checkpoint file or exported directory; ``job``: the job it belongs to (named in --json)."""
    from macgpt.ckptformat import CheckpointError
    from macgpt.exportformat import verify_model

    try:
        verify_model(path)  # before torch loads: a wrong file is refused at once
    except CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        return Exit.USAGE
    from macgpt.worker import offline
    from macgpt.worker.sampling import SampleParams

    streaming = not as_json

    def on_text(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        if streaming:
            sys.stdout.write(prompt)
        result, loaded = offline.sample(path, prompt, SampleParams(**params), on_text if streaming else None)
    except CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        return Exit.USAGE
    if result.truncated_prompt:
        click.echo(f"\nnote: the prompt was longer than the context; only its last {result.prompt_tokens} tokens were used",
                   err=True)
    if as_json:
        print(json.dumps({**({"id": job, "job": job} if job is not None else {}),
                          "text": result.text, "completion": result.completion, "tokens": result.tokens,
                          "stopped": result.stopped, "truncated_prompt": result.truncated_prompt,
                          "model": str(loaded.path), "step": loaded.step, "source": "checkpoint",
                          "seed": params.get("seed")},
                         ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return Exit.OK


def evaluate(path: Path, data: list[str], as_json: bool, every: bool = False) -> int:
    from macgpt.ckptformat import CheckpointError
    from macgpt.config.schema import TrainConfig
    from macgpt.data import BUILTIN_TEST, builtin_path
    from macgpt.data.sources import validate
    from macgpt.errors import DataError
    from macgpt.exportformat import verify_model

    files = list(data) or [str(builtin_path(BUILTIN_TEST))]
    try:
        verify_model(path)  # before torch loads: a wrong file or bad data is refused at once
        manifest = validate(files)
        from macgpt.worker import offline

        r = offline.evaluate(path, manifest, 0 if every else TrainConfig().eval_tokens)
    except CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        return Exit.USAGE
    except DataError as e:
        click.echo(f"error: {e}", err=True)
        return Exit.USAGE
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
    else:
        click.echo(f"model {r['model']} (step {r['step']}) on {r['texts']} texts:")
        click.echo(f"  loss {r['loss']:.4f} | perplexity {r['perplexity']:.2f} | {r['tokens']:,} tokens "
                   f"| {r['loss'] * r['tokens'] / max(1, r['chars']):.4f} nats per character")
    return Exit.OK

