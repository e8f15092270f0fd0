"""`--init-from`: a new run starts from another model's weights, shape and tokenizer (fine-tuning
on new data), through the real foreground supervisor and worker; bad values are refused first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from macgpt.worker import checkpoint

from ..conftest import MACGPT, REAL_CHAT
from ..helpers import trainer


def train_json(*args: str) -> tuple[int, list[dict], str]:
    r = subprocess.run([MACGPT, "train", *args, "--json", "--max-cpu", "100"], capture_output=True, text=True,
                       timeout=400)
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stderr


def test_init_from_a_model_fine_tunes_with_its_shape_and_tokenizer(home: Path, tmp_path: Path) -> None:
    tr = trainer(model={"block_size": 16, "n_embd": 48})  # not tiny's shape: the shape must come with the weights
    for _ in range(3):
        tr.train_step()
    (tmp_path / "src").mkdir()
    source = checkpoint.save_final(tmp_path / "src", {**tr.state_dict(), "kind": "final"})
    code, events, err = train_json("tiny", "--init-from", str(source), "--data", str(REAL_CHAT / "eval.jsonl"),
                                   "--steps", "4", "--batch-size", "4", "--threads", "1", "--out", str(home / "ft"))
    assert code == 0, err
    [init] = [e for e in events if e["event"] == "setup" and e.get("phase") == "initialized"]
    assert init["path"] == str(source) and init["from_step"] == 3
    [tok] = [e for e in events if e["event"] == "setup" and e.get("phase") == "tokenizer"]
    assert tok["origin"] == "job" and tok["vocab_size"] == tr.tokenizer.vocab_size  # the source's tokenizer
    [model] = [e for e in events if e["event"] == "setup" and e.get("phase") == "model"]
    assert model["params"] == tr.model.num_params()
    final = checkpoint.load_file(Path(events[-1]["final_model"]))
    assert final["step"] == 4 and final["model_config"]["n_embd"] == 48 and final["model_config"]["block_size"] == 16


def test_init_from_refuses_what_is_not_a_model(home: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    for value, needle in ((str(notes), "macgpt checkpoint"), (str(tmp_path / "gone.pt"), "file not found"),
                          ("7", "job 7 does not exist")):
        r = subprocess.run([MACGPT, "submit", "tiny", "--init-from", value], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and f"--init-from {value}: " in r.stderr and needle in r.stderr, r.stderr
