"""System facts for ``macgpt configs`` and the training header: platform, cores, memory, load."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from macgpt.config.estimate import RUNTIME_BYTES, estimate
from macgpt.config.presets import PRESETS


def system_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(vm.total / 2**30, 1),
        "available_memory_gb": round(vm.available / 2**30, 1),
    }


def current_usage(interval: float = 0.2) -> dict[str, float]:
    return {"cpu_percent": psutil.cpu_percent(interval=interval),
            "memory_percent": psutil.virtual_memory().percent}


def preset_report(max_memory_percent: float = 60.0) -> list[dict[str, Any]]:
    """Each preset's parameters and memory needs, and whether it fits this machine's budget."""
    vm = psutil.virtual_memory()
    budget = vm.total * max_memory_percent / 100 - (vm.total - vm.available)
    rows = []
    for p in PRESETS.values():
        e = estimate(p.model, p.train.batch_size)
        need = e.training_bytes + RUNTIME_BYTES
        rows.append({
            "name": p.name, "summary": p.summary,
            "n_layer": p.model.n_layer, "n_embd": p.model.n_embd, "n_head": p.model.n_head,
            "block_size": p.model.block_size, "vocab_size": p.model.vocab_size,
            "params_block": e.params_block, "params_total": e.params_total,
            "weights_bytes": e.weights_bytes, "training_bytes": e.training_bytes,
            "process_bytes": need, "batch_size": p.train.batch_size, "steps": p.train.steps,
            "lr": p.train.lr, "fits": need <= budget,
        })
    return rows
