"""``--print-torchrun``: the command line for every machine of a job spread over several.

Each machine runs the same command with its own ``--node-rank``: ``macgpt train`` (or ``submit``
to that machine's daemon) supervises and governs its ranks there. For ``train`` the bare torchrun
line is printed too, for a machine without macgpt's supervisor: it needs the run directory's
``job.json``, which this writes, and the same data paths on every machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from macgpt.config.job import JobSpec
from macgpt.paths import Layout
from macgpt.supervisor.launch import node_lines, world_size


def print_lines(spec: JobSpec, lay: Layout | None, out: Path | None) -> int:
    """Print the lines (``lay`` is None for ``submit``: no run directory to prepare)."""
    argv = ["macgpt", *sys.argv[1:]]
    t = spec.train
    if lay is not None:
        job_dir = (out or lay.home / "runs" / spec.name).expanduser().resolve()
        job_dir.mkdir(parents=True, exist_ok=True)
        spec.save(job_dir / "job.json")
        lines = node_lines(t, argv, str(job_dir))
        click.echo(f"# {world_size(t)} ranks: {t.nproc} per machine x {t.nnodes} machine(s); "
                   f"{job_dir / 'job.json'} written (copy the directory to each machine for the bare lines)")
    else:
        lines = [line for line in node_lines(t, argv, "DIR") if not line.startswith(("torchrun", "# or,"))]
        click.echo(f"# {world_size(t)} ranks: {t.nproc} per machine x {t.nnodes} machine(s); "
                   "each machine's daemon runs its part (`macgpt train ... --print-torchrun` for bare torchrun lines)")
    for line in lines:
        click.echo(line)
    return 0
