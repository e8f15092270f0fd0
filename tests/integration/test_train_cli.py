"""`macgpt train` as a user runs it: real processes, real signals, real files."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import torch

from macgpt.worker.checkpoint import load_file

from ..conftest import MACGPT, REAL_CHAT

SMALL_RUN = ["--set", "vocab_size=500", "--batch-size", "8", "--threads", "1"]


def run_json(args: list[str], timeout: float = 120) -> tuple[int, list[dict], str]:
    r = subprocess.run([MACGPT, *args, "--json"], capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.returncode, events, r.stderr


def test_train_sample_evaluate(home: Path) -> None:
    code, events, err = run_json(["train", "tiny", "--steps", "30", *SMALL_RUN])
    assert code == 0, err
    summary = events[-1]
    assert summary["event"] == "summary" and summary["result"] == "completed"
    assert summary["steps"] == 30 and summary["train_loss"] < 6.5 and summary["eval_loss"] > 0
    assert Path(summary["final_model"]).exists() and summary["peak_rss"] > 100e6
    kinds = [e["event"] for e in events]
    for kind in ("spawned", "setup", "started", "metrics", "sample", "eval", "checkpoint", "completed"):
        assert kind in kinds
    r = subprocess.run([MACGPT, "sample", "你好，", "--model", summary["final_model"], "--json", "--seed", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["text"].startswith("你好，")
    r2 = subprocess.run([MACGPT, "sample", "你好，", "--model", summary["final_model"], "--json", "--seed", "3"],
                        capture_output=True, text=True)
    assert json.loads(r2.stdout)["text"] == json.loads(r.stdout)["text"]
    r = subprocess.run([MACGPT, "evaluate", "--model", summary["final_model"], "--json"], capture_output=True, text=True)
    ev = json.loads(r.stdout)
    assert r.returncode == 0 and {"loss", "perplexity", "tokens"} <= set(ev)
    assert abs(ev["loss"] - summary["eval_loss"]) < 1e-4


def test_real_corpus_and_tokenizer_reuse(home: Path, tmp_path: Path) -> None:
    data = ["--data", str(REAL_CHAT / "train.jsonl"), "--eval-data", str(REAL_CHAT / "eval.jsonl")]
    code, events, err = run_json(["train", "tiny", "--steps", "20", "--out", str(tmp_path / "a"), *data, *SMALL_RUN])
    assert code == 0, err
    origins = [e["origin"] for e in events if e["event"] == "setup" and e.get("phase") == "tokenizer"]
    assert origins == ["trained"]
    ev = events[-1]["eval_loss"]
    assert ev is not None and 0 < ev < 9.0  # measured on the held-out file (a 20-step model: a real, finite loss)
    code, events, err = run_json(["train", "tiny", "--steps", "2", "--out", str(tmp_path / "b"), *data, *SMALL_RUN])
    assert code == 0, err
    assert [e["origin"] for e in events if e.get("phase") == "tokenizer"] == ["cache"]
    train_only = ["--data", str(REAL_CHAT / "train.jsonl")]  # no eval data: ~2% held out by hash
    code, events, err = run_json(["train", "tiny", "--steps", "2", "--out", str(tmp_path / "c"), *train_only, *SMALL_RUN])
    assert code == 0, err
    data_note = next(e for e in events if e.get("phase") == "data")
    assert data_note["holdout"] is True and events[-1]["eval_loss"] is not None


def test_bad_input_is_refused_before_anything_runs(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"text": 3}\n', encoding="utf-8")
    cases = [
        (["train", "tiny", "--data", str(bad)], f"{bad}:2:1: field \"text\" must be a string, got int"),
        (["train", "tiny", "--data", str(tmp_path / "none.jsonl")], "none.jsonl: file not found"),
        (["train", "tinny"], "unknown config 'tinny' (did you mean 'tiny'?)"),
        (["train", "tiny", "--steps", "0"], "steps='0' is out of range"),
        (["train", "tiny", "--lr", "-1"], "lr='-1' is out of range"),
        (["train", "tiny", "--set", "vocab_size=100"], "vocab_size='100' is out of range: expected int >= 260"),
        (["train", "tiny", "--max-cpu", "150"], "max-cpu='150' is out of range"),
        (["train", "tiny", "--name", "../etc"], "no path separators"),
    ]
    for args, message in cases:
        r = subprocess.run([MACGPT, *args], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (home / "runs").exists()


def test_ctrl_c_checkpoints_and_the_same_command_resumes(home: Path, tmp_path: Path) -> None:
    args = [MACGPT, "train", "tiny", "--steps", "400", "--json", *SMALL_RUN, "--set", "checkpoint_interval=0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if json.loads(line).get("event") == "metrics":
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stopped = [json.loads(x) for x in out.splitlines() if '"stopped"' in x]
    assert stopped and stopped[0]["reason"] == "interrupted" and stopped[0]["checkpoint"]
    step = stopped[0]["step"]
    code, events, err = run_json(["train", "tiny", "--steps", "400", *SMALL_RUN])
    assert code == 0, err
    resumed = [e for e in events if e.get("phase") == "resumed"]
    assert resumed and resumed[0]["step"] == step
    assert next(e for e in events if e["event"] == "started")["step"] == step


class Killer:
    """Follows a `macgpt train --json` run and SIGKILLs its worker at random moments: some while a
    checkpoint is being written (a temp file exists), some anywhere in training."""

    def __init__(self, proc: subprocess.Popen, job_dir: Path, kills: int, rng: random.Random) -> None:
        self.proc, self.job_dir, self.left, self.rng = proc, job_dir, kills, rng
        self.pid: int | None = None
        self.killed: list[str] = []
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            if ev["event"] == "spawned":
                self.pid = ev["pid"]
            elif ev["event"] == "started" and self.left > 0:
                self.left -= 1
                threading.Thread(target=self._kill, args=(self.pid, len(self.killed) % 2 == 0), daemon=True).start()

    def _kill(self, pid: int, during_write: bool) -> None:
        deadline = time.monotonic() + self.rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:
            if during_write and any(self.job_dir.glob(".ckpt-*.tmp-*")):
                break
            time.sleep(0.0005)
        how = "mid-write" if during_write and any(self.job_dir.glob(".ckpt-*.tmp-*")) else "random"
        try:
            import os

            os.kill(pid, signal.SIGKILL)
            self.killed.append(how)
        except ProcessLookupError:
            pass


def test_sigkill_at_random_moments_resumes_to_bitwise_identical_weights(home: Path, tmp_path: Path, soak: int) -> None:
    steps = 160 * soak
    common = ["train", "tiny", "--steps", str(steps), "--seed", "5", *SMALL_RUN, "--json",
              "--set", "checkpoint_interval=7", "--set", "checkpoint_seconds=0", "--set", "sample_interval=50",
              "--set", "dropout=0.1"]
    clean = subprocess.run([MACGPT, *common, "--out", str(tmp_path / "clean")], capture_output=True, text=True,
                           timeout=300 * soak)
    assert clean.returncode == 0, clean.stderr
    job = tmp_path / "killed"
    proc = subprocess.Popen([MACGPT, *common, "--out", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killer = Killer(proc, job, kills=6 * soak, rng=random.Random(1234))
    proc.wait(timeout=400 * soak)
    killer.thread.join(5)
    restarts = [(e["crashes"], e["from_step"]) for e in killer.events if e["event"] == "restarting"]
    assert proc.returncode == 0, (proc.stderr.read(), restarts, killer.killed)
    assert len(killer.killed) >= 6 * soak and "mid-write" in killer.killed, killer.killed
    assert sum(e["event"] == "restarting" for e in killer.events) >= 6 * soak
    assert not list(job.glob(".*tmp*"))  # half-written files of killed writes are cleaned up
    a = load_file(tmp_path / "clean" / "final_model.pt")
    b = load_file(job / "final_model.pt")
    assert a["step"] == b["step"] == steps
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for key in sa:
            assert torch.equal(sa[key], sb[key])


def test_configs_self_test(home: Path) -> None:
    r = subprocess.run([MACGPT, "configs", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["system"]["cpu_count"] >= 1 and 0 < report["system"]["available_memory_gb"] <= report["system"]["memory_gb"]
    targets = {"tiny": 13_500, "small": 66_000, "original": 2_500_000}
    by_name = {p["name"]: p for p in report["presets"]}
    assert set(by_name) == set(targets)
    for name, target in targets.items():
        p = by_name[name]
        assert abs(p["params_block"] - target) <= 0.15 * target and p["params_total"] > p["params_block"]
        assert p["weights_bytes"] < p["training_bytes"] < p["process_bytes"] and p["fits"] is True
    tight = json.loads(subprocess.run([MACGPT, "configs", "--json", "--max-memory", "1"], capture_output=True,
                                      text=True, timeout=60).stdout)
    assert not any(p["fits"] for p in tight["presets"]) or tight["system"]["memory_gb"] > 40  # 1% of a laptop is too little
    human = subprocess.run([MACGPT, "configs"], capture_output=True, text=True, timeout=60)
    tiny_total = f"{by_name['tiny']['params_total']:,}"  # the narrow table (piped: 80 columns) keeps the total
    assert human.returncode == 0 and tiny_total in human.stdout and "current use: CPU" in human.stdout
