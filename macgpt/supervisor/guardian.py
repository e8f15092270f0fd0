"""A watchdog process that outlives its supervisor: when the supervisor dies (even by kill -9),
it continues every worker the supervisor had stopped, so no worker is ever left frozen.

Started by each supervisor (daemon or foreground run) as its child in a session of its own. It
notices its parent's death when it is re-parented, reads the supervisor's on-disk registry of
stopped pids, sends SIGCONT to each worker's process group and exits. A continued worker then
sees that its supervisor is gone, saves a checkpoint and exits by itself. Standard library only.

    python -m macgpt.supervisor.guardian REGISTRY
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

POLL = 0.25  # seconds


def thaw_recorded(registry: Path) -> list[int]:
    try:
        pids = [int(p) for p in json.loads(registry.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    thawed = []
    for pid in pids:
        for send in (os.killpg, os.kill):
            try:
                send(pid, signal.SIGCONT)
                thawed.append(pid)
                break
            except (ProcessLookupError, PermissionError):
                continue
    return thawed


def main(argv: list[str]) -> int:
    registry = Path(argv[0])
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == parent:
        time.sleep(POLL)
    thaw_recorded(registry)
    return 0


def start(registry: Path) -> None:
    """Spawn the guardian of this process (the supervisor)."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "macgpt.supervisor.guardian", str(registry)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
