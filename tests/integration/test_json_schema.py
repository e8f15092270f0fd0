"""Issue 13, "one surface": every command that takes `--json` prints JSON on stdout (one document,
or one per line for the streaming ones) and names a job by `id` (`job` kept beside it, equal, for
one release; an event carries its job as `job`). The client runs in-process through click's runner;
the local commands read a real `macgpt train` run, the others talk to a real daemon."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from macgpt.client.cli import main

from ..conftest import MACGPTD
from .test_daemon import FAST_JOB

pytestmark = pytest.mark.timeout(900)  # several real jobs on a possibly busy 2-core machine

JOB = [*FAST_JOB, "--set", "log_interval=1"]  # a metrics line every step: short runs have metrics too
JSON_COMMANDS = {name for name, cmd in main.commands.items() if any(p.name == "as_json" for p in cmd.params)}


def check_ids(doc: Any, where: str) -> None:
    """Every object naming a job names it by `id`; an event (seq + kind) carries its `job`."""
    if isinstance(doc, list):
        for item in doc:
            check_ids(item, where)
        return
    if not isinstance(doc, dict):
        return
    if "seq" in doc and "kind" in doc:  # a job's event: its job is `job`, the data is the worker's own
        assert isinstance(doc.get("job"), int) and not isinstance(doc["job"], bool), (where, doc)
        return
    if "job" in doc:
        assert "id" in doc and doc["id"] == doc["job"], (where, "a job named without `id`", doc)
    if "jobs" in doc:
        assert isinstance(doc["jobs"], list) and all(isinstance(j, dict) and "id" in j for j in doc["jobs"]), \
            (where, doc["jobs"])
    for key, value in doc.items():
        if key not in ("limits", "governor", "data"):
            check_ids(value, where)


class Cli:
    def __init__(self) -> None:
        self.covered: set[str] = set()

    def json(self, *args: str, code: int = 0, lines: bool = False) -> Any:
        """``macgpt ARGS --json`` in-process: the exit code, stdout parsed (a list of documents when
        ``lines``), nothing but JSON on stdout."""
        r = CliRunner().invoke(main, [*args, "--json"], prog_name="macgpt", catch_exceptions=False)
        assert r.exit_code == code, (args, r.exit_code, r.stderr[-2000:])
        self.covered.add(args[0])
        where = " ".join(args)
        try:
            docs = [json.loads(line) for line in r.stdout.splitlines()] if lines else [json.loads(r.stdout)]
        except ValueError as e:
            pytest.fail(f"{where} --json: not JSON ({e}): {r.stdout[:500]!r}")
        assert docs, (where, "printed nothing")
        for doc in docs:
            check_ids(doc, where)
        return docs if lines else docs[0]


def wait_for(cli: Cli, job: int, states: set[str], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = cli.json("status", str(job))["jobs"][0]
        if j["state"] in states and (j["state"] != "running" or j.get("pid")):
            return j
        time.sleep(0.3)
    raise AssertionError(f"job {job} never reached {states}")


def test_every_command_with_json_prints_json_naming_jobs_by_id(home: Path) -> None:
    cli = Cli()
    # -- without the daemon: a real foreground run, then the commands that read files --------------
    run = home / "runs" / "r"
    events = cli.json("train", "tiny", "--steps", "4", *JOB, "--max-cpu", "100", "--out", str(run), lines=True)
    summary = events[-1]
    assert summary["event"] == "summary" and summary["result"] == "completed", summary
    final = summary["final_model"]
    assert cli.json("configs")["presets"]
    assert cli.json("evaluate", "--model", final)["loss"] > 0
    assert cli.json("sample", "你好", "--model", final, "-n", "3", "--seed", "1")["seed"] == 1
    assert any(r["kind"] == "train" for r in cli.json("metrics", str(run), lines=True))
    plotted = cli.json("plot", str(run), "--out", str(home / "loss.png"))
    assert plotted["jobs"] == [{"id": None, "run": str(run)}] and Path(plotted["path"]).is_file()
    exported = cli.json("export", str(run), "--out", str(home / "exported"))
    assert exported["id"] is None and exported["run"] == str(run) and exported["step"] == 4

    # -- against a real daemon --------------------------------------------------------------------
    r = subprocess.run([MACGPTD, "start", "--max-cpu", "100"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        long = cli.json("submit", "tiny", "--steps", "100000", *JOB, "--set", "checkpoint_seconds=1",
                        "--name", "long")
        assert long["id"] == 1
        after = cli.json("submit", "tiny", "--steps", "2", *JOB, "--after", "1", "--name", "after")
        assert after["id"] == 2
        wait_for(cli, 1, {"running"})
        assert cli.json("checkpoint", "1")["id"] == 1
        assert cli.json("pause", "1") == {"id": 1, "job": 1, "state": "paused"}
        assert cli.json("resume", "1")["id"] == 1
        wait_for(cli, 1, {"running"})
        sampled = cli.json("sample", "你好", "--job", "1", "-n", "3")
        assert sampled["id"] == 1 and "text" in sampled and "seed" in sampled
        assert cli.json("limits")["max_cpu"] == 100
        assert [j["id"] for j in cli.json("status")["jobs"]] == [2, 1]
        assert [j["id"] for j in cli.json("ls", "--state", "queued")["jobs"]] == [2]
        assert cli.json("cancel", "1")["id"] == 1
        assert cli.json("wait", "1", "2", code=1) == {"jobs": [{"id": 1, "state": "cancelled"},
                                                               {"id": 2, "state": "failed"}]}
        stopped = cli.json("sample", "你好", "--job", "1", "-n", "3")  # from its checkpoint now
        assert stopped["id"] == 1 and stopped["source"] == "checkpoint"
        assert all(e["job"] == 1 for e in cli.json("logs", "1", lines=True))
        followed = cli.json("submit", "tiny", "--steps", "2", *JOB, "--name", "short", "--follow", lines=True)
        assert followed[0]["id"] == 3 and all(e["job"] == 3 for e in followed[1:])
        assert cli.json("extend", "3", "--steps", "1")["id"] == 3
        assert cli.json("wait", "3") == {"jobs": [{"id": 3, "state": "completed"}]}
        assert cli.json("metrics", "3", lines=True)
        assert cli.json("export", "3", "--out", str(home / "exported3"))["id"] == 3
        assert cli.json("plot", "3", str(run), "--out", str(home / "two.png"))["jobs"] == [
            {"id": 3}, {"id": None, "run": str(run)}]
        assert cli.json("rm", "2") == {"removed": [{"id": 2}], "freed": 0}
        assert [j["id"] for j in cli.json("prune", "--dry-run")["jobs"]] == [3, 1]
        assert [j["id"] for j in cli.json("prune", "--state", "cancelled")["removed"]] == [1]
    finally:
        subprocess.run([MACGPTD, "stop", "--timeout", "60"], capture_output=True, text=True, timeout=90)
    assert cli.covered == JSON_COMMANDS, f"not tried with --json: {sorted(JSON_COMMANDS - cli.covered)}"
