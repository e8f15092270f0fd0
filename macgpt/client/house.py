"""Housekeeping and scripting commands: rm, prune and wait. Selection rules are pure functions;
the commands around them talk to the daemon."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from macgpt.client.connection import RemoteError
from macgpt.client.exitcodes import Exit
from macgpt.client.jobs import _client, remote, status_answer
from macgpt.client.surface import emit_json, job_ref
from macgpt.client.units import fmt_bytes
from macgpt.protocol import FINISHED

PRUNE_STATES = frozenset({"completed", "failed", "cancelled"})
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds; ValueError naming the bad value."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise ValueError(f"--older-than {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 7d or 12h")
    return float(m.group(1)) * UNITS[m.group(2)]


def prune_candidates(jobs: list[dict[str, Any]], states: set[str], older_than: float | None,
                     now: float) -> list[dict[str, Any]]:
    """Finished jobs in ``states`` that finished (or were created) more than ``older_than`` seconds ago."""
    chosen = []
    for j in jobs:
        if j["state"] not in states or j["state"] not in PRUNE_STATES:
            continue
        when = j.get("finished") or j.get("created") or now
        if older_than is None or now - when >= older_than:
            chosen.append(j)
    return chosen


def wait_exit_code(states: list[str]) -> int:
    """0 when every job completed, 1 when any failed or was cancelled."""
    return Exit.OK if all(s == "completed" for s in states) else Exit.FAILURE


def _wait_finished(client: Any, jobs: list[int], timeout: float | None, interval: float = 0.5) -> dict[int, str]:
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[int, str] = {}
    while True:
        for j in jobs:
            if states.get(j) not in FINISHED:
                states[j] = client.call("status", {"job": j})["jobs"][0]["state"]
        if all(s in FINISHED for s in states.values()):
            return states
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(interval)


@remote
def rm(home: str | None, jobs: list[int], force: bool, as_json: bool) -> int:
    client = _client(home)
    if force:
        active = [j for j in jobs if client.call("status", {"job": j})["jobs"][0]["state"] not in FINISHED]
        for j in active:
            try:
                client.call("cancel", {"job": j})  # a running worker writes a checkpoint, then exits
            except RemoteError as e:
                if e.code != "conflict":
                    raise
        _wait_finished(client, active, timeout=120.0)
    r = client.call("remove", {"jobs": jobs})
    if as_json:
        emit_json({"removed": [{"id": j} for j in r["removed"]], "freed": r["freed"]})
    else:
        for j in r["removed"]:
            click.echo(f"job {j}: removed")
        click.echo(f"freed {fmt_bytes(r['freed'])}")
    return Exit.OK


@remote
def prune(home: str | None, states: set[str], older_than: float | None, dry_run: bool, as_json: bool) -> int:
    _client(home).call("ping")  # a writing command: the daemon must be up, even for a dry run
    answer = status_answer(home, None)
    chosen = prune_candidates(answer["jobs"], states, older_than, time.time())
    size = sum(j["disk_bytes"] for j in chosen)
    if dry_run or not chosen:
        removed: list[int] = []
        freed = 0
    else:
        r = _client(home).call("remove", {"jobs": [j["id"] for j in chosen]})
        removed, freed = r["removed"], r["freed"]
    if as_json:
        emit_json({"dry_run": dry_run, "jobs": [{"id": j["id"], "name": j["name"], "state": j["state"],
                                                 "disk_bytes": j["disk_bytes"]} for j in chosen],
                   "removed": [{"id": j} for j in removed], "freed": freed})
        return Exit.OK
    verb = "would remove" if dry_run else "removed"
    for j in chosen:
        click.echo(f"{verb} job {j['id']} ({j['name']}, {j['state']}, {fmt_bytes(j['disk_bytes'])})")
    if not chosen:
        click.echo("nothing to prune")
    else:
        click.echo(f"{verb} {len(chosen)} job(s), {fmt_bytes(size if dry_run else freed)}")
    return Exit.OK


@remote
def wait(home: str | None, jobs: list[int], timeout: float | None, as_json: bool) -> int:
    client = _client(home)
    try:
        states = _wait_finished(client, jobs, timeout)
    except TimeoutError:
        click.echo(f"error: not finished within {timeout:g}s", err=True)
        return Exit.FAILURE
    if as_json:
        emit_json({"jobs": [{"id": j, "state": s} for j, s in states.items()]})
    else:
        for j, s in states.items():
            click.echo(f"job {j}: {s}")
    return wait_exit_code(list(states.values()))


@remote
def extend(home: str | None, job: int, steps: int, as_json: bool) -> int:
    r = _client(home).call("extend", {"job": job, "steps": steps})
    if as_json:
        emit_json(job_ref(job, **{k: v for k, v in r.items() if k != "job"}))
    else:
        click.echo(f"job {job}: {r['state']}; it trains from step {r['from_step']} to {r['max_steps']}")
    return Exit.OK
