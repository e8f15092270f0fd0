"""What `status` and `ls` show: filters by state and name, disk use per job, and the tables,
narrowed to the terminal by dropping the least useful columns first. Pure functions of the answer."""

from __future__ import annotations

import fnmatch
from typing import Any

from macgpt.client import lines as L
from macgpt.client import render, units
from macgpt.client.units import fmt_bytes

STATES = ("queued", "starting", "running", "paused", "completed", "failed", "cancelled")
STATUS_HEADERS = ["ID", "NAME", "CONFIG", "STATE", "STEP", "LOSS", "EVAL", "SPEED", "THREADS", "BATCH", "CPU",
                  "MEM", "DISK", "CKPT AGE"]
STATUS_DROP = ["THREADS", "BATCH", "CKPT AGE", "CONFIG", "EVAL", "CPU", "DISK", "SPEED", "MEM"]
LS_HEADERS = ["ID", "NAME", "CONFIG", "STATE", "STEP", "LOSS", "DISK", "CREATED"]
LS_DROP = ["CREATED", "CONFIG", "LOSS", "DISK"]
HEADERS_ZH = {"ID": "编号", "NAME": "名称", "CONFIG": "配置", "STATE": "状态", "STEP": "步骤", "LOSS": "损失",
              "EVAL": "评估", "SPEED": "速度", "THREADS": "线程", "BATCH": "批量", "CPU": "CPU", "MEM": "内存",
              "DISK": "磁盘", "CKPT AGE": "检查点距今", "CREATED": "创建时间"}
BATTERY_ZH = {"pause": "暂停", "throttle": "限速", "run": "照常运行"}


def _headings(names: list[str], lang: str) -> list[str]:
    return [HEADERS_ZH[n] for n in names] if lang == "zh" else names


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


def slots_line(daemon: dict[str, Any], jobs: list[dict[str, Any]], lang: str = "en") -> str:
    busy = sum(1 for j in jobs if j["state"] in ("starting", "running"))
    return f"{'槽位' if lang == 'zh' else 'slots'} {busy}/{daemon.get('max_concurrent', 1)}"


def wrap_parts(parts: list[str], width: int, sep: str = "; ") -> str:
    """``parts`` joined by ``sep``, starting a new line where the next would pass ``width`` columns."""
    lines = [parts[0]]
    for part in parts[1:]:
        if render.cells(lines[-1] + sep + part) > width:
            lines[-1] += sep.rstrip()
            lines.append("  " + part)
        else:
            lines[-1] += sep + part
    return "\n".join(lines)


def header_line(r: dict[str, Any], all_jobs: list[dict[str, Any]], width: int = 10**6, lang: str = "en") -> str:
    d = r["daemon"]
    zh = lang == "zh"
    total = f"{'磁盘' if zh else 'disk'} {fmt_bytes(r.get('disk_total') or 0)}"
    if not d.get("running", True):
        if zh:
            return wrap_parts([f"守护进程未运行（主目录 {d['home']}）", f"{len(all_jobs)} 个任务，{total}"], width, "；")
        return wrap_parts([f"daemon not running (home {d['home']})", f"{len(all_jobs)} job(s), {total}"], width)
    lim, gov = d["limits"], d.get("governor") or {}
    if zh:
        parts = [f"守护进程 pid {d['pid']}，已运行 {units.fmt_duration(d['uptime'])}，{slots_line(d, all_jobs, lang)}，{total}",
                 f"限制：CPU ≤ {lim['max_cpu']:g}%，内存 ≤ {lim['max_memory']:g}%，"
                 f"使用电池时{BATTERY_ZH.get(lim['on_battery'], lim['on_battery'])}"]
        governor = L.machine_zh(gov) if gov.get("message") else None
    else:
        parts = [f"daemon pid {d['pid']}, up {units.fmt_duration(d['uptime'])}, {slots_line(d, all_jobs)}, {total}",
                 f"limits: CPU ≤ {lim['max_cpu']:g}%, memory ≤ {lim['max_memory']:g}%, on battery: {lim['on_battery']}"]
        governor = gov.get("message")
    head = wrap_parts(parts + ([governor] if governor else []), width, "；" if zh else "; ")
    db = database_line(d, width, lang)
    return head + ("\n" + db if db else "")


def database_line(d: dict[str, Any], width: int = 10**6, lang: str = "en", now: float | None = None) -> str | None:
    """The daemon's database trouble, when there is any: errors since it started and what still
    waits to be written (the workers go on meanwhile); the last error's own words (English, from
    SQLite) on a line of their own in Chinese. None on a healthy daemon."""
    import time

    errors, pending, unstored = (int(d.get(k) or 0) for k in ("db_errors", "db_pending_changes", "db_unstored_events"))
    if not (errors or pending or unstored):
        return None
    last = d.get("db_last_error") or {}
    ago = units.fmt_duration(max(0.0, (now or time.time()) - last["time"])) if last.get("time") else None
    if lang == "zh":
        parts = [f"数据库：启动以来 {errors} 次错误" + (f"，最近一次在 {ago} 前" if ago else ""),
                 f"{pending} 个状态变更、{unstored} 个事件等待写入"]
        text = wrap_parts(parts, width, "；")
        return text + ("\n" + render._cut(f"database error ({last.get('where')}): {last['message']}", width)
                       if last.get("message") else "")
    parts = [f"database: {errors} error(s) since start", f"{pending} state change(s) and {unstored} event(s) "
             "waiting to be written"]
    if last.get("message"):
        parts.append(render._cut(f"last{f' {ago} ago' if ago else ''} ({last.get('where')}): {last['message']}",
                                 width - 2))  # the whole message is in --json and the daemon's log
    return wrap_parts(parts, width)


def _state(j: dict[str, Any], lang: str = "en") -> str:
    if lang == "zh":  # the reason may be free text in English: it gets a line of its own below the table
        return L.state_zh(j["state"])
    state = j["state"] + (f" ({j['reason']})" if j.get("reason") else "")
    return state if len(state) <= 48 else state[:47] + "…"


def status_row(j: dict[str, Any], lang: str = "en") -> list[str]:
    batch = "-" if j["batch_size"] is None else (
        f"{j['micro_batch']}/{j['batch_size']}" if j["micro_batch"] != j["batch_size"] else str(j["batch_size"]))
    return [
        str(j["id"]), j["name"], j["config"], _state(j, lang), f"{j['step']}/{j['max_steps']}",
        units.fmt_num(j["loss"], 3), units.fmt_num(j["eval_loss"], 3),
        "-" if j["steps_per_s"] is None else f"{j['steps_per_s']:.1f}/s",
        "-" if j["threads"] is None else str(j["threads"]), batch,
        "-" if j.get("cpu_percent") is None else f"{j['cpu_percent']:.0f}%",
        "-" if j["rss"] is None else fmt_bytes(j["rss"]), fmt_bytes(j.get("disk_bytes") or 0),
        units.fmt_duration(j["checkpoint_age"]),
    ]


def status_lines(r: dict[str, Any], jobs: list[dict[str, Any]], width: int, lang: str = "en") -> list[str]:
    """The table and the notes under it."""
    lines = [render.fit_table(_headings(STATUS_HEADERS, lang), [status_row(j, lang) for j in jobs], width,
                              STATUS_DROP, ("STATE", "NAME"), names=STATUS_HEADERS)]
    for j in jobs:
        lines += _notes_zh(j) if lang == "zh" else _notes(j, lines[0])
    return lines


def _notes(j: dict[str, Any], table: str) -> list[str]:
    out, full = [], j["state"] + (f" ({j['reason']})" if j.get("reason") else "")
    if j.get("governor"):
        out.append(f"job {j['id']}: {j['governor']}")
    if j.get("preparing"):
        out.append(f"job {j['id']}: preparing: {L.progress_text(j['preparing'])}")
    if j.get("warning") and j["state"] not in ("completed", "cancelled"):
        out.append(f"job {j['id']}: ⚠ {j['warning']}")
    if j.get("reason") and full not in table and j["state"] != "completed":  # cut in the table
        out.append(f"job {j['id']}: {j['state']}: {j['reason']}")
    return out


def _notes_zh(j: dict[str, Any]) -> list[str]:
    """The same notes in Chinese; a free-form English message (a warning, an error) stands alone."""
    out, jid = [], j["id"]
    if j.get("governor"):
        nums = {"ours_cpu": j.get("cpu_percent")} if j.get("cpu_percent") is not None else None
        out.append(f"任务 {jid}：{L.governor_zh(j.get('governor_state'), nums)}")
    if j.get("preparing"):
        out.append(f"任务 {jid}：准备中：{L.progress_zh(j['preparing'])}")
    if j.get("warning") and j["state"] not in ("completed", "cancelled"):
        out.append(f"job {jid}: ⚠ {j['warning']}")
    if j.get("reason") and j["state"] != "completed":
        reason = L.reason_zh(str(j["reason"]))
        out.append(f"任务 {jid}：{L.state_zh(j['state'])}（{reason}）" if reason else
                   f"job {jid}: {j['state']}: {j['reason']}")
    return out


def ls_lines(jobs: list[dict[str, Any]], width: int, lang: str = "en") -> str:
    import time

    rows = [[str(j["id"]), j["name"], j["config"], _state(j, lang), f"{j['step']}/{j['max_steps']}",
             units.fmt_num(j["loss"], 3), fmt_bytes(j.get("disk_bytes") or 0),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(j["created"])) if j.get("created") else "-"]
            for j in jobs]
    return render.fit_table(_headings(LS_HEADERS, lang), rows, width, LS_DROP, ("STATE", "NAME"), names=LS_HEADERS)
