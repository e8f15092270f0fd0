"""One language per line: the same job rendered in Chinese and in English, no line mixing the two."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from macgpt.client import lines
from macgpt.worker.loop import TrainingLoop

from .helpers import trainer
from .test_loop import ScriptedLink

QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")  # the user's own text: prompts and samples
PATH = re.compile(r"[^\s\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]*/\S*")  # a path, not the words before it
UNITS = re.compile(r"\b(steps/s|tok/s|(\d+h)?(\d+m)?\d+(\.\d+)?(K|KB|MB|GB|B|s|e[-+]\d+)?|[KMG]B/s|[KMG]B|"
                   r"CPU|PyTorch|cpu|x|pid)\b")
CJK = re.compile(r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]")
LATIN = re.compile(r"[A-Za-z]{2,}")


def words(line: str) -> tuple[bool, bool]:
    """(has Chinese, has English) once quoted text, paths, numbers and units are set aside."""
    rest = UNITS.sub(" ", PATH.sub(" ", QUOTED.sub(" ", line)))
    return bool(CJK.search(rest)), bool(LATIN.search(rest))


def job_events(tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A real run's events (the worker loop in-process) plus the daemon's own kinds."""
    tr = trainer(steps=20, log_interval=10, sample_interval=10, eval_interval=10, checkpoint_interval=10)
    link = ScriptedLink(tr, {12: [{"cmd": "pause", "rid": 1, "args": {"reason": "cpu"}}]})
    assert TrainingLoop(tr, tmp_path, link).run() == "completed"
    daemon = [
        ("state", {"state": "queued", "reason": None}), ("state", {"state": "paused", "reason": "user"}),
        ("setup", {"phase": "torch", "seconds": 2.5}),
        ("setup", {"phase": "data", "texts": 200, "chars": 29984, "eval_texts": 30}),
        ("setup", {"phase": "tokenizer", "origin": "trained", "vocab_size": 2000, "path": str(tmp_path / "tokenizer.json")}),
        ("setup", {"phase": "model", "device": "cpu", "params_block": 12768, "params": 78816, "tokens": 18358,
                   "chunks_per_epoch": 286}),
        ("setup", {"phase": "resumed", "step": 10, "path": str(tmp_path / "ckpt-00000010.pt")}),
        ("governor", {"state": "throttled", "message": "throttled to 1 thread(s): budget 52% CPU"}),
        ("governor", {"state": "stopped", "message": "stopped: other programs use 85% CPU, limit 70%"}),
        ("restarting", {"last_error": "killed", "from_step": 10, "in_seconds": 2.0, "crashes": 1}),
        ("gave_up", {"crashes": 8, "last_error": "killed"}),
        ("warning", {"message": "generation test skipped: the prompt is empty"}),
        ("stopped", {"step": 15, "reason": "cancel", "checkpoint": str(tmp_path / "ckpt-00000015.pt")}),
    ]
    return link.events + daemon


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_line_is_in_one_language(tmp_path: Path, lang: str) -> None:
    rendered = [(kind, lines.event_line(kind, data, lang)) for kind, data in job_events(tmp_path)]
    shown = [(kind, line) for kind, line in rendered if line]
    assert {"metrics", "sample", "eval", "checkpoint", "paused", "resumed", "completed", "setup", "governor",
            "state", "warning"} <= {kind for kind, _ in shown}
    for kind, line in shown:
        chinese, english = words(line)
        assert not (chinese and english), f"{lang} {kind}: mixed line {line!r}"
        if kind not in lines.FREE_TEXT:  # a free-form message exists in English only: that line is English
            assert (chinese, english) == ((True, False) if lang == "zh" else (False, True)), f"{lang} {kind}: {line!r}"


def test_the_detector_catches_the_old_mixed_lines() -> None:
    assert words("📏 评估 @200: loss 6.8753 | perplexity 966.9 | 3,097 tokens") == (True, True)
    assert words("🧪 生成测试 @25 - 输入: '你好，' → '你好，和了'") == (True, False)


def test_the_language_comes_from_the_option_then_the_environment_then_the_locale() -> None:
    assert lines.pick("en", {"MACGPT_LANG": "zh"}) == "en"
    assert lines.pick(None, {"MACGPT_LANG": "zh", "LANG": "en_US.UTF-8"}) == "zh"
    assert lines.pick(None, {"LANG": "en_US.UTF-8"}) == "en"
    assert lines.pick(None, {"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}) == "zh"
    assert lines.pick(None, {"LANG": "de_DE.UTF-8"}) == "en"
    assert lines.pick(None, {"LANG": "C.UTF-8"}) == "zh"  # no language named: the guide's own


def test_the_generation_test_prompt_is_the_start_of_a_held_out_text(tmp_path: Path) -> None:
    from macgpt.config.job import build_spec
    from macgpt.data.texts import load_corpus
    from macgpt.worker.setup import BUILTIN_PROMPT, held_out_prompt, prepare

    from .conftest import REAL_CHAT

    held_out = load_corpus([str(REAL_CHAT / "eval.jsonl")]).texts
    assert held_out_prompt(held_out) == "<|im_start|>看过《我是山"
    assert held_out_prompt(["  The cat sat on the mat."]) == "The cat sat"
    assert held_out_prompt([]) == BUILTIN_PROMPT
    train, ev = [str(REAL_CHAT / "train.jsonl")], [str(REAL_CHAT / "eval.jsonl")]
    quiet = lambda *a, **k: None  # noqa: E731
    own = build_spec("tiny", {"steps": 1, "vocab_size": 400}, train, ev)
    assert prepare(own, tmp_path, None, quiet).cfg.sample_prompt == held_out_prompt(held_out)
    chosen = build_spec("tiny", {"steps": 1, "vocab_size": 400, "sample_prompt": "你好"}, train, ev)
    assert prepare(chosen, tmp_path, None, quiet).cfg.sample_prompt == "你好"
    builtin = build_spec("tiny", {"steps": 1, "vocab_size": 400})
    assert prepare(builtin, tmp_path / "b", None, quiet).cfg.sample_prompt == BUILTIN_PROMPT


def _status_fixture() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    job = {"id": 3, "name": "诗歌-实验", "config": "tiny", "state": "queued", "reason": "after job 2", "step": 120,
           "max_steps": 1000, "loss": 3.25, "eval_loss": 3.5, "steps_per_s": 4.2, "threads": 1, "batch_size": 8,
           "micro_batch": 4, "cpu_percent": 35.0, "rss": 300 * 2**20, "disk_bytes": 2**20, "checkpoint_age": 30.0,
           "created": 1.7e9, "governor": "throttled to 1 thread(s)", "governor_state": "throttled",
           "preparing": {"phase": "encode", "done": 3.0, "total": 12.0, "unit": "MB", "rate": 1.5, "eta": 6.0},
           "warning": "generation test skipped: the prompt is empty"}
    failed = {**job, "id": 4, "name": "x", "state": "failed", "reason": "crashed 8 times: killed", "governor": None,
              "preparing": None, "warning": None}
    daemon = {"pid": 7, "uptime": 75.0, "max_concurrent": 1, "limits": {"max_cpu": 70, "max_memory": 60,
              "on_battery": "pause"}, "governor": {"message": "machine CPU 40%", "total_cpu": 40.0, "ours_cpu": 20.0,
                                                   "other_cpu": 18.0, "mem_percent": 45.0}}
    return {"daemon": daemon, "disk_total": 2**30}, [job, failed]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_status_and_the_train_header_are_in_one_language(lang: str, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from macgpt.client import status_view, sysinfo, train_view
    from macgpt.client.render import cells
    from macgpt.config.job import build_spec

    r, jobs = _status_fixture()
    table, *notes = status_view.status_lines(r, jobs, 80, lang)
    shown = [status_view.header_line(r, jobs, 80, lang), *notes, status_view.ls_lines(jobs, 80, lang)]
    assert all(cells(line) <= 80 for line in table.splitlines()), table  # Chinese takes two columns each
    headings, *rows = table.splitlines()
    assert words(headings) == ((True, False) if lang == "zh" else (False, True)), headings
    step = "步骤" if lang == "zh" else "STEP"  # the column after the Chinese name and state lines up
    assert {cells(row[:row.index("120/1000")]) for row in rows} == {cells(headings[:headings.index(step)])}, table
    monkeypatch.setenv("MACGPT_LANG", lang)
    train_view.header(build_spec("tiny", {}), Path("runs/tiny"))
    for s in ({"result": "completed", "wall_seconds": 20.0, "train_seconds": 15.0, "train_loss": 3.1,
               "eval_loss": 3.4, "final_model": "runs/tiny/final_model.pt", "peak_rss": 2**28,
               "estimated_training_bytes": 2**20}, {"result": "stopped", "steps": 40}):
        train_view.footer(s)
    shown += [line for line in capsys.readouterr().out.splitlines() if line.strip("=-")]
    free = ("generation test skipped", "crashed 8 times")  # free-form English messages: whole English lines
    for line in (ln for block in shown for ln in block.splitlines()):
        for name in (jobs[0]["name"], " tiny ", sysinfo.system_info()["platform"]):  # names: the user's, a preset's, the OS's
            line = line.replace(name, " ")
        chinese, english = words(re.sub(r"macgpt .*", " ", line))  # a command is typed as it is
        assert not (chinese and english), f"{lang}: mixed line {line!r}"
        if not any(f in line for f in free) and not line.startswith("🚀"):
            assert (chinese, english) == ((True, False) if lang == "zh" else (False, True)), f"{lang}: {line!r}"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_control_answers_are_in_one_language(lang: str) -> None:
    from macgpt.client.jobs import _control_line

    answers = [("pause", {"state": "paused"}), ("cancel", {"state": "cancelled"}),
               ("checkpoint", {"step": 40, "path": "jobs/3/ckpt-00000040.pt"}),
               ("requeue", {"state": "queued", "from_step": 40}), ("requeue", {"state": "queued", "from_step": None})]
    for cmd, r in answers:
        line = _control_line(cmd, 3, r, lang)
        assert words(line) == ((True, False) if lang == "zh" else (False, True)), line
