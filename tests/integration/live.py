"""Following real processes from a test: a `macgpt train --json` run's events, a daemon job's status,
waits, hogs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from macgpt.client.connection import Client
from macgpt.paths import layout

from ..conftest import MACGPT

ROGUE = [sys.executable, str(Path(__file__).with_name("rogue_worker.py"))]


def job_status(jid: int) -> dict[str, Any]:
    """One job's status through the client library (polling with a CLI process per look is slow)."""
    client = Client(layout())
    try:
        return client.call("status", {"job": jid})["jobs"][0]
    finally:
        client.close()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    """The predicate's first truthy value, polling until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class LiveRun:
    def __init__(self, args: list[str], home: Path, rogue: str | None = None, **env: str) -> None:
        extra = {"MACGPT_HOME": str(home), **env}
        if "--out" not in args:
            args = [*args, "--out", str(home / "runs" / "job")]  # the home in every command line: reapable
        if rogue:
            extra |= {"MACGPT_WORKER_ARGV": json.dumps(ROGUE), "ROGUE_MODE": rogue}
        self.proc = subprocess.Popen([MACGPT, "train", *args, "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **extra})
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))
                self.times.append(time.monotonic())

    def wait(self, predicate, timeout: float = 60.0, after: int = 0) -> tuple[int, dict[str, Any]]:
        """The first event (index >= after) that matches, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            while seen < len(self.events):
                if predicate(self.events[seen]):
                    return seen, self.events[seen]
                seen += 1
            if self.proc.poll() is not None and seen >= len(self.events):
                self._reader.join(2)
                if seen >= len(self.events):
                    break
            time.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout}s; last events: {self.events[-5:]}")

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def stop(self, timeout: float = 60.0) -> int:
        for _ in range(3):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout / 3)
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            self.proc.kill()
        self._reader.join(5)
        return self.proc.wait(5)


def governor(e: dict[str, Any], state: str) -> bool:
    return e["event"] == "governor" and e.get("state") == state


class Hog:
    """Busy processes at normal priority: the user's foreground work. Every hog still running when
    a test ends is stopped by the fixture in conftest, so a failed test cannot load the next ones."""

    running: ClassVar[list[Hog]] = []

    def __init__(self, n: int | None = None, mb: int = 0) -> None:
        hold = f"b = bytearray({mb * 2**20})\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time\nwhile True: time.sleep(1)"
        code = hold if mb else "while True: pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n or (os.cpu_count() or 2))]
        Hog.running.append(self)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        if self in Hog.running:
            Hog.running.remove(self)
