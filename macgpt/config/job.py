"""A job's full specification: preset, model and training fields, data files, resource limits.

Built once at the edge (CLI or daemon) from a preset plus overrides, validated, and written as
``job.json`` in the job's directory, where the worker reads it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from macgpt.config.limits import Limits
from macgpt.config.presets import get_preset
from macgpt.config.schema import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    check_model,
    check_train,
    from_dict,
    section_of,
    stored_model_config,
    with_overrides,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class JobSpec:
    config: str
    model: ModelConfig
    train: TrainConfig
    data: tuple[str, ...] = ()  # empty: the built-in dataset
    eval_data: tuple[str, ...] = ()  # empty: the built-in test set when data is built in
    name: str = ""
    limits: Limits = field(default_factory=Limits)
    own_limits: dict[str, Any] = field(default_factory=dict)  # the limits this job set for itself
    # {"train": manifest, "eval": manifest | None}: the files validated at submit (data.sources)
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "name": self.name,
            "model": asdict(self.model),
            "train": asdict(self.train),
            "data": list(self.data),
            "eval_data": list(self.eval_data),
            "limits": self.limits.to_dict(),
            "own_limits": dict(self.own_limits),
            "manifest": self.manifest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        return cls(
            config=str(d["config"]),
            name=str(d.get("name", "")),
            model=stored_model_config(d["model"]),
            train=check_train(from_dict(TrainConfig, d["train"])),
            data=tuple(str(p) for p in d.get("data", ())),
            eval_data=tuple(str(p) for p in d.get("eval_data", ())),
            limits=Limits.from_dict(d.get("limits", {})),
            own_limits=_own_limits(d.get("own_limits", {})),
            manifest=d.get("manifest") or {},
        )

    def save(self, path: Path) -> None:
        from macgpt.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"name={name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no path separators, no '..')"
        )
    return name


def parse_set(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["n_embd=128", ...]`` into a dict; ConfigError for a pair without '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set n_embd=128")
        out[key.strip()] = value.strip()
    return out


def build_spec(
    config: str,
    overrides: dict[str, Any] | None = None,
    data: list[str] | tuple[str, ...] = (),
    eval_data: list[str] | tuple[str, ...] = (),
    name: str = "",
    limits: Limits | None = None,
    own_limits: dict[str, Any] | None = None,
) -> JobSpec:
    """Preset ``config`` with validated overrides (any model or training field, by name)."""
    preset = get_preset(config)
    by_section: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in (overrides or {}).items():
        if value is not None:
            by_section[section_of(key)][key] = value
    model = with_overrides(preset.model, by_section["model"])
    if "dropout" not in by_section["model"]:  # each recipe's own default
        model = dataclasses.replace(model, dropout=preset.model_for(model.recipe).dropout)
    model = check_model(model)
    train = with_overrides(preset.train_for(model.recipe), by_section["train"])
    if train.warmup_steps >= train.steps and train.warmup_steps > 0:
        train = dataclasses.replace(train, warmup_steps=max(0, train.steps // 10))
    check_train(train)
    return JobSpec(
        config=config,
        model=model,
        train=train,
        data=tuple(str(Path(p).expanduser().resolve()) for p in data),
        eval_data=tuple(str(Path(p).expanduser().resolve()) for p in eval_data),
        name=check_name(name) if name else config,
        limits=limits or Limits(),
        own_limits=_own_limits(own_limits or {}),
    )


def _own_limits(d: Any) -> dict[str, Any]:
    """A job's own limits, validated (only the fields it set)."""
    if not isinstance(d, dict):
        raise ConfigError(f"limits: expected a mapping, got {type(d).__name__}")
    checked = Limits().updated(d)
    return {k: getattr(checked, k) for k, v in d.items() if v is not None}
