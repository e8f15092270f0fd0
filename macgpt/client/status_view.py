"""What `status` and `ls` show: filters by state and name, disk use per job, and the tables,
narrowed to the terminal by dropping the least useful columns first. Pure functions of the answer."""

from __future__ import annotations

import fnmatch
from typing import Any

from macgpt.client import render
from macgpt.client.render import fmt_bytes

STATES = ("queued", "starting", "running", "paused", "completed", "failed", "cancelled")
STATUS_HEADERS = ["ID", "NAME", "CONFIG", "STATE", "STEP", "LOSS", "EVAL", "SPEED", "THREADS", "BATCH", "CPU",
                  "MEM", "DISK", "CKPT AGE"]
STATUS_DROP = ["THREADS", "BATCH", "CKPT AGE", "CONFIG", "EVAL", "CPU", "DISK", "SPEED", "MEM"]
LS_HEADERS = ["ID", "NAME", "CONFIG", "STATE", "STEP", "LOSS", "DISK", "CREATED"]
LS_DROP = ["CREATED", "CONFIG", "LOSS", "DISK"]


def parse_states(text: str | None) -> set[str] | None:
    """``running,queued`` -> a set of states; ValueError naming an unknown one."""
    if not text:
        return None
    states = {s.strip() for s in text.split(",") if s.strip()}
    unknown = sorted(states - set(STATES))
    if unknown:
        raise ValueError(f"--state: unknown state {unknown[0]!r}; choose from {', '.join(STATES)}")
    return states


def select(jobs: list[dict[str, Any]], states: set[str] | None, name: str | None) -> list[dict[str, Any]]:
    """The jobs in one of ``states`` whose name matches the glob ``name`` (either may be None)."""
    return [j for j in jobs if (states is None or j["state"] in states)
            and (name is None or fnmatch.fnmatchcase(j["name"], name))]


def slots_line(daemon: dict[str, Any], jobs: list[dict[str, Any]]) -> str:
    busy = sum(1 for j in jobs if j["state"] in ("starting", "running"))
    return f"slots {busy}/{daemon.get('max_concurrent', 1)}"


def wrap_parts(parts: list[str], width: int) -> str:
    """``parts`` joined by "; ", starting a new line where the next would pass ``width``."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) > width:
            lines[-1] += ";"
            lines.append("  " + part)
        else:
            lines[-1] += "; " + part
    return "\n".join(lines)


def header_line(r: dict[str, Any], all_jobs: list[dict[str, Any]], width: int = 10**6) -> str:
    d = r["daemon"]
    total = f"disk {fmt_bytes(r.get('disk_total') or 0)}"
    if not d.get("running", True):
        return wrap_parts([f"daemon not running (home {d['home']})", f"{len(all_jobs)} job(s), {total}"], width)
    lim = d["limits"]
    governor = (d.get("governor") or {}).get("message")
    parts = [f"daemon pid {d['pid']}, up {render.fmt_duration(d['uptime'])}, {slots_line(d, all_jobs)}, {total}",
             f"limits: CPU ≤ {lim['max_cpu']:g}%, memory ≤ {lim['max_memory']:g}%, on battery: {lim['on_battery']}"]
    return wrap_parts(parts + ([governor] if governor else []), width)


def _state(j: dict[str, Any]) -> str:
    state = j["state"] + (f" ({j['reason']})" if j.get("reason") else "")
    return state if len(state) <= 48 else state[:47] + "…"


def status_row(j: dict[str, Any]) -> list[str]:
    batch = "-" if j["batch_size"] is None else (
        f"{j['micro_batch']}/{j['batch_size']}" if j["micro_batch"] != j["batch_size"] else str(j["batch_size"]))
    return [
        str(j["id"]), j["name"], j["config"], _state(j), f"{j['step']}/{j['max_steps']}",
        render.fmt_num(j["loss"], 3), render.fmt_num(j["eval_loss"], 3),
        "-" if j["steps_per_s"] is None else f"{j['steps_per_s']:.1f}/s",
        "-" if j["threads"] is None else str(j["threads"]), batch,
        "-" if j.get("cpu_percent") is None else f"{j['cpu_percent']:.0f}%",
        "-" if j["rss"] is None else fmt_bytes(j["rss"]), fmt_bytes(j.get("disk_bytes") or 0),
        render.fmt_duration(j["checkpoint_age"]),
    ]


def status_lines(r: dict[str, Any], jobs: list[dict[str, Any]], width: int) -> list[str]:
    """The table and the notes under it."""
    lines = [render.fit_table(STATUS_HEADERS, [status_row(j) for j in jobs], width, STATUS_DROP, ("STATE", "NAME"))]
    for j in jobs:
        full = j["state"] + (f" ({j['reason']})" if j.get("reason") else "")
        if j.get("governor"):
            lines.append(f"job {j['id']}: {j['governor']}")
        if j.get("preparing"):
            lines.append(f"job {j['id']}: preparing: {render.progress_text(j['preparing'])}")
        if j.get("warning") and j["state"] not in ("completed", "cancelled"):
            lines.append(f"job {j['id']}: ⚠ {j['warning']}")
        if j.get("reason") and full not in lines[0] and j["state"] != "completed":  # cut in the table
            lines.append(f"job {j['id']}: {j['state']}: {j['reason']}")
    return lines


def ls_lines(jobs: list[dict[str, Any]], width: int) -> str:
    import time

    rows = [[str(j["id"]), j["name"], j["config"], _state(j), f"{j['step']}/{j['max_steps']}",
             render.fmt_num(j["loss"], 3), fmt_bytes(j.get("disk_bytes") or 0),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(j["created"])) if j.get("created") else "-"]
            for j in jobs]
    return render.fit_table(LS_HEADERS, rows, width, LS_DROP, ("STATE", "NAME"))
