"""The worker loop in-process: events, intervals, checkpoints, and every command between steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from macgpt.worker import checkpoint
from macgpt.worker.loop import TrainingLoop

from .helpers import trainer


class ScriptedLink:
    """Commands delivered when the trainer reaches given steps; events recorded."""

    def __init__(self, tr, script: dict[int, list[dict[str, Any]]]) -> None:
        self.tr, self.script, self.events = tr, script, []
        self.polls_while_paused = 0

    def send(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def poll(self, timeout_ms: int = 0) -> list[dict[str, Any]]:
        if timeout_ms:
            self.polls_while_paused += 1
            if self.polls_while_paused == 3:
                return [{"cmd": "resume", "rid": 99}]
        return self.script.pop(self.tr.step, [])

    def orphaned(self) -> bool:
        return False

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == kind]


def test_a_full_run_emits_metrics_samples_eval_and_a_final_model(tmp_path: Path) -> None:
    tr = trainer(steps=50, log_interval=10, sample_interval=25, eval_interval=20, checkpoint_interval=30)
    link = ScriptedLink(tr, {})
    assert TrainingLoop(tr, tmp_path, link).run() == "completed"
    assert [m["step"] for m in link.kinds("metrics")] == [10, 20, 30, 40, 50]
    assert [s["step"] for s in link.kinds("sample")] == [25, 50]
    assert all(s["text"].startswith("你好，") for s in link.kinds("sample"))
    assert [e["step"] for e in link.kinds("eval")] == [20, 40, 50]
    assert [(c["step"], c["reason"]) for c in link.kinds("checkpoint")] == [(30, "periodic"), (50, "final")]
    done = link.kinds("completed")[0]
    assert done["step"] == 50 and Path(done["final_model"]).exists() and done["eval_loss"] > 0
    m = link.kinds("metrics")[-1]
    assert m["tokens_per_s"] > 0 and m["peak_rss"] > 0 and m["threads"] == 1


def test_commands_between_steps(tmp_path: Path) -> None:
    tr = trainer(steps=40, batch_size=8, sample_interval=0, checkpoint_interval=0, checkpoint_seconds=0)
    script = {
        5: [{"cmd": "set_threads", "rid": 1, "args": {"threads": 2}},
            {"cmd": "set_batch", "rid": 2, "args": {"micro_batch": 3}}],
        10: [{"cmd": "checkpoint", "rid": 3}],
        12: [{"cmd": "sample", "rid": 4, "args": {"prompt": "你好，", "max_new_tokens": 8, "seed": 1}}],
        15: [{"cmd": "pause", "rid": 5, "args": {"reason": "user"}}],
        20: [{"cmd": "bogus", "rid": 6}, {"cmd": "evaluate", "rid": 7}],
        30: [{"cmd": "stop", "rid": 8, "args": {"reason": "test"}}],
    }
    link = ScriptedLink(tr, script)
    assert TrainingLoop(tr, tmp_path, link).run() == "stopped"
    replies = {r["rid"]: r for r in link.kinds("reply")}
    assert replies[1]["result"] == {"threads": 2}
    assert replies[2]["result"] == {"micro_batch": 2, "batch_size": 8}
    assert replies[3]["result"]["step"] == 10 and Path(replies[3]["result"]["path"]).exists()
    assert replies[4]["ok"] and replies[4]["result"]["text"].startswith("你好，")
    assert "".join(c["text"] for c in link.kinds("sample_chunk")) == replies[4]["result"]["completion"]
    assert link.kinds("paused")[0]["step"] == 15 and link.kinds("resumed")[0]["step"] == 15
    assert link.polls_while_paused >= 3
    assert replies[6]["ok"] is False and "unknown worker command" in replies[6]["error"]
    assert replies[7]["result"]["tokens"] > 0
    stopped = link.kinds("stopped")[0]
    assert stopped["step"] == 30 and stopped["reason"] == "test"
    state, _, _ = checkpoint.load_latest(tmp_path)
    assert state["step"] == 30


def test_signal_style_stop_request_checkpoints(tmp_path: Path) -> None:
    tr = trainer(steps=100, checkpoint_interval=0, checkpoint_seconds=0, sample_interval=0)
    link = ScriptedLink(tr, {})
    loop = TrainingLoop(tr, tmp_path, link)
    link.script[7] = []
    original = link.poll

    def poll(timeout_ms: int = 0):
        if tr.step == 7:
            loop.request_stop("SIGINT")
        return original(timeout_ms)

    link.poll = poll
    assert loop.run() == "stopped"
    assert checkpoint.load_latest(tmp_path)[0]["step"] == 7


def test_the_run_keeps_a_metrics_file_of_train_eval_and_pause_records(tmp_path: Path) -> None:
    from macgpt import metricsfile

    tr = trainer(steps=30, log_interval=10, sample_interval=0, eval_interval=20, checkpoint_interval=0)
    link = ScriptedLink(tr, {15: [{"cmd": "pause", "rid": 1, "args": {"reason": "cpu"}}]})
    assert TrainingLoop(tr, tmp_path, link).run() == "completed"
    m = metricsfile.read(metricsfile.path_in(tmp_path))
    assert m.skipped == []
    train = m.of("train")
    assert [r["step"] for r in train] == [10, 20, 30]
    assert [r["loss"] for r in train] == [x["loss"] for x in link.kinds("metrics")]
    assert all(r["tokens_per_s"] > 0 and r["threads"] == 1 and r["batch_size"] == 4 and r["rss"] > 0 for r in train)
    assert all(0 < r["cpu_percent"] <= 100 for r in train)
    assert [(r["step"], r["eval_loss"] > 0) for r in m.of("eval")] == [(20, True), (30, True)]
    assert [(r["state"], r["step"], r["message"]) for r in m.of("state")] == [("paused", 15, "cpu"), ("resumed", 15, None)]
