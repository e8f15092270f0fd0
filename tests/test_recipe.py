"""Recipes: modern by default, classic selectable with its own defaults, old checkpoints and jobs read as classic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from macgpt.config.job import JobSpec, build_spec
from macgpt.config.presets import PRESETS
from macgpt.config.schema import ConfigError
from macgpt.worker import checkpoint
from macgpt.worker.offline import load_model
from macgpt.worker.sampling import SampleParams, sample_text
from macgpt.worker.setup import ResumeError, check_resumable

from .helpers import trainer


def legacy_state(tr) -> dict:
    """A checkpoint as the code before recipes wrote it: no recipe in its model config."""
    state = tr.state_dict()
    state["model_config"] = {k: v for k, v in state["model_config"].items() if k != "recipe"}
    return state


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_defaults_to_modern_and_keeps_classic_selectable(name: str) -> None:
    modern, classic = build_spec(name), build_spec(name, {"recipe": "classic"})
    assert modern.model.recipe == "modern" and classic.model.recipe == "classic"
    assert classic.train == PRESETS[name].train_for("classic")
    assert build_spec(name, {"recipe": "classic", "lr": "0.003"}).train.lr == 0.003
    with pytest.raises(ConfigError, match=r"recipe='new'.*one of modern, classic"):
        build_spec(name, {"recipe": "new"})


def test_a_job_file_without_a_recipe_is_classic() -> None:
    d = build_spec("tiny").to_dict()
    del d["model"]["recipe"]
    assert JobSpec.from_dict(d).model.recipe == "classic"


def test_an_old_checkpoint_loads_samples_and_resumes_as_classic(tmp_path: Path) -> None:
    old = trainer(model={"recipe": "classic"})
    for _ in range(5):
        old.train_step()
    path = checkpoint.save_final(tmp_path, legacy_state(old))
    loaded = load_model(path)
    assert loaded.model.cfg.recipe == "classic" and loaded.model.wpe is not None
    for name, tensor in old.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name])
    params = SampleParams(max_new_tokens=12, seed=1, stop_at_im_end=False)
    assert sample_text(loaded.model, old.tokenizer, "你好，", params).text == old.sample("你好，", params).text
    state = checkpoint.load_file(path)
    check_resumable(state, trainer(model={"recipe": "classic"}), path)  # the classic recipe continues it
    with pytest.raises(ResumeError, match="recipe: checkpoint classic vs now modern"):
        check_resumable(state, trainer(), path)
    resumed = trainer(model={"recipe": "classic"})
    resumed.load_state_dict(state)
    resumed.train_step()
    old.train_step()
    assert all(torch.equal(a, b) for a, b in zip(old.model.parameters(), resumed.model.parameters(), strict=True))


def test_modern_checkpoint_samples_offline(tmp_path: Path) -> None:
    tr = trainer()
    for _ in range(5):
        tr.train_step()
    loaded = load_model(checkpoint.save_final(tmp_path, tr.state_dict()))
    assert loaded.model.cfg == dataclasses.replace(tr.model_cfg) and loaded.model.wpe is None
    params = SampleParams(max_new_tokens=12, seed=1, stop_at_im_end=False)
    assert sample_text(loaded.model, tr.tokenizer, "你好，", params).text == tr.sample("你好，", params).text
