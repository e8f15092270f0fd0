"""Entry point of a worker process: ``python -m macgpt.worker --job-dir DIR --endpoint EP --job N``.

Connects to its supervisor first (so it is seen alive while torch loads), lowers its own
priority before any thread exists, then sets up and runs the training loop. Once training
runs, signals only record a stop request (the loop checkpoints and leaves at the next step
boundary); before that they end the process at once, as there is nothing to save.

Under torchrun (a job with ``nproc``/``nnodes`` above 1) every rank runs this; the local rank 0
speaks for its machine (``distributed.py``), and without ``--endpoint`` (a torchrun line run by
hand) it prints its events as JSON lines instead.

Exit codes: ``protocol.WorkerExit`` (0 completed or stopped on request, 2 the job itself is
invalid, 3 a checkpoint could not be written); anything else is a crash.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from macgpt.protocol import WorkerExit


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # checkpoints, tokenizers and logs are the user's alone
    ap = argparse.ArgumentParser(prog="macgpt-worker")
    ap.add_argument("--job-dir", required=True, type=Path)
    ap.add_argument("--endpoint", default="", help="the supervisor's channel (none: events on stdout)")
    ap.add_argument("--job", default=0, type=int)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--priority", choices=("idle", "normal"), default="idle")
    args = ap.parse_args(argv)

    if args.priority == "idle":
        from macgpt.priority import lower

        lower()
    from macgpt.worker.channel import NullLink, StdoutLink, ZmqLink

    t0 = time.perf_counter()
    speaker = os.environ.get("LOCAL_RANK", "0") == "0"
    link: Any = (ZmqLink(args.endpoint, args.job) if args.endpoint else StdoutLink(args.job)) if speaker else NullLink()
    link.send("hello", pid=os.getpid())
    loop_ref: list[Any] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if loop_ref:
            loop_ref[0].request_stop(signal.Signals(signum).name)
        else:
            # Still preparing: nothing to save (every cache file is written whole or not at
            # all), so leave now rather than after minutes of tokenizer training or encoding.
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _run(args, link, t0, loop_ref)
    finally:
        link.close()


def _run(args: argparse.Namespace, link: Any, t0: float, loop_ref: list[Any]) -> int:
    from macgpt.config.job import JobSpec
    from macgpt.config.schema import ConfigError
    from macgpt.data.texts import DataError

    try:
        spec = JobSpec.load(args.job_dir / "job.json")
    except (OSError, ValueError, KeyError, ConfigError) as e:
        link.send("failed", message=f"{args.job_dir / 'job.json'}: {e}", retry=False)
        return WorkerExit.JOB_INVALID
    from macgpt.worker.progress import watching_imports

    with watching_imports(link.send):  # seconds on a busy machine: reported, so never taken for a hang
        import torch  # noqa: F401  (the slow import, measured)

        from macgpt.worker.batches import DataTooShort
        from macgpt.worker.loop import CheckpointWriteError, TrainingLoop
        from macgpt.worker.setup import ResumeError
    link.send("setup", phase="torch", seconds=round(time.perf_counter() - t0, 3))

    def note(phase: str, **fields: Any) -> None:
        link.send("warning" if phase == "warning" else "setup", phase=phase, **fields)

    def emit(phase: str, **fields: Any) -> None:
        link.send("progress", phase=phase, **fields)

    try:
        trainer = prepare_ranks(spec, args, note, emit)
    except (DataError, DataTooShort, ResumeError, ConfigError, ValueError) as e:
        link.send("failed", message=str(e), retry=False)
        return WorkerExit.JOB_INVALID
    loop = TrainingLoop(trainer, args.job_dir, link)
    loop_ref.append(loop)
    try:
        loop.run()
    except CheckpointWriteError as e:
        link.send("failed", message=str(e), retry=False, cause="disk")
        return WorkerExit.DISK
    except Exception as e:
        link.send("failed", message=f"{type(e).__name__}: {e}", retry=True,
                  traceback=traceback.format_exc()[-4000:])
        raise
    return WorkerExit.OK


def prepare_ranks(spec: Any, args: argparse.Namespace, note: Any, emit: Any) -> Any:
    """The trainer of this process; for a rank, after the whole group has prepared and agreed.

    The speaker of each machine prepares first (tokenizer, token files, the resume), the other
    ranks then find everything cached; only then does DDP join the replicas."""
    from macgpt.worker import distributed
    from macgpt.worker.setup import agree_on_start, prepare

    ranks = distributed.from_env()
    if ranks is None:
        return prepare(spec, args.job_dir, args.cache_dir, note, emit)
    device = distributed.device_for(ranks, spec.train.device)
    distributed.join(ranks, device)
    if not ranks.speaker:
        distributed.barrier(device)
    trainer = prepare(spec, args.job_dir, args.cache_dir, note, emit, device=device)
    if ranks.speaker:
        distributed.barrier(device)
    agree_on_start(trainer, ranks, args.job_dir, note)
    trainer.spread(ranks)
    note("spread", rank=ranks.rank, world=ranks.world, nproc=ranks.local_world, nnodes=ranks.nnodes,
         backend="nccl" if device.type == "cuda" else "gloo", rows=list(trainer.rows))
    return trainer


def run() -> None:
    """Run and leave at once: checkpoints are already fsynced and the link has delivered its
    messages, so the slow interpreter teardown of a process holding torch can be skipped."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
