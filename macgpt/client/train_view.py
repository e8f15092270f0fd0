"""What `macgpt train` prints before and after the run: the system, model, configuration, data and
limits, then the summary, in Chinese or English (the guide's train_optimized.py header)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from macgpt.client import lines, sysinfo
from macgpt.client.status_view import BATTERY_ZH
from macgpt.client.units import fmt_bytes
from macgpt.config.estimate import RUNTIME_BYTES, estimate
from macgpt.config.job import JobSpec


def header(spec: JobSpec, job_dir: Path) -> None:
    info = sysinfo.system_info()
    m, t = spec.model, spec.train
    e = estimate(m, t.batch_size)
    zh = lines.current() == "zh"
    data = ", ".join(Path(p).name for p in spec.data) or "pretrain_200.jsonl"
    threads = t.threads or ("全部" if zh else "all")
    bar = "=" * 72
    click.echo(bar)
    click.echo(f"🚀 macgpt train {spec.config}  →  {job_dir}")
    click.echo(bar)
    if zh:
        battery = BATTERY_ZH.get(spec.limits.on_battery, spec.limits.on_battery)
        out = [
            f"系统：{info['platform']} | {info['cpu_count']} 核 | 内存共 {info['memory_gb']} GB，"
            f"可用 {info['available_memory_gb']} GB",
            f"模型：{m.n_layer} 层 x {m.n_embd} 宽，{m.n_head} 个注意力头，上下文 {m.block_size}，词表 {m.vocab_size}，"
            f"丢弃率 {m.dropout}",
            f"参数：块参数 {e.params_block:,}（指南的计数），含嵌入共 {e.params_total:,}",
            f"内存估计：权重 {fmt_bytes(e.weights_bytes)}，训练 {fmt_bytes(e.training_bytes)}（批量 {t.batch_size} 时的权重、"
            f"梯度、优化器状态和激活）+ 运行时约 {fmt_bytes(RUNTIME_BYTES)}",
            f"训练：{t.steps} 步，批量 {t.batch_size}，学习率 {t.lr:g}（预热 {t.warmup_steps} 步，余弦降到 "
            f"{t.lr * t.min_lr_ratio:g}），随机种子 {t.seed}，线程 {threads}，设备 {'自动' if t.device == 'auto' else t.device}",
            f"数据：{data if spec.data else '内置（指南的 200 条训练文本）'}；"
            f"每 {t.sample_interval} 步用 {t.sample_prompt!r} 做一次生成测试",
            f"限制：CPU ≤ {spec.limits.max_cpu:g}%，内存 ≤ {spec.limits.max_memory:g}%，使用电池时{battery}",
        ]
    else:
        out = [
            f"system: {info['platform']} | {info['cpu_count']} cores | memory {info['memory_gb']} GB total, "
            f"{info['available_memory_gb']} GB available",
            f"model:  {m.n_layer} layer(s) x {m.n_embd} wide, {m.n_head} heads, context {m.block_size}, "
            f"vocab {m.vocab_size}, dropout {m.dropout}",
            f"params: {e.params_block:,} in blocks (the guide's count), {e.params_total:,} with embeddings",
            f"memory estimate: weights {fmt_bytes(e.weights_bytes)}, training {fmt_bytes(e.training_bytes)} "
            f"(weights + grads + optimizer + activations at batch {t.batch_size}) + ~{fmt_bytes(RUNTIME_BYTES)} runtime",
            f"train:  {t.steps} steps, batch {t.batch_size}, lr {t.lr:g} (warm-up {t.warmup_steps}, cosine to "
            f"{t.lr * t.min_lr_ratio:g}), seed {t.seed}, threads {threads}, device {t.device}",
            f"data:   {data}{'' if spec.data else ' (built in)'}; generation test every {t.sample_interval} steps "
            f"with {t.sample_prompt!r}",
            f"limits: CPU ≤ {spec.limits.max_cpu:g}%, memory ≤ {spec.limits.max_memory:g}%, "
            f"on battery: {spec.limits.on_battery}",
        ]
    for line in out:
        click.echo(line)
    click.echo("-" * 72)


def footer(s: dict[str, Any]) -> None:
    click.echo("-" * 72)
    for line, err in footer_lines(s, lines.current()):
        click.echo(line, err=err)


def footer_lines(s: dict[str, Any], lang: str) -> list[tuple[str, bool]]:
    """The summary after `macgpt train`: (line, to stderr) pairs in ``lang``."""
    zh = lang == "zh"
    if s["result"] == "completed":
        ev = ((f"，评估损失 {s['eval_loss']:.4f}" if zh else f", eval loss {s['eval_loss']:.4f}")
              if s["eval_loss"] else "")
        peak, est = fmt_bytes(s["peak_rss"] or 0), fmt_bytes(s["estimated_training_bytes"])
        if zh:
            return [(f"完成：用时 {s['wall_seconds']:.1f}s（训练 {s['train_seconds']:.1f}s），训练损失 "
                     f"{s['train_loss']:.4f}{ev}", False),
                    (f"最终模型：{s['final_model']}", False),
                    (f"内存峰值：实测常驻内存 {peak}（估计：训练 {est} + 运行时约 {fmt_bytes(RUNTIME_BYTES)}）", False),
                    (f"试一试：  macgpt sample \"你好，\" --model {s['final_model']}", False)]
        return [(f"done in {s['wall_seconds']:.1f}s wall ({s['train_seconds']:.1f}s training): "
                 f"train loss {s['train_loss']:.4f}{ev}", False),
                (f"final model: {s['final_model']}", False),
                (f"peak memory: {peak} RSS measured (estimate: {est} training + ~{fmt_bytes(RUNTIME_BYTES)} runtime)",
                 False),
                (f"try it:      macgpt sample \"你好，\" --model {s['final_model']}", False)]
    if s["result"] == "stopped":
        return [(f"在第 {s['steps']} 步停止；再次运行同一命令即可从检查点继续" if zh else
                 f"stopped at step {s['steps']}; run the same command again to continue from the checkpoint", False)]
    why = s["error"] or "the worker exited unexpectedly"  # free text: English, on a line of its own
    return [(f"failed: {why} (see {s['job_dir']}/worker.log)", True)]
