"""`macgptd install`: the systemd unit and the LaunchAgent plist validate, install is idempotent,
status reports it, uninstall removes it."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

from macgpt.client import service

from .conftest import MACGPTD, env_with_home


def _env(home: Path, tmp: Path) -> dict[str, str]:
    return env_with_home(home, HOME=str(tmp), XDG_CONFIG_HOME=str(tmp / "cfg"), USER="someone")


def _verify(unit: Path, tmp: Path) -> str:
    """systemd-analyze's complaints about a unit file ('' when it has none)."""
    runtime = tmp / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    r = subprocess.run(["systemd-analyze", "verify", "--user", str(unit)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    return (r.stdout + r.stderr).strip() + ("" if r.returncode == 0 else f" (exit {r.returncode})")


def test_the_systemd_unit_installs_once_and_validates(tmp_path: Path) -> None:
    home = tmp_path / "my home%1"  # a space and a %-specifier must survive systemd's quoting
    env = _env(home, tmp_path)
    r = subprocess.run([MACGPTD, "install", "--no-start"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "cfg" / "systemd" / "user" / "macgptd.service"
    assert r.stdout.startswith(f"wrote {unit}") and "loginctl enable-linger someone" in r.stdout
    text = unit.read_text()
    assert 'ExecStart=' in text and '--home "' + str(home).replace("%", "%%") + '" run' in text
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    before = unit.stat().st_mtime_ns
    again = subprocess.run([MACGPTD, "install", "--no-start"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.startswith("already up to date") and unit.stat().st_mtime_ns == before
    status = subprocess.run([MACGPTD, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and '"service": "installed (' in status.stdout
    if shutil.which("systemd-analyze"):
        assert _verify(unit, tmp_path) == ""
        bad = tmp_path / "bad.service"
        bad.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
        assert "restart specifier" in _verify(bad, tmp_path)  # the check can fail
    gone = subprocess.run([MACGPTD, "install", "--uninstall", "--no-start"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert gone.returncode == 0 and gone.stdout.startswith("removed") and not unit.exists()
    status = subprocess.run([MACGPTD, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert '"service": "not installed (' in status.stdout


def test_the_launch_agent_plist_is_valid_and_restarts_only_after_a_crash(tmp_path: Path) -> None:
    home = tmp_path / "home"
    svc = service.service_for("darwin", home, {"HOME": str(tmp_path)})
    assert svc.path == tmp_path / "Library" / "LaunchAgents" / "org.macgpt.macgptd.plist"
    plist = plistlib.loads(svc.text)
    assert plist["Label"] == "org.macgpt.macgptd"
    assert plist["ProgramArguments"][-3:] == ["--home", str(home), "run"]
    assert plist["ProgramArguments"] == service.daemon_command(home) and Path(plist["ProgramArguments"][0]).exists()
    assert plist["ProcessType"] == "Background" and plist["LowPriorityIO"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["StandardErrorPath"] == str(home / "logs" / "macgptd.out")
    assert service.install(svc, start=False) == (True, [])
    assert service.install(svc, start=False) == (False, [])
    assert service.installed(svc) == "installed"
    if shutil.which("plutil"):
        assert subprocess.run(["plutil", "-lint", str(svc.path)], capture_output=True, timeout=30).returncode == 0
    svc.path.write_bytes(svc.text.replace(b"Background", b"Standard"))
    assert service.installed(svc).startswith("installed (out of date")
