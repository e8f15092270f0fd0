"""``macgptd``: run, start, stop and inspect the supervisor daemon.

``start`` launches ``macgptd run`` as a new process in its own session (no fork-and-exit
tricks, which launchd forbids) and returns once the daemon answers a ping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import click

from macgpt.client.exitcodes import Exit
from macgpt.client.options import LIMIT_KEYS, limit_option
from macgpt.config.limits import Limits
from macgpt.config.schema import ConfigError
from macgpt.paths import Layout, PathError, layout
from macgpt.supervisor.admission import MAX_CLIENTS
from macgpt.supervisor.lock import holder

START_TIMEOUT = 15.0


def limit_options(f: Any) -> Any:
    for opt in reversed([
        *(limit_option(key, typed=True) for key in LIMIT_KEYS),
        click.option("--max-concurrent", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="jobs trained at the same time"),
        click.option("--max-clients", type=click.IntRange(8, 1_000_000), default=None,
                     help=f"connections served at once (default {MAX_CLIENTS}, fewer under a low descriptor limit); "
                          "more are refused with an error"),
        click.option("--tcp-port", type=click.IntRange(1, 65535), default=None,
                     help="also listen on TCP (off by default), on --tcp-host"),
        click.option("--tcp-host", default="127.0.0.1", show_default=True,
                     help="address for --tcp-port; only loopback addresses are accepted"),
    ]):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="MACGPT_HOME", type=click.Path(file_okay=False), default=None,
              help="macgpt's data directory (default: $MACGPT_HOME or the platform's user data dir)")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """The macgpt supervisor daemon."""
    ctx.obj = {"home": home}


def _layout(ctx: click.Context) -> Layout:
    try:
        return layout(ctx.obj["home"])
    except PathError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(Exit.USAGE)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


FD_WANTED = 65536  # each client connection and `logs -f` follower holds a descriptor


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise the soft descriptor limit towards the hard one (256 by default on macOS): out of
    descriptors, libzmq aborts the whole daemon in its listener. Returns the soft limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    for value in (target, 10240):  # macOS refuses more than OPEN_MAX (10240) whatever the hard limit
        if value <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
            return value
        except (ValueError, OSError):
            continue
    return soft


def saved_limits(lay: Layout) -> Limits:
    path = lay.home / "limits.json"
    if path.exists():
        try:
            return Limits.from_dict(json.loads(path.read_text()))
        except (ValueError, ConfigError) as e:
            click.echo(f"warning: ignoring {path}: {e}", err=True)
    return Limits()


@main.command()
@limit_options
@click.option("--json-logs", is_flag=True, help="JSON log lines on stderr too")
@click.pass_context
def run(ctx: click.Context, max_concurrent: int, max_clients: int | None, tcp_port: int | None, tcp_host: str,
        json_logs: bool, **given: Any) -> None:
    """Run the daemon in the foreground (for launchd, systemd and debugging)."""
    # ``given``: the limit options (LIMIT_KEYS), None where not given

    import zmq

    from macgpt import log
    from macgpt.curvekeys import CurveKeyError
    from macgpt.supervisor.daemon import Daemon
    from macgpt.supervisor.lock import AlreadyRunning
    from macgpt.supervisor.store import StoreError

    os.umask(0o077)  # the database, logs, job directories and their files: 0700 and 0600
    fd_limit = raise_fd_limit()
    lay = _layout(ctx)
    if tcp_port is not None and not _loopback(tcp_host):
        click.echo(f"macgptd: refusing to listen on {tcp_host}:{tcp_port}: the control socket accepts every "
                   "command (submit, cancel, shutdown); TCP is authenticated and encrypted with ZeroMQ CURVE "
                   "(keys in HOME/keys) and still only loopback is safe to expose. Use --tcp-host 127.0.0.1 and, "
                   f"from another machine, an SSH tunnel: ssh -L {tcp_port}:127.0.0.1:{tcp_port} THIS-HOST", err=True)
        sys.exit(Exit.USAGE)
    log.setup(lay.log_file, console=True, json_console=json_logs)
    log.get().info("fd_limit", soft=fd_limit)
    try:
        limits = saved_limits(lay).updated({k: given[k] for k in LIMIT_KEYS})
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(Exit.USAGE)
    argv_env = os.environ.get("MACGPT_WORKER_ARGV")  # tests run deliberately misbehaving workers
    daemon = Daemon(lay, limits, max_concurrent, (tcp_host, tcp_port) if tcp_port else None,
                    json.loads(argv_env) if argv_env else None, **({"max_clients": max_clients} if max_clients else {}))
    try:
        daemon.open()
    except AlreadyRunning as e:
        click.echo(f"macgptd: {e}; home {lay.home}", err=True)
        sys.exit(Exit.FAILURE)
    except StoreError as e:
        log.get().error("database_unusable", error=str(e))
        click.echo(f"macgptd: {e}", err=True)
        sys.exit(Exit.FAILURE)
    except (zmq.ZMQError, CurveKeyError) as e:
        log.get().error("cannot_listen", error=str(e), tcp=f"{tcp_host}:{tcp_port}" if tcp_port else None)
        click.echo(f"macgptd: cannot listen{f' on TCP {tcp_host}:{tcp_port}' if tcp_port else ''}: {e}", err=True)
        sys.exit(Exit.FAILURE)
    daemon.serve()


@main.command()
@limit_options
@click.pass_context
def start(ctx: click.Context, **opts: Any) -> None:
    """Start the daemon in the background; returns once it answers."""
    lay = _layout(ctx)
    pid = holder(lay.lock)
    if pid is not None:
        click.echo(f"macgptd already running (pid {pid}); home {lay.home}")
        sys.exit(Exit.OK)
    cmd = [sys.executable, "-m", "macgpt.client.daemon_cli", "--home", str(lay.home), "run"]
    for key, value in opts.items():
        if value is not None and not (key == "max_concurrent" and value == 1):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    out_path = lay.log_file.with_name("macgptd.out")
    out_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    from macgpt.client.connection import Client, DaemonNotRunning

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = out_path.read_text(errors="replace").strip().splitlines()[-5:]
            click.echo(f"macgptd did not start (exit code {code}):", err=True)
            for line in tail:
                click.echo(f"  {line}", err=True)
            click.echo(f"log: {lay.log_file}", err=True)
            sys.exit(Exit.FAILURE)
        if holder(lay.lock) is not None:
            try:
                r = Client(lay, timeout=1.0).call("ping")
                click.echo(f"macgptd started (pid {r['pid']}); home {lay.home}; log {lay.log_file}")
                return
            except DaemonNotRunning:
                pass
        time.sleep(0.05)
    click.echo(f"macgptd did not answer within {START_TIMEOUT:g}s; see {lay.log_file}", err=True)
    sys.exit(Exit.FAILURE)


@main.command()
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds to wait for the jobs to checkpoint")
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the daemon: running jobs checkpoint and go back to the queue."""
    import signal

    from macgpt.client.connection import Client, DaemonNotRunning

    lay = _layout(ctx)
    pid = holder(lay.lock)
    if pid is None:
        click.echo(f"macgptd is not running; home {lay.home}")
        return
    try:
        Client(lay, timeout=3.0).call("shutdown")
    except DaemonNotRunning:
        if pid > 0:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while holder(lay.lock) is not None:
        if time.monotonic() > deadline:
            click.echo(f"macgptd (pid {pid}) did not stop within {timeout:g}s", err=True)
            sys.exit(Exit.FAILURE)
        time.sleep(0.05)
    click.echo(f"macgptd stopped (pid {pid})")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Whether the daemon runs: pid, socket, home, uptime."""
    from macgpt.client.connection import Client, DaemonNotRunning

    lay = _layout(ctx)
    try:
        info = Client(lay, timeout=3.0).call("daemon_info")
    except DaemonNotRunning as e:
        if as_json:
            print(json.dumps({"running": False, "home": str(lay.home), "service": _service_state(lay)}))
        else:
            click.echo(str(e), err=True)
            click.echo(f"service: {_service_state(lay)}", err=True)
        sys.exit(Exit.NO_DAEMON)
    info["running"] = True
    info["service"] = _service_state(lay)
    if as_json:
        print(json.dumps(info))
        return
    from macgpt.client.units import fmt_duration

    click.echo(f"macgptd running: pid {info['pid']}, up {fmt_duration(info['uptime'])}")
    click.echo(f"home:   {info['home']}\nsocket: {info['socket']}\nlog:    {info['log']}")
    click.echo(f"jobs running: {info['jobs_running'] or 'none'}; requests served {info['requests_served']}; "
               f"memory {info['rss'] / 2**20:.0f} MB")
    click.echo(f"service: {info['service']}")


def _service_state(lay: Layout) -> str:
    import os

    from macgpt.client import service

    svc = service.service_for(sys.platform, lay.home, dict(os.environ))
    return f"{service.installed(svc)} ({svc.path})"


# -- issue 14: a login service ------------------------------------------------------------------
@main.command()
@click.option("--uninstall", is_flag=True, help="remove the service (stopping it first)")
@click.option("--no-start", is_flag=True, help="only write (or remove) the file; do not call systemctl/launchctl")
@click.pass_context
def install(ctx: click.Context, uninstall: bool, no_start: bool) -> None:
    """Run macgptd as a login service: a systemd user unit (Linux) or a LaunchAgent (macOS).

    Idempotent: a second install changes nothing; `macgptd status` says whether it is installed.
    """
    import os

    from macgpt.client import service

    svc = service.service_for(sys.platform, _layout(ctx).home, dict(os.environ))
    if uninstall:
        removed, failed = service.uninstall(svc, not no_start)
        click.echo(f"removed {svc.path}" if removed else f"not installed ({svc.path} does not exist)")
    else:
        changed, failed = service.install(svc, not no_start)
        click.echo(f"{'wrote' if changed else 'already up to date:'} {svc.path}")
        click.echo(f"note: {svc.note}")
    for line in failed:
        click.echo(f"warning: could not run, do it by hand: {line}", err=True)


def run_main() -> None:
    main(prog_name="macgptd")


if __name__ == "__main__":
    main(prog_name="macgptd")
