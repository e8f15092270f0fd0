"""One language per line: every event line in Chinese (``zh``) or English (``en``), never mixed.

The language comes from ``--lang``, else ``$MACGPT_LANG``, else the locale (``zh*`` -> Chinese,
anything else -> English). Numbers and units (steps/s, tok/s, MB, s) stay as they are; text the
user wrote (prompts, samples, paths) is quoted as is. A free-form message from the daemon or
worker (a warning, an error, a governor explanation) exists only in English, so in Chinese the
governor's line names its state in Chinese and a warning or error line is printed wholly in English.
"""

from __future__ import annotations

import locale
import os
from collections.abc import Mapping
from typing import Any

from macgpt.client.units import fmt_bytes, fmt_duration

LANGS = ("zh", "en")
FREE_TEXT = frozenset({"warning", "interrupt", "error", "failed"})  # their message exists in English only
NO_LANGUAGE = ("c", "posix")  # a locale that names no language: the original guide's Chinese

GOVERNOR_ZH = {"full": "全速运行", "throttled": "已限速（减少线程或按比例暂停）", "stopped": "已暂停：其他程序占用 CPU 过多",
               "battery": "使用电池，已暂停", "memory": "内存紧张：减小批量或暂停", "hang": "无进展：重启工作进程",
               "failed": "内存多次超限：任务失败", "setup": "准备中：从第一步起调速", "paused": "被你暂停：恢复前不调速"}

W = {
    "zh": {"step": "步骤", "epoch": "轮次", "loss": "损失", "avg": "平均损失", "speed": "速度", "lr": "学习率",
           "threads": "线程", "batch": "批量", "rss": "内存"},
    "en": {"step": "step", "epoch": "epoch", "loss": "loss", "avg": "avg loss", "speed": "speed", "lr": "lr",
           "threads": "threads", "batch": "batch", "rss": "rss"},
}


def pick(explicit: str | None, env: Mapping[str, str]) -> str:
    """The language: --lang, then MACGPT_LANG, then LC_ALL / LC_MESSAGES / LANG (zh_CN.UTF-8 -> zh,
    en_US.UTF-8 or de_DE -> en; C and POSIX name no language and give zh, the guide's own)."""
    for value in (explicit, env.get("MACGPT_LANG"), env.get("LC_ALL"), env.get("LC_MESSAGES"), env.get("LANG")):
        if value:
            name = value.lower().split(".")[0]
            return "zh" if name.startswith("zh") or name in NO_LANGUAGE else "en"
    loc = (locale.getlocale()[0] or "c").lower()
    return "zh" if loc.startswith("zh") or loc in NO_LANGUAGE else "en"


def current() -> str:
    return pick(None, os.environ)


def metrics_line(d: dict[str, Any], lang: str) -> str:
    w = W[lang]
    batch = f"{d.get('batch_size')}" + (
        f" ({d['micro_batch']}x{d['batch_size'] // d['micro_batch']})"
        if d.get("micro_batch") and d.get("batch_size") and d["micro_batch"] != d["batch_size"] else ""
    )
    return (
        f"{w['step']} {d['step']:>5} | {w['epoch']} {d.get('epoch', 0):>3} | {w['loss']} {d['loss']:.4f} | "
        f"{w['avg']} {d['avg_loss']:.4f} | {w['speed']} {d.get('steps_per_s', 0):.1f} steps/s "
        f"({d.get('tokens_per_s', 0) / 1000:.1f}K tok/s) | {w['lr']} {d.get('lr', 0):.2e} | "
        f"{w['threads']} {d.get('threads')} | {w['batch']} {batch} | {w['rss']} {fmt_bytes(d.get('rss') or 0)}"
    )


def _zh(kind: str, d: dict[str, Any]) -> str | None:
    if kind == "sample":
        return f"🧪 生成测试 @{d['step']} - 输入: {d['prompt']!r} → {d['text']!r}"
    if kind == "eval":
        return f"📏 评估 @{d['step']}: 损失 {d['loss']:.4f} | 困惑度 {d['perplexity']:.1f} | {d['tokens']:,} 个词元"
    if kind == "checkpoint":
        why = _REASON_ZH.get(str(d.get("reason")), d.get("reason"))
        return f"💾 检查点 @{d['step']}（{why}，{fmt_bytes(d.get('bytes', 0))}，{d.get('seconds', 0):.3f}s）"
    if kind == "started":
        return f"🏃 训练：从第 {d['step']} 步到第 {d['max_steps']} 步（{d['threads']} 个线程，批量 {d['batch_size']}）"
    if kind == "paused":
        return f"⏸  在第 {d['step']} 步暂停（{_REASON_ZH.get(str(d.get('reason', 'user')), d.get('reason'))}）"
    if kind == "resumed":
        return f"▶  在第 {d['step']} 步继续"
    if kind == "stopped":
        return f"⏹  在第 {d['step']} 步停止，已保存检查点"
    if kind == "completed":
        ev = f"，评估损失 {d['eval_loss']:.4f}" if d.get("eval_loss") is not None else ""
        return f"✅ 完成 {d['step']} 步：训练损失（最后 20 步）{d['train_loss']:.4f}{ev}"
    if kind == "restarting":
        return f"🔁 工作进程崩溃；{d['in_seconds']:.0f}s 后从第 {d.get('from_step') or 0} 步重启（第 {d['crashes']} 次崩溃）"
    if kind == "gave_up":
        return f"❌ 崩溃 {d['crashes']} 次后放弃"
    if kind == "governor":
        return f"🛡  调速：{governor_zh(d.get('state'), d.get('readings'))}"
    if kind == "state":
        reason = d.get("reason")
        return f"• 状态：{_STATE_ZH.get(d['state'], d['state'])}" + (f"（{_REASON_ZH[reason]}）" if reason in _REASON_ZH else "")
    if kind == "setup":
        return _setup_zh(d)
    if kind == "progress":
        return "⏳ " + progress_zh(d)
    return None


def governor_zh(state: Any, readings: Mapping[str, Any] | None) -> str:
    """The governor's state in Chinese, with the readings it acted on: ``已限速（…）：其他程序 CPU 35%，…``."""
    text = GOVERNOR_ZH.get(str(state), f"状态 {state!r}")
    r = readings or {}
    nums = [f"其他程序 CPU {r['other_cpu']:.0f}%"] if r.get("other_cpu") is not None else []
    nums += [f"本任务 CPU {r['ours_cpu']:.0f}%"] if r.get("ours_cpu") is not None else []
    nums += [f"内存 {r['mem_percent']:.0f}%"] if r.get("mem_percent") is not None else []
    return text + (f"：{'，'.join(nums)}" if nums else "")


def machine_zh(summary: Mapping[str, Any]) -> str:
    """The daemon's reading of the machine (the English ``message`` of its summary), in Chinese."""
    return (f"本机 CPU {summary.get('total_cpu', 0):.0f}%（本程序 {summary.get('ours_cpu', 0):.0f}%；其他程序最近最高 "
            f"{summary.get('other_cpu', 0):.0f}%），内存 {summary.get('mem_percent', 0):.0f}%")


def state_zh(state: str) -> str:
    return _STATE_ZH.get(state, state)


def reason_zh(reason: str) -> str | None:
    """A job's reason in Chinese when it is one of the fixed ones; None for free text."""
    if reason in _REASON_ZH:
        return _REASON_ZH[reason]
    if reason.startswith("after job ") and reason[10:].isdigit():
        return f"等待任务 {reason[10:]} 完成"
    return None


def progress_zh(d: dict[str, Any]) -> str:
    """``编码语料：12.0/100.0 MB（5.1 MB/s，剩余 17s）`` from a "progress" event."""
    what = {"tokenizer": "训练分词器", "encode": "编码语料", "import": "加载 PyTorch", "eval": "评估",
            "final_eval": "最终评估", "sample": "生成"}.get(str(d.get("phase")), str(d.get("phase")))
    if d.get("note"):
        return f"{what}：{d['note']}"
    unit = {"chars": "字符", "texts": "条文本", "batches": "批", "modules": "个模块"}.get(str(d.get("unit", "")),
                                                                                   str(d.get("unit", "")))
    total = f"/{d['total']:,.1f}" if d.get("total") is not None else ""
    extra = [f"{d['rate']:,.1f} {unit}/s"] if d.get("rate") else []
    extra += [f"剩余 {fmt_duration(d['eta'])}"] if d.get("eta") is not None else []
    return f"{what}：{d.get('done', 0):,.1f}{total} {unit}" + (f"（{'，'.join(extra)}）" if extra else "")


_STATE_ZH = {"queued": "排队中", "starting": "启动中", "running": "运行中", "paused": "已暂停", "completed": "已完成",
             "failed": "失败", "cancelled": "已取消"}
_REASON_ZH = {"user": "用户", "cpu": "CPU", "memory": "内存", "battery": "电池", "periodic": "定期", "final": "最终",
              "request": "请求", "stop": "停止", "cancel": "取消"}


def _setup_zh(d: dict[str, Any]) -> str | None:
    phase = d.get("phase")
    if phase == "torch":
        return f"🔧 PyTorch 已加载（启动后 {d['seconds']:.1f}s）"
    if phase == "data":
        ev = f"；评估 {d['eval_texts']} 条文本" if d.get("eval_texts") else "；没有评估数据"
        if d.get("holdout"):
            ev = "；未给 --eval-data：按哈希留出约 2% 的文本用于评估（每次相同）"
        size = f"{d['bytes'] / 1e6:,.1f} MB" if "bytes" in d else f"{d['chars']:,} 个字符"
        return f"📚 数据：{d['texts']:,} 条文本，{size}{ev}"
    if phase == "tokenizer":
        how = {"trained": "已训练", "cache": "已复用（相同数据和词表）", "job": "已加载"}[d["origin"]]
        return f"🔤 分词器{how}：词表 {d['vocab_size']}，{d['path']}"
    if phase == "model":
        return (f"🧠 模型（{d['device']}）：块参数 {d['params_block']:,}，总参数 {d['params']:,}；"
                f"训练词元 {d['tokens']:,}（每轮 {d['chunks_per_epoch']} 段）")
    if phase == "resumed":
        return f"↩️  从第 {d['step']} 步恢复：{d['path']}"
    if phase == "initialized":
        return f"🌱 权重来自 {d['path']}（已训练 {d['from_step']} 步）；优化器和学习率计划重新开始"
    if phase == "spread":
        return (f"🔀 {d['world']} 个进程（每台机器 {d['nproc']} 个 x {d['nnodes']} 台，{d['backend']}）："
                f"第 {d['rank']} 号进程训练每批的第 {d['rows'][0]}-{d['rows'][1] - 1} 行")
    return None


def event_line(kind: str, d: dict[str, Any], lang: str | None = None) -> str | None:
    """One line for an event in ``lang`` (default: the current language), or None for events not worth a line."""
    lang = lang or current()
    if kind == "metrics":
        return metrics_line(d, lang)
    if lang == "zh" and kind not in FREE_TEXT:
        return _zh(kind, d)
    return english_event_line(kind, d)


def progress_info(d: dict[str, Any], governor: str, lang: str) -> str:
    """The progress bar's text after the bar (the bar itself is numbers only)."""
    w = W[lang]
    info = (f"{w['loss']} {d['loss']:.3f} | {d['steps_per_s']:.1f} steps/s | {w['threads']} {d['threads']} "
            f"| {w['batch']} {d['micro_batch']}/{d['batch_size']}")
    if governor:
        info += " | " + (GOVERNOR_ZH.get(governor, governor) if lang == "zh" else governor)
    return info


# -- English ------------------------------------------------------------------------------------
def english_event_line(kind: str, d: dict[str, Any]) -> str | None:
    """The English line of an event, or None for events not worth a line."""
    if kind == "metrics":
        return metrics_line(d, "en")
    if kind == "sample":
        return f"🧪 generation test @{d['step']} - prompt: {d['prompt']!r} → {d['text']!r}"
    if kind == "eval":
        return (f"📏 eval @{d['step']}: loss {d['loss']:.4f} | perplexity {d['perplexity']:.1f} | "
                f"{d['tokens']:,} tokens")
    if kind == "checkpoint":
        return f"💾 checkpoint @{d['step']} ({d.get('reason')}, {fmt_bytes(d.get('bytes', 0))}, {d.get('seconds', 0):.3f}s)"
    if kind == "setup":
        return setup_line(d)
    if kind == "progress":
        return "⏳ " + progress_text(d)
    return _control_line(kind, d)


def _control_line(kind: str, d: dict[str, Any]) -> str | None:
    if kind == "started":
        return f"🏃 training from step {d['step']} to {d['max_steps']} ({d['threads']} threads, batch {d['batch_size']})"
    if kind == "paused":
        return f"⏸  paused at step {d['step']} ({d.get('reason', 'user')})"
    if kind == "resumed":
        return f"▶  resumed at step {d['step']}"
    if kind == "stopped":
        where = f", checkpoint {d['checkpoint']}" if d.get("checkpoint") else ""
        return f"⏹  stopped at step {d['step']} ({d.get('reason')}){where}"
    if kind == "completed":
        ev = f", eval loss {d['eval_loss']:.4f}" if d.get("eval_loss") is not None else ""
        return f"✅ completed {d['step']} steps: train loss (last 20 steps) {d['train_loss']:.4f}{ev}"
    if kind in ("warning", "interrupt"):
        return f"⚠️  {d.get('message')}"
    if kind in ("error", "failed"):
        return f"❌ {d.get('message')}"
    if kind == "restarting":
        return (f"🔁 worker crashed ({d.get('last_error')}); restarting from step "
                f"{d.get('from_step') or 0} in {d['in_seconds']:.0f}s (crash {d['crashes']})")
    if kind == "gave_up":
        return f"❌ giving up after {d['crashes']} crashes: {d.get('last_error')}"
    if kind == "governor":
        return f"🛡  {d.get('message')}"
    if kind == "state":
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"• state: {d['state']}{reason}"
    return None


def setup_line(d: dict[str, Any]) -> str | None:
    phase = d.get("phase")
    if phase == "torch":
        return f"🔧 PyTorch loaded ({d['seconds']:.1f}s after start)"
    if phase == "data":
        ev = f"; eval {d['eval_texts']} texts" if d.get("eval_texts") else "; no eval data"
        if d.get("holdout"):
            ev = "; no --eval-data: ~2% of the texts (chosen by hash, always the same) held out for evaluation"
        size = f"{d['bytes'] / 1e6:,.1f} MB" if "bytes" in d else f"{d['chars']:,} characters"
        return f"📚 data: {d['texts']:,} texts, {size}{ev}"
    if phase == "tokenizer":
        how = {"trained": "trained", "cache": "reused (same data and vocab)", "job": "loaded"}[d["origin"]]
        return f"🔤 tokenizer {how}: vocab {d['vocab_size']}, {d['path']}"
    if phase == "model":
        return (f"🧠 model on {d['device']}: {d['params_block']:,} block params, {d['params']:,} total; "
                f"{d['tokens']:,} training tokens ({d['chunks_per_epoch']} chunks per epoch)")
    if phase == "resumed":
        return f"↩️  resumed from step {d['step']}: {d['path']}"
    if phase == "initialized":
        return f"🌱 weights from {d['path']} (trained {d['from_step']} steps); a fresh optimizer and schedule"
    if phase == "spread":
        return (f"🔀 {d['world']} ranks ({d['nproc']} per machine x {d['nnodes']} machine(s), {d['backend']}): "
                f"rank {d['rank']} trains rows {d['rows'][0]}-{d['rows'][1] - 1} of each batch")
    return None


def progress_text(d: dict[str, Any]) -> str:
    """``encode: 12.0/100.0 MB (5.1 MB/s, ETA 17s)`` from a "progress" event."""
    if d.get("note"):
        return f"{d.get('phase')}: {d['note']}"
    total = f"/{d['total']:,.1f}" if d.get("total") is not None else ""
    rate = f" ({d['rate']:,.1f} {d.get('unit', '')}/s" if d.get("rate") else " ("
    eta = f", ETA {fmt_duration(d['eta'])})" if d.get("eta") is not None else ")"
    what = {"tokenizer": "training the tokenizer", "encode": "encoding the corpus"}.get(str(d.get("phase")), d.get("phase"))
    return f"{what}: {d.get('done', 0):,.1f}{total} {d.get('unit', '')}{rate}{eta}".replace(" ()", "")
