"""Model export: safetensors + tokenizer + config, loaded back with identical samples; a
directory that does not match its model is refused before anything is allocated."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from macgpt.ckptformat import CheckpointError
from macgpt.worker import offline
from macgpt.worker.export import export, load_dir
from macgpt.worker.loop import TrainingLoop
from macgpt.worker.sampling import SampleParams

from .conftest import MACGPT
from .helpers import trainer
from .test_loop import ScriptedLink


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("job")
    tr = trainer(steps=30, log_interval=10, sample_interval=0, eval_interval=0, checkpoint_interval=0)
    assert TrainingLoop(tr, d, ScriptedLink(tr, {})).run() == "completed"
    return d


def test_export_and_reimport_give_identical_samples_and_loss(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    cfg = export(trained / "final_model.pt", out, {"name": "tiny-test", "job": None, "last": {"step": 30, "loss": 5.0}})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    assert cfg["step"] == 30 and json.loads((out / "config.json").read_text())["model_config"]["n_embd"] > 0
    assert "train loss at step 30: 5.0000" in (out / "README.md").read_text()
    for seed in (0, 7):
        params = SampleParams(max_new_tokens=24, seed=seed, temperature=0.9)
        a, _ = offline.sample(trained / "final_model.pt", "你好，", params)
        b, loaded = offline.sample(out, "你好，", params)
        assert a.text == b.text and a.tokens == b.tokens
    assert loaded.step == 30
    from macgpt.data.sources import validate

    data = validate([str(Path(__file__).parent.parent / "macgpt" / "data" / "pretrain_test.jsonl")])
    assert offline.evaluate(out, data)["loss"] == offline.evaluate(trained / "final_model.pt", data)["loss"]


@pytest.mark.slow  # two CLI processes that load torch
def test_the_cli_samples_and_evaluates_an_exported_directory(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    r = subprocess.run([MACGPT, "export", str(trained), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    runs = [subprocess.run([MACGPT, "sample", "你好，", "--model", str(m), "--seed", "3", "-n", "16"],
                           capture_output=True, text=True, timeout=120) for m in (trained / "final_model.pt", out)]
    assert [x.returncode for x in runs] == [0, 0] and runs[0].stdout == runs[1].stdout and runs[0].stdout.startswith("你好，")
    r = subprocess.run([MACGPT, "evaluate", "--model", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 30


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_a_config_that_does_not_match_the_weights_is_refused_before_allocation(trained: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    export(trained / "final_model.pt", good, {})
    wrong = _copy(good, tmp_path / "wrong")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["model_config"]["n_embd"] *= 2
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor '.*' is F32\[.*\], the model in config.json needs"):
        load_dir(wrong)
    huge = _copy(good, tmp_path / "huge")
    cfg["model_config"].update(n_embd=4096, n_head=64, n_layer=48, vocab_size=65536, block_size=4096)
    (huge / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing \['blocks\.1"):  # a 10 GB model is never built (meta device)
        load_dir(huge)


def test_a_truncated_weights_file_is_refused_by_the_cli_with_its_name(trained: Path, tmp_path: Path) -> None:
    d = tmp_path / "cut"
    export(trained / "final_model.pt", d, {})
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) - 100])
    r = subprocess.run([MACGPT, "sample", "你好，", "--model", str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "model.safetensors: tensor" in r.stderr and "data bytes" in r.stderr
    (d / "config.json").write_text("{\n  oops")
    r = subprocess.run([MACGPT, "evaluate", "--model", str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "config.json:2: not valid JSON" in r.stderr
