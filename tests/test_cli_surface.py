"""The command line's one surface, in-process through click's runner: `--home` anywhere, one error
style, `--json` on every command, presets in --help, the device check, offline reading of a real
home (a real SQLite job store, no daemon), and tables that fit 80 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from macgpt.client import status_view
from macgpt.client.cli import main
from macgpt.client.house import parse_age, prune_candidates, wait_exit_code
from macgpt.paths import layout
from macgpt.supervisor.store import JobStore


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args), prog_name="macgpt", catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def stored(home: Path) -> Path:
    """A home whose queue holds a cancelled job with history but no checkpoint, and a completed one."""
    lay = layout(home)
    store = JobStore(lay.db)
    spec = {"config": "tiny", "limits": {"max_cpu": 70.0}}
    first = store.create("early", "tiny", spec, 200)
    store.transition(first, "cancelled", "user")
    store.append_events([(first, 1, 1.0, "state", {"state": "queued", "reason": None}),
                         (first, 2, 2.0, "state", {"state": "cancelled", "reason": "user"})])
    second = store.create("later", "small", spec, 1200)
    lay.job_dir(second).mkdir(parents=True)
    (lay.job_dir(second) / "events.jsonl").write_bytes(b"x" * 5000)
    store.close()
    return home


def test_home_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    code, out, err = invoke("status", "--home", str(tmp_path / "elsewhere"))
    assert code == 0, err
    assert "no jobs yet" in out and str(tmp_path / "elsewhere") in err  # the offline note names the home


def test_offline_reading_never_creates_a_missing_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading with the daemon down must never write the home; a missing one used to be created
    (with its runtime directory) by `layout()` and shown as an empty queue."""
    from macgpt.paths import runtime_dir_for

    monkeypatch.delenv("MACGPT_RUNTIME_DIR", raising=False)
    missing = tmp_path / "no-such-home"
    for args in (["status"], ["status", "--json"], ["status", "3"], ["ls", "--json"], ["logs"], ["logs", "1", "--json"],
                 ["sample", "你好", "--job", "1"], ["sample", "你好", "--json"]):
        code, out, err = invoke("--home", str(missing), *args)
        assert code == 3, (args, code, err)  # README: 3, the daemon is not running (and never ran here)
        assert any(line.startswith("error: ") and f"its home {missing} does not exist" in line
                   for line in err.splitlines()), (args, err)  # (sample says its seed first)
        assert out == "", (args, out)
        assert not missing.exists() and not runtime_dir_for(missing.resolve()).exists(), args


def test_click_errors_are_rendered_in_our_style() -> None:
    for args, needle in ((["sample", "hi", "--temperature", "-1"], "--temperature"),
                         (["frobnicate"], "frobnicate"), (["status", "--bogus"], "--bogus"),
                         (["ls", "--state", "runing"], "runing"), (["prune", "--older-than", "soon"], "soon")):
        code, _out, err = invoke(*args)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and "Usage:" not in err and needle in err, (args, err)


def test_device_is_checked_at_submit() -> None:
    import torch

    missing = "mps" if torch.cuda.is_available() else "cuda"
    code, _out, err = invoke("submit", "tiny", "--device", missing)
    assert code == 2 and f"--device {missing}: no {missing.upper()} device" in err, err


def test_help_names_the_presets_with_their_defaults_and_every_sample_option_has_help() -> None:
    code, out, _ = invoke("submit", "--help")
    assert code == 0
    for preset in ("tiny", "small", "original"):
        assert f"  {preset} " in out
    from macgpt.config.presets import PRESETS

    tiny = PRESETS["tiny"].train
    assert f"{tiny.steps} steps, batch {tiny.batch_size}" in out
    sample = main.commands["sample"]
    assert all(p.help for p in sample.params if hasattr(p, "help") and p.name != "prompt"), \
        [p.name for p in sample.params if not getattr(p, "help", "x")]


def test_every_command_takes_json_and_home() -> None:
    for name, cmd in main.commands.items():
        names = {p.name for p in cmd.params}
        assert "home" in names, name
        if name != "completion":
            assert "as_json" in names, name


def test_offline_status_ls_logs_and_sample_read_the_home(stored: Path) -> None:
    code, out, err = invoke("status", "--json")
    assert code == 0 and "daemon not running" in err
    r = json.loads(out)
    assert r["daemon"]["running"] is False
    assert [j["id"] for j in r["jobs"]] == [2, 1]
    assert r["jobs"][0]["disk_bytes"] == 5000 and r["disk_total"] == 5000
    code, out, err = invoke("ls", "--state", "cancelled")
    assert code == 0 and "early" in out and "later" not in out
    code, out, _ = invoke("status", "--name", "lat*")
    assert "later" in out and "early" not in out
    code, out, _ = invoke("logs", "1", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["seq"] for e in events] == [1, 2] and all(e["job"] == 1 for e in events)
    code, _, err = invoke("sample", "你好", "--job", "1")
    assert code == 2 and "was cancelled before it saved a checkpoint" in err, err
    code, _, err = invoke("logs", "9")
    assert code == 2 and "job 9 does not exist" in err


def test_writing_commands_need_the_daemon(stored: Path) -> None:
    for args in (["pause", "1"], ["resume", "1", "--json"], ["cancel", "1"], ["rm", "1"], ["prune"],
                 ["submit", "tiny"], ["logs", "1", "-f"], ["limits"]):
        code, out, err = invoke(*args)
        assert code == 3 and "macgptd start" in err and out == "", (args, code, err)


def view(i: int, name: str, state: str, reason: str | None = None) -> dict:
    return {"id": i, "name": name, "config": "original", "state": state, "reason": reason, "step": 12345,
            "max_steps": 100000, "loss": 2.3456, "eval_loss": 2.5, "steps_per_s": 12.3, "threads": 2,
            "batch_size": 48, "micro_batch": 24, "cpu_percent": 55.0, "rss": 300 * 2**20,
            "disk_bytes": 11 * 2**20, "checkpoint_age": 75.0, "created": 1.7e9}


def test_tables_fit_80_columns_dropping_the_least_useful_first() -> None:
    jobs = [view(17, "a-rather-long-experiment-name", "running"),
            view(3, "x", "paused", "memory: waiting for memory to come back")]
    lines = status_view.status_lines({"jobs": jobs}, jobs, 80)
    table = lines[0].splitlines()
    assert all(len(line) <= 80 for line in table), table
    for kept in ("ID", "NAME", "STATE", "STEP", "LOSS"):
        assert kept in table[0]
    assert "THREADS" not in table[0] and "12345/100000" in table[1] and "2.346" in table[1]
    assert "job 3: paused: memory: waiting for memory to come back" in lines  # cut in the table, whole below
    daemon = {"pid": 7, "uptime": 75.0, "max_concurrent": 2, "governor": {"message": "throttled: other programs "
              "use 55% CPU, limit 70%"}, "limits": {"max_cpu": 70, "max_memory": 60, "on_battery": "pause"}}
    head = status_view.header_line({"daemon": daemon, "disk_total": 2**30}, jobs, 80).splitlines()
    assert len(head) > 1 and all(len(line) <= 80 for line in head) and "slots 1/2" in head[0]
    wide = status_view.status_lines({"jobs": jobs}, jobs, 200)[0].splitlines()
    assert "THREADS" in wide[0] and "CKPT AGE" in wide[0]
    listing = status_view.ls_lines(jobs, 80).splitlines()
    assert all(len(line) <= 80 for line in listing) and "DISK" in listing[0]


def test_prune_selection_and_ages_and_wait_codes() -> None:
    now = 1_000_000.0
    jobs = [{"id": 1, "state": "completed", "finished": now - 8 * 86400}, {"id": 2, "state": "failed", "finished": now - 60},
            {"id": 3, "state": "running", "finished": None, "created": now - 30 * 86400},
            {"id": 4, "state": "cancelled", "finished": now - 86400}]
    assert parse_age("7d") == 7 * 86400 and parse_age("90s") == 90 and parse_age("1.5h") == 5400
    with pytest.raises(ValueError, match="7 days"):
        parse_age("7 days")
    states = {"completed", "failed", "cancelled", "running"}
    assert [j["id"] for j in prune_candidates(jobs, states, parse_age("7d"), now)] == [1]
    assert [j["id"] for j in prune_candidates(jobs, states, None, now)] == [1, 2, 4]  # never a running job
    assert [j["id"] for j in prune_candidates(jobs, {"failed"}, None, now)] == [2]
    assert wait_exit_code(["completed", "completed"]) == 0 and wait_exit_code(["completed", "cancelled"]) == 1


def test_completion_scripts() -> None:
    for shell, needle in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        code, out, _ = invoke("completion", shell)
        assert code == 0 and "_MACGPT_COMPLETE" in out and needle in out, shell


def test_data_messages_say_what_is_wrong(tmp_path: Path) -> None:
    code, _, err = invoke("submit", "tiny", "--data", str(tmp_path))
    assert code == 2 and "directory holds no data files" in err and "(none)" not in err, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "unterminated\n', encoding="utf-8")
    code, _, err = invoke("submit", "tiny", "--data", str(bad))
    assert code == 2 and f"{bad}:2:" in err and err.rstrip().endswith('like {"text": "..."}'), err


def test_configs_fit_80_columns_with_whole_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    from macgpt.config.estimate import estimate
    from macgpt.config.presets import get_preset

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = invoke("configs")
    assert code == 0 and all(len(line) <= 80 for line in out.splitlines()), out
    p = get_preset("original")
    assert f"{estimate(p.model, p.train.batch_size).params_total:,}" in out  # not cut to "2,91…"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_progress_bar_keeps_step_and_loss_at_80_columns(lang: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: on an 80-column terminal the `--follow` bar lost step and loss. Rendered by rich
    at 80 columns with the widest realistic numbers and every governor state: step/max and the
    loss stay on the bar's one line, and nothing passes 80 columns."""
    import io

    from rich.console import Console

    from macgpt.client import jobs, lines
    from macgpt.client.render import cells

    monkeypatch.setenv("MACGPT_LANG", lang)
    loss = lines.W[lang]["loss"]
    for governor in ("", "throttled", "stopped", "paused", "memory"):
        live = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
        bar = jobs._ProgressBar(123, console=live)
        try:
            assert bar.narrow
            if governor:
                bar.update({"kind": "governor", "data": {"state": governor, "message": "x"}})
            bar.update({"kind": "metrics", "data": {"step": 12345, "max_steps": 100000, "loss": 2.3456,
                                                    "steps_per_s": 123.4, "threads": 16, "micro_batch": 128,
                                                    "batch_size": 256}})
            shown = Console(width=80, file=io.StringIO(), record=True, color_system=None)
            shown.print(bar.progress.get_renderable())
        finally:
            bar.close()
        text = shown.export_text().rstrip("\n").splitlines()
        assert len(text) == 1 and cells(text[0]) <= 80, (governor, text)
        assert "12345/100000" in text[0] and f"{loss} 2.346" in text[0], (governor, text)
        if lang == "en" and governor:  # what the governor does comes before the speed
            assert f"{loss} 2.346 | {governor}" in text[0], text
