"""One daemon per home: an exclusive ``flock`` on the home's lock file, holding the pid and the
daemon's runtime directory (where its sockets are).

The kernel drops the lock when the process dies, so a crashed daemon never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid})" if pid else "already running")
        self.pid = pid


def read_pid(path: Path) -> int | None:
    try:
        return int((path.read_text().split("\n", 1)[0]).strip() or 0) or None
    except (OSError, ValueError):
        return None


def read_runtime(path: Path) -> Path | None:
    """The runtime directory the daemon holding ``path`` listens in (second line), if recorded."""
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return None
    return Path(lines[1]) if len(lines) > 1 and lines[1].strip() else None


class DaemonLock:
    def __init__(self, path: Path, runtime: Path | None = None) -> None:
        self.path = path
        self.runtime = runtime
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = read_pid(self.path)
                if pid or attempt == 9:  # a daemon holds it (a status check holds it only briefly)
                    os.close(fd)
                    raise AlreadyRunning(pid) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{self.runtime or ''}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holder(path: Path) -> int | None:
    """pid of the daemon holding the lock, or None when no daemon runs (checked, not guessed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(path) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
