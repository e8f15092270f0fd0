"""Where things live: the home (database, jobs, logs, the one-per-home lock) and the private
runtime directory (sockets).

Home: ``--home``, else ``$MACGPT_HOME``, else the platform's user data directory. The runtime
directory holds the daemon's sockets; it is short (Unix socket paths are limited to about 104
bytes), private (mode 0700) and derived from the home. The lock is in the home itself and names
the runtime directory of the daemon holding it, so a shell whose environment gives another
runtime directory finds that daemon and cannot start a second one on the same queue.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOCKET_PATH_MAX = 103  # macOS sun_path is 104 bytes with the trailing NUL; Linux allows 107


class PathError(Exception):
    pass


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    if home is None:
        home = os.environ.get("MACGPT_HOME") or None
    if home is None:
        import platformdirs

        home = platformdirs.user_data_dir("macgpt", appauthor=False)
    return Path(home).expanduser().resolve()


@dataclass(frozen=True)
class Layout:
    home: Path
    runtime: Path

    @property
    def db(self) -> Path:
        return self.home / "macgpt.sqlite3"

    @property
    def jobs(self) -> Path:
        return self.home / "jobs"

    @property
    def tokenizer_cache(self) -> Path:
        return self.home / "tokenizers"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "macgptd.log"

    @property
    def frozen_file(self) -> Path:
        return self.home / "stopped_pids.json"

    @property
    def lock(self) -> Path:
        # In the home, next to the database: two shells with different runtime dirs share one lock.
        return self.home / "daemon.lock"

    @property
    def pid_file(self) -> Path:
        return self.runtime / "daemon.pid"

    @property
    def control(self) -> str:
        return f"ipc://{self.runtime / 'control.sock'}"

    @property
    def events(self) -> str:
        return f"ipc://{self.runtime / 'events.sock'}"

    @property
    def workers(self) -> str:
        return f"ipc://{self.runtime / 'workers.sock'}"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs / f"{job_id:06d}"


def runtime_dir_for(home: Path) -> Path:
    base = os.environ.get("MACGPT_RUNTIME_DIR")
    if base:
        return Path(base)
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return root / f"macgpt-{os.getuid()}" / digest


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 (our ``macgpt-<uid>`` parent too) and refuse a directory
    owned by someone else."""
    chain = [path.parent, path] if path.parent.name == f"macgpt-{os.getuid()}" else [path]
    path.parent.mkdir(parents=True, exist_ok=True)
    for d in chain:
        d.mkdir(mode=0o700, exist_ok=True)
        st = d.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PathError(f"{d}: not a directory owned by you; remove it or set MACGPT_RUNTIME_DIR")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(d, 0o700)


def layout(home: str | os.PathLike[str] | None = None, create: bool = True) -> Layout:
    h = resolve_home(home)
    lay = Layout(h, runtime_dir_for(h))
    longest = len(str(lay.runtime / "control.sock"))
    if longest > SOCKET_PATH_MAX:
        raise PathError(
            f"socket path {lay.runtime / 'control.sock'} is {longest} bytes, over the "
            f"{SOCKET_PATH_MAX}-byte limit of Unix sockets; set MACGPT_RUNTIME_DIR to a shorter directory"
        )
    if create:
        h.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = h.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(h, 0o700)  # the home holds the queue, models and keys: private
        ensure_private_dir(lay.runtime)
    return lay
