"""Issue 11, item 5: a valid-looking sample request (temperature 1e-300, NaN penalties) never kills
the training worker and never gives a traceback: refused by the protocol's own rule (daemon, CLI,
worker alike), and any sampling failure is an error reply while training goes on."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from macgpt import protocol
from macgpt.worker.loop import TrainingLoop
from macgpt.worker.sampling import SampleParams, generate_ids

from .conftest import MACGPT
from .helpers import trainer
from .test_loop import ScriptedLink


@pytest.mark.parametrize(("name", "value"), [("temperature", 1e-300), ("temperature", math.nan),
                                             ("temperature", math.inf), ("repetition_penalty", math.nan),
                                             ("top_p", math.nan), ("temperature", 11.0)])
def test_absurd_values_are_refused_by_the_protocol_and_by_sample_params(name: str, value: float) -> None:
    with pytest.raises(protocol.ProtocolError, match=name) as e:
        protocol.parse_request(protocol.make_request(1, "sample", {"prompt": "你好", name: value}))
    assert e.value.code == protocol.ErrorCode.INVALID
    with pytest.raises(ValueError, match=name):
        SampleParams(**{name: value})


def test_greedy_and_small_temperatures_still_pass() -> None:
    for t in (0.0, 0.01, 10.0):
        assert protocol.parse_request(protocol.make_request(1, "sample", {"prompt": "x", "temperature": t}))
        assert SampleParams(temperature=t).temperature == t


@pytest.mark.parametrize("args", [["--temperature", "nan"], ["--temperature", "1e-300"],
                                  ["--repetition-penalty", "nan"], ["--top-p", "nan"], ["--temperature", "abc"]])
def test_the_cli_refuses_them_with_one_line_and_exit_2(args: list[str], home: Path) -> None:
    r = subprocess.run([MACGPT, "sample", "你好", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and args[0] in r.stderr


def test_a_failing_sample_is_an_error_reply_and_training_goes_on(tmp_path: Path) -> None:
    tr = trainer(steps=20, sample_interval=0, checkpoint_interval=0, checkpoint_seconds=0)
    script = {5: [{"cmd": "sample", "rid": 1, "args": {"prompt": "你好", "temperature": 1e-300}},
                  {"cmd": "sample", "rid": 2, "args": {"prompt": "你好", "no_such_field": 1}},
                  {"cmd": "sample", "rid": 3, "args": {"temperature": 0.5}},
                  {"cmd": "sample", "rid": 4, "args": {"prompt": "你好", "temperature": 0.01, "top_k": 1,
                                                        "top_p": 0.0, "repetition_penalty": 10.0,
                                                        "max_new_tokens": 8}}]}
    link = ScriptedLink(tr, script)
    assert TrainingLoop(tr, tmp_path, link).run() == "completed"  # before: RuntimeError out of the loop
    replies = {r["rid"]: r for r in link.kinds("reply")}
    assert [replies[i]["ok"] for i in (1, 2, 3, 4)] == [False, False, False, True]
    assert "temperature" in replies[1]["error"]
    assert replies[4]["result"]["text"].startswith("你好")


def test_non_finite_logits_are_a_value_error_not_a_multinomial_crash() -> None:
    tr = trainer()
    with torch.no_grad():
        tr.model.wte.weight.fill_(math.nan)
    with pytest.raises(ValueError, match="no valid probabilities"):
        generate_ids(tr.model, [1, 2, 3], SampleParams(temperature=1.0, max_new_tokens=4), None)
