"""``macgpt export JOB``: the model as a portable directory (``--out``) and/or the metrics as
TensorBoard event files (``--tensorboard``, with the optional ``tensorboard`` package's own
writer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from macgpt import metricsfile
from macgpt.ckptformat import CheckpointError, checkpoint_files
from macgpt.client import observe
from macgpt.client.exitcodes import Exit
from macgpt.errors import DataError

# TensorBoard tag of each train/eval record field
SCALARS = {"train": {"loss": "loss/train", "avg_loss": "loss/train_avg", "lr": "lr", "tokens_per_s": "speed/tokens_per_s",
                     "steps_per_s": "speed/steps_per_s", "cpu_percent": "resources/cpu_percent", "rss": "resources/rss",
                     "threads": "governor/threads", "micro_batch": "governor/micro_batch"},
           "eval": {"eval_loss": "loss/eval", "perplexity": "loss/eval_perplexity"}}
GOVERNOR_LEVEL = {"full": 0, "throttled": 1, "memory": 1, "stopped": 2, "battery": 2, "hang": 2}


def scalars(records: list[dict[str, Any]]) -> list[tuple[str, float, int, float]]:
    """(tag, value, step, wall time) for every number worth a TensorBoard series; a governor
    decision becomes ``governor/level`` (0 full speed, 1 throttled, 2 stopped) at the last step seen."""
    out: list[tuple[str, float, int, float]] = []
    step = 0
    for r in records:
        kind = r.get("kind")
        step = int(r.get("step", step) or step)
        for field, tag in SCALARS.get(str(kind), {}).items():
            if isinstance(r.get(field), int | float):
                out.append((tag, float(r[field]), step, float(r["t"])))
        if kind == "governor" and r.get("state") in GOVERNOR_LEVEL:
            out.append(("governor/level", float(GOVERNOR_LEVEL[r["state"]]), step, float(r["t"])))
    return out


def write_tensorboard(records: list[dict[str, Any]], out: Path) -> int:
    try:
        from tensorboard.summary import Writer
    except ImportError:
        raise DataError(["--tensorboard needs the optional tensorboard package: pip install 'macgpt[tensorboard]'"]) from None
    out.mkdir(parents=True, exist_ok=True)
    writer = Writer(str(out))
    points = scalars(records)
    for tag, value, step, wall in points:
        writer.add_scalar(tag, value, step, wall_time=wall)
    writer.close()
    return len(points)


def best_checkpoint(job_dir: Path) -> Path:
    final = job_dir / "final_model.pt"
    if final.exists():
        return final
    ckpts = checkpoint_files(job_dir)
    if not ckpts:
        raise DataError([f"{job_dir}: no final model and no checkpoint to export yet"])
    return ckpts[0][1]


def _info(job_dir: Path) -> dict[str, Any]:
    job = None
    if (job_dir / "job.json").exists():
        job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    last: dict[str, Any] = {}
    path = metricsfile.path_in(job_dir)
    if path.exists():
        m = metricsfile.read(path)
        for kind in ("train", "eval"):
            if m.of(kind):
                last.update({k: v for k, v in m.of(kind)[-1].items() if k not in ("t", "kind")})
    return {"job": job, "last": last or None, "name": (job or {}).get("name") or job_dir.name}


def export(home: str | None, ref: str, out: Path | None, tensorboard: Path | None, as_json: bool = False) -> int:
    if out is None and tensorboard is None:
        raise DataError(["say what to export: --out DIR (the model) and/or --tensorboard DIR (the metrics)"])
    job_dir = observe.job_dir(home, ref)
    # a job by `id` (`job` kept beside it for one release, as everywhere), a run directory as `run`
    said: dict[str, Any] = {"id": int(ref), "job": int(ref)} if ref.isdigit() else {"id": None, "run": ref}
    if tensorboard is not None:
        n = write_tensorboard(observe.load(home, ref).records, tensorboard)
        said.update(tensorboard=str(tensorboard), points=n)
        if not as_json:
            click.echo(f"{n} scalar points → {tensorboard} (tensorboard --logdir {tensorboard})")
    if out is not None:
        source = best_checkpoint(job_dir)
        from macgpt.worker.export import export as export_model

        try:
            cfg = export_model(source, out, _info(job_dir))
        except CheckpointError as e:
            click.echo(f"error: {e}", err=True)
            return Exit.USAGE
        said.update(out=str(out), step=cfg["step"], source=str(source))
        if not as_json:
            click.echo(f"model at step {cfg['step']} from {source} → {out} (macgpt sample PROMPT --model {out})")
    if as_json:
        click.echo(json.dumps(said, ensure_ascii=False))
    return Exit.OK
