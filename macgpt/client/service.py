"""``macgptd install``: a login service that runs ``macgptd run`` for this user — a systemd user
unit on Linux, a LaunchAgent on macOS. The files are built by pure functions; ``install`` and
``uninstall`` only write, compare and remove them (and ask systemctl/launchctl to load them)."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LABEL = "org.macgpt.macgptd"
UNIT = "macgptd.service"


@dataclass(frozen=True)
class Service:
    path: Path  # where the file goes
    text: bytes  # what it holds
    load: list[list[str]]  # commands that make the service manager pick it up and start it
    unload: list[list[str]]
    note: str  # what else the user should know


def daemon_command(home: Path) -> list[str]:
    """How the service starts the daemon: this installation's macgptd, on this home."""
    exe = Path(sys.executable).parent / "macgptd"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "macgpt.client.daemon_cli"]
    return [*head, "--home", str(home), "run"]


def _systemd_word(word: str) -> str:
    word = word.replace("%", "%%")  # systemd expands %-specifiers
    if any(c in word for c in ' \t"\'\\;$'):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def systemd_unit(command: list[str], home: Path) -> str:
    return "\n".join([
        "[Unit]",
        "Description=macgpt supervisor daemon (trains tiny GPT models, keeps the machine responsive)",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_systemd_word(w) for w in command),
        f"Environment=MACGPT_HOME={_systemd_word(str(home))}",
        "Restart=on-failure",  # a crash restarts it; `macgptd stop` (exit 0) does not
        "RestartSec=5",
        "KillMode=mixed",  # SIGTERM to the daemon alone: it checkpoints and stops its workers itself
        "TimeoutStopSec=120",
        "Nice=10",
        "IOSchedulingClass=idle",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def launchd_plist(command: list[str], home: Path) -> bytes:
    log = str(home / "logs" / "macgptd.out")
    return plistlib.dumps({
        "Label": LABEL,
        "ProgramArguments": command,
        "EnvironmentVariables": {"MACGPT_HOME": str(home)},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash only
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
        "ExitTimeOut": 120,
        "StandardOutPath": log,
        "StandardErrorPath": log,
    })


def service_for(platform: str, home: Path, env: dict[str, str]) -> Service:
    command = daemon_command(home)
    user_home = Path(env.get("HOME") or Path.home())
    if platform == "darwin":
        path = user_home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        domain = f"gui/{os.getuid()}"
        return Service(path, launchd_plist(command, home),
                       [["launchctl", "bootstrap", domain, str(path)]], [["launchctl", "bootout", f"{domain}/{LABEL}"]],
                       "the LaunchAgent starts macgptd at login and restarts it after a crash.")
    config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")
    path = config / "systemd" / "user" / UNIT
    return Service(path, systemd_unit(command, home).encode(),
                   [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", UNIT]],
                   [["systemctl", "--user", "disable", "--now", UNIT], ["systemctl", "--user", "daemon-reload"]],
                   "a user service stops at logout unless lingering is on: run `loginctl enable-linger "
                   f"{env.get('USER', '$USER')}` so queued jobs keep training after you log out.")


def installed(svc: Service) -> str:
    """'not installed', 'installed' or 'installed (out of date)'."""
    if not svc.path.exists():
        return "not installed"
    return "installed" if svc.path.read_bytes() == svc.text else "installed (out of date: run macgptd install)"


def _run_all(commands: list[list[str]]) -> list[str]:
    """Run each command; the ones that failed, as lines for the user to run by hand."""
    failed = []
    for cmd in commands:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            ok, why = r.returncode == 0, (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, [str(e)]
        if not ok:
            failed.append(f"{' '.join(cmd)}  ({why[0][:200]})")
    return failed


def install(svc: Service, start: bool) -> tuple[bool, list[str]]:
    """Write the file if it differs (idempotent); True when it changed. Then load it unless ``start`` is False."""
    from macgpt.fsutil import atomic_write_bytes

    changed = not svc.path.exists() or svc.path.read_bytes() != svc.text
    if changed:
        svc.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(svc.path, svc.text)
    return changed, _run_all(svc.load) if start else []


def uninstall(svc: Service, stop: bool) -> tuple[bool, list[str]]:
    if not svc.path.exists():
        return False, []
    failed = _run_all(svc.unload) if stop else []
    svc.path.unlink()
    return True, failed
