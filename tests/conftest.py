"""Shared fixtures: a private home per test, the venv's executables, small job settings."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MACGPT = str(BIN / "macgpt")
MACGPTD = str(BIN / "macgptd")
ROOT = Path(__file__).resolve().parent.parent


# A slice of the shared real corpus, vendored with its licences and source note (tests/data/real_chat/SOURCE.md),
# so a fresh clone anywhere runs the suite with nothing beside it.
REAL_CHAT = ROOT / "tests" / "data" / "real_chat"

# Lines are in the language of the locale (C gives Chinese, the guide's own): the suite asserts
# English texts, so it fixes the language whatever the machine's locale; the language tests and
# the few Chinese checks ask for zh themselves.
os.environ["MACGPT_LANG"] = "en"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", type=int, default=1, metavar="N",
                     help="a longer soak: N times the SIGKILLs and fuzzed messages of the fault suites")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts real daemons and workers: marked slow, so that
    ``pytest -m "not slow"`` gives the fast unit layer alone."""
    integration = ROOT / "tests" / "integration"
    for item in items:
        if integration in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> int:
    return max(1, request.config.getoption("--soak"))


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MACGPT_HOME (and a short runtime dir) for one test."""
    d = Path(tempfile.mkdtemp(prefix="mgh-"))
    monkeypatch.setenv("MACGPT_HOME", str(d))
    monkeypatch.delenv("MACGPT_RUNTIME_DIR", raising=False)
    yield d
    reap(d)
    from macgpt.paths import runtime_dir_for

    shutil.rmtree(runtime_dir_for(d.resolve()), ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)


def env_with_home(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "MACGPT_HOME": str(home), **extra}


def reap(home: Path) -> list[int]:
    """Kill whatever a test left running under ``home`` (daemons, CLIs, workers): continued first."""
    import signal

    import psutil

    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(home) in cmd and p.pid != os.getpid():
            left.append(p)
    for p in left:
        try:
            group = os.getpgid(p.pid)
            if group != os.getpgrp():  # a worker leads its own group (with any children it made)
                os.killpg(group, signal.SIGCONT)
                os.killpg(group, signal.SIGKILL)
            p.send_signal(signal.SIGCONT)
            p.kill()
        except (psutil.Error, OSError):
            pass
    psutil.wait_procs(left, timeout=5)
    return [p.pid for p in left]
