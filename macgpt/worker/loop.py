"""The worker's training loop: steps, metrics, generation tests, evaluation, checkpoints, commands.

Reads top to bottom like nanoGPT's loop, with the supervisor's commands served between steps.
It talks to the outside only through a ``Link`` (events out, commands in), so tests can run it
in-process and the worker process runs it over ZeroMQ.

Spread over ranks, every rank runs this loop in step: before each step they agree (one small
all-reduce) on stopping, pausing and checkpointing and on the knobs; only each machine's speaker
writes checkpoints and metrics, tests generation and evaluates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from macgpt.protocol import SAMPLE_DEFAULTS
from macgpt.worker import checkpoint, distributed
from macgpt.worker.metrics import MetricsRecorder
from macgpt.worker.progress import Reporter
from macgpt.worker.sampling import PromptError, SampleParams
from macgpt.worker.trainer import Trainer, peak_rss_bytes

HEARTBEAT_SECONDS = 0.5
GENERATION_TEST = {k: v for k, v in SAMPLE_DEFAULTS.items() if k != "max_new_tokens"}  # as `macgpt sample`


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (a full disk, a read-only or missing directory): the
    worker stops rather than train on without a way to keep its progress."""


class Link(Protocol):
    def send(self, kind: str, **fields: Any) -> None: ...
    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]: ...
    def orphaned(self) -> bool: ...


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


class TrainingLoop:
    def __init__(self, trainer: Trainer, job_dir: Path, link: Link, clock: Any = time.monotonic) -> None:
        self.t = trainer
        self.job_dir = Path(job_dir)
        self.link = link
        self.clock = clock
        self.stop_reason: str | None = None
        self.paused = False
        self.last_checkpoint: dict[str, Any] | None = None
        self._train_seconds = 0.0
        self._window = (trainer.step, 0.0)  # (step, train seconds) at the last metrics line
        self.recorder = MetricsRecorder(self.job_dir, lambda message: link.send("warning", message=message))
        ranks = trainer.ranks
        self.speaker = ranks is None or ranks.speaker
        self.control = distributed.Control(ranks, trainer.device) if ranks is not None else None
        self._checkpoint_due = False  # a time-based checkpoint the ranks write together before the next step
        if not self.speaker:
            self.recorder.enabled = False

    def request_stop(self, reason: str) -> None:
        """Checkpoint and leave at the next step boundary (safe from a signal handler)."""
        self.stop_reason = self.stop_reason or reason

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> str:
        t, cfg = self.t, self.t.cfg
        self.link.send("started", step=t.step, max_steps=cfg.steps, threads=t.threads,
                       batch_size=cfg.batch_size, micro_batch=t.micro_batch)
        now = self.clock()
        last_ckpt, last_beat = now, now
        while t.step < cfg.steps:
            self._serve(self.link.poll(0))
            self._agree()
            if self.paused and not self.stop_reason:
                self._wait_while_paused()
            if self.stop_reason:
                return self._stop()
            if self._checkpoint_due:
                self._checkpoint_due = False
                self._checkpoint("periodic")
            start = time.perf_counter()
            loss = t.train_step()
            self._train_seconds += time.perf_counter() - start
            step = t.step
            if step % cfg.log_interval == 0 or step == cfg.steps:
                self._metrics(loss)
            if cfg.sample_interval and step % cfg.sample_interval == 0:
                self._generation_test()
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step < cfg.steps:
                self._evaluate()
            now = self.clock()
            if step < cfg.steps and cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
                self._checkpoint("periodic")
                last_ckpt = now
            elif step < cfg.steps and cfg.checkpoint_seconds and now - last_ckpt >= cfg.checkpoint_seconds:
                last_ckpt = now
                if self.control is None:
                    self._checkpoint("periodic")
                else:  # each machine's clock differs: raised at the next agreement, written by all at once
                    self._checkpoint_due = True
            if now - last_beat >= HEARTBEAT_SECONDS:
                last_beat = now
                self._heartbeat()
        return self._finish()

    def _agree(self) -> None:
        """Spread over ranks: take on what any rank asked (stop, pause, checkpoint) and the knobs this
        machine's speaker set. Alone: nothing to agree."""
        if self.control is None:
            return
        t = self.t
        a = self.control.exchange(stop=self.stop_reason is not None, pause=self.paused,
                                  checkpoint=self._checkpoint_due, threads=t.threads, micro_batch=t.micro_batch)
        if a.stop and self.stop_reason is None:
            self.stop_reason = "stop"  # asked by another rank
        self.paused = a.pause
        self._checkpoint_due = a.checkpoint
        if not self.speaker:
            if a.threads and a.threads != t.threads:
                t.set_threads(a.threads)
            if a.micro_batch and a.micro_batch != t.micro_batch:
                t.set_micro_batch(a.micro_batch)

    def _finish(self) -> str:
        t = self.t
        if not self.speaker:
            return "completed"
        ev = t.evaluate(progress=self._progress("final_eval", "batches")) if t.eval_stream is not None else None
        if ev:
            self._send_eval(ev)
        self._checkpoint("final")
        try:
            final = checkpoint.save_final(self.job_dir, {**t.state_dict(), "kind": "final"})
        except OSError as e:
            raise CheckpointWriteError(f"the final model could not be written to {self.job_dir}: {e.strerror or e}; "
                                       "the last checkpoint is intact. Free some disk space, then resume the job.") from e
        self.link.send(
            "completed", step=t.step, final_model=str(final), train_loss=t.recent_loss,
            avg_loss=t.avg_loss, eval_loss=ev["loss"] if ev else None,
            perplexity=ev["perplexity"] if ev else None, train_seconds=self._train_seconds,
            peak_rss=peak_rss_bytes(),
        )
        return "completed"

    def _stop(self) -> str:
        info = self._checkpoint(self.stop_reason or "stop")
        self.link.send("stopped", step=self.t.step, reason=self.stop_reason, checkpoint=info["path"])
        return "stopped"

    # -- periodic work ----------------------------------------------------------------------
    def _progress(self, phase: str, unit: str) -> Reporter:
        """Progress of work between steps (evaluation, sampling): never taken for a hang."""
        return Reporter(self.link.send, phase, unit=unit)

    def _metrics(self, loss: float) -> None:
        t = self.t
        if not self.speaker:
            return
        steps = t.step - self._window[0]
        seconds = self._train_seconds - self._window[1]
        self._window = (t.step, self._train_seconds)
        steps_per_s = steps / seconds if seconds > 0 else 0.0
        fields = dict(
            step=t.step, max_steps=t.cfg.steps, epoch=t.epoch, loss=loss,
            avg_loss=t.avg_loss, lr=t.optimizer.param_groups[0]["lr"], steps_per_s=steps_per_s,
            tokens_per_s=steps_per_s * t.cfg.batch_size * t.model_cfg.block_size,
            threads=t.threads, batch_size=t.cfg.batch_size, micro_batch=t.micro_batch,
            rss=current_rss_bytes(), peak_rss=peak_rss_bytes(),
        )
        self.recorder.train(fields)
        self.link.send("metrics", **fields)

    def _send_eval(self, ev: dict[str, Any]) -> None:
        self.recorder.eval({"step": self.t.step, **ev})
        self.link.send("eval", step=self.t.step, **ev)

    def _heartbeat(self) -> None:
        self.link.send("heartbeat", step=self.t.step, paused=self.paused)
        if self.link.orphaned():
            self.request_stop("supervisor gone")

    def _generation_test(self) -> None:
        t = self.t
        if not self.speaker:
            return
        params = SampleParams(max_new_tokens=t.cfg.sample_tokens, seed=t.cfg.seed + t.step, **GENERATION_TEST)
        try:
            chars = self._progress("sample", "chars")
            result = t.sample(t.cfg.sample_prompt, params, on_text=lambda piece: chars.advance(len(piece)))
            chars.finish()
        except PromptError as e:
            self.link.send("warning", message=f"generation test skipped: {e}")
            return
        self.link.send("sample", step=t.step, prompt=t.cfg.sample_prompt, text=result.text)

    def _evaluate(self) -> None:
        if not self.speaker:
            return
        ev = self.t.evaluate(progress=self._progress("eval", "batches"))
        if ev:
            self._send_eval(ev)

    def _checkpoint(self, reason: str) -> dict[str, Any]:
        if not self.speaker:  # the replicas are equal: one file per machine
            return {"step": self.t.step, "path": "", "reason": reason}
        start = time.perf_counter()
        try:
            path = checkpoint.save(self.job_dir, self.t.state_dict())
        except OSError as e:
            kept = checkpoint.checkpoint_files(self.job_dir)
            previous = f"the previous checkpoint {kept[0][1]} is intact" if kept else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"the checkpoint at step {self.t.step} could not be written to {self.job_dir}: {e.strerror or e}; "
                f"{previous}. Free some disk space, then resume the job."
            ) from e
        info = {"step": self.t.step, "path": str(path), "reason": reason,
                "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - start, 4)}
        self.last_checkpoint = info
        self.link.send("checkpoint", **info)
        return info

    # -- commands ---------------------------------------------------------------------------
    def _wait_while_paused(self) -> None:
        last_beat = self.clock()
        while self.paused and not self.stop_reason:
            self._serve(self.link.poll(100))
            self._agree()  # spread: the others wait here with the speaker, one agreement per poll
            if self.clock() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = self.clock()
                self._heartbeat()

    def _serve(self, commands: list[dict[str, Any]]) -> None:
        for msg in commands:
            rid = msg.get("rid")
            try:
                result = self._command(msg.get("cmd", ""), msg.get("args") or {}, rid)
            except (ValueError, PromptError, TypeError, KeyError) as e:  # a bad command, never a dead worker
                self.link.send("reply", rid=rid, ok=False, error=str(e))
            else:
                self.link.send("reply", rid=rid, ok=True, result=result)

    def _command(self, cmd: str, args: dict[str, Any], rid: Any) -> dict[str, Any]:
        t = self.t
        if cmd == "set_threads":
            return {"threads": t.set_threads(int(args["threads"]))}
        if cmd == "set_batch":
            return {"micro_batch": t.set_micro_batch(int(args["micro_batch"])), "batch_size": t.cfg.batch_size}
        if cmd == "pause":
            self.paused = True
            self.recorder.state("paused", t.step, str(args.get("reason", "user")))
            self.link.send("paused", step=t.step, reason=args.get("reason", "user"))
            return {"step": t.step}
        if cmd == "resume":
            self.paused = False
            self.recorder.state("resumed", t.step, None)
            self.link.send("resumed", step=t.step)
            return {"step": t.step}
        if cmd == "checkpoint":
            return self._checkpoint("request")
        if cmd == "stop":
            self.request_stop(str(args.get("reason", "request")))
            return {"step": t.step}
        if cmd == "evaluate":
            return t.evaluate(progress=self._progress("eval", "batches")) or {}
        if cmd == "sample":
            params = SampleParams(**{k: v for k, v in args.items() if k != "prompt"})
            try:
                result = t.sample(
                    str(args["prompt"]), params,
                    on_text=lambda piece: self.link.send("sample_chunk", rid=rid, text=piece),
                )
            except (PromptError, ValueError):
                raise
            except Exception as e:  # a sampling failure is the request's error, never the job's
                raise ValueError(f"sampling failed: {type(e).__name__}: {str(e)[:300]}") from None
            return {"text": result.text, "completion": result.completion, "tokens": result.tokens,
                    "truncated_prompt": result.truncated_prompt, "stopped": result.stopped,
                    "step": t.step, "source": "live"}
        raise ValueError(f"unknown worker command {cmd!r}")
