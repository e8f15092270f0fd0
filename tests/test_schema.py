"""Configuration fields: parsing, ranges, --set, presets, job specs."""

from __future__ import annotations

import pytest

from macgpt.config.estimate import count_params, estimate
from macgpt.config.job import JobSpec, build_spec, check_name, parse_set
from macgpt.config.limits import Limits
from macgpt.config.presets import PRESETS, get_preset
from macgpt.config.schema import ConfigError, ModelConfig, TrainConfig, with_overrides


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", "0", "steps='0' is out of range: expected int >= 1"),
        ("steps", "-5", "out of range"),
        ("steps", "abc", "steps='abc': expected int"),
        ("lr", "0", "lr='0' is out of range: expected float > 0"),
        ("lr", "nan", "expected float"),
        ("batch_size", "0", "batch_size='0' is out of range"),
        ("vocab_size", "259", "vocab_size='259' is out of range: expected int >= 260"),
        ("dropout", "1.5", "dropout='1.5' is out of range"),
        ("device", "tpu", "one of auto, cpu, mps, cuda"),
        ("bias", "maybe", "true or false"),
        ("steps", "2.5", "expected int"),
    ],
)
def test_bad_values_name_field_value_and_range(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        build_spec("tiny", {field: value})


def test_overrides_reach_the_right_section() -> None:
    spec = build_spec("tiny", {"n_embd": "64", "steps": "17", "lr": "3e-3", "bias": "false", "threads": 1})
    assert spec.model.n_embd == 64 and spec.model.bias is False
    assert spec.train.steps == 17 and spec.train.lr == 3e-3 and spec.train.threads == 1
    assert spec.train.warmup_steps < 17  # warm-up shortened to fit a short run


def test_unknown_field_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean n_embd"):
        build_spec("tiny", {"n_emb": "64"})


def test_unknown_config_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        get_preset("tinny")


def test_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="n_embd=30 must be divisible by n_head=4"):
        build_spec("tiny", {"n_embd": "30", "n_head": "4"})


def test_parse_set_requires_key_value() -> None:
    assert parse_set(["n_embd=128", "lr = 0.1"]) == {"n_embd": "128", "lr": "0.1"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set(["n_embd"])


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "-x", "a" * 65, "名字"])
def test_job_names_without_path_tricks(name: str) -> None:
    with pytest.raises(ConfigError):
        check_name(name)


def test_spec_round_trips_through_json(tmp_path) -> None:
    spec = build_spec("small", {"steps": "5"}, name="run-1", limits=Limits(max_cpu=50))
    spec.save(tmp_path / "job.json")
    assert JobSpec.load(tmp_path / "job.json") == spec


def test_limits_ranges() -> None:
    with pytest.raises(ConfigError, match="max-cpu='0'"):
        Limits().updated({"max_cpu": "0"})
    with pytest.raises(ConfigError, match="max-memory='101'"):
        Limits().updated({"max_memory": "101"})
    assert Limits().updated({"max_memory": 50}).hard_memory_percent == 65


@pytest.mark.parametrize(("name", "target"), [("tiny", 13_500), ("small", 66_000), ("original", 2_500_000)])
def test_presets_match_the_guides_table_within_15_percent(name: str, target: int) -> None:
    block, total = count_params(get_preset(name).model)
    assert abs(block - target) / target <= 0.15
    assert total > block


def test_estimate_grows_with_batch() -> None:
    m = ModelConfig()
    assert estimate(m, 32).training_bytes > estimate(m, 4).training_bytes > 4 * estimate(m, 4).weights_bytes


def test_every_preset_value_is_within_its_field_bounds() -> None:
    import dataclasses

    for p in PRESETS.values():
        assert isinstance(p.train, TrainConfig)
        for cfg in (p.model, p.train):
            for f in dataclasses.fields(cfg):
                value = getattr(cfg, f.name)
                if isinstance(value, bool | int | float | str):  # parsed back through the schema's bounds
                    assert getattr(with_overrides(cfg, {f.name: str(value)}), f.name) == value, (p, f.name)


def test_limits_in_force_take_the_strictest_value_a_running_job_set() -> None:
    from macgpt.config.limits import Limits, in_force

    base = Limits(max_cpu=70, max_memory=60, on_battery="throttle")
    assert in_force(base, []) == base
    assert in_force(base, [{}]) == base
    both = in_force(base, [{"max_cpu": 90, "on_battery": "run"}, {"max_cpu": 50, "on_battery": "pause"}])
    assert (both.max_cpu, both.on_battery, both.max_memory) == (50, "pause", 60)
    assert in_force(base, [{"max_cpu": 100}]).max_cpu == 100  # a job may ask for more than the daemon's default
    assert in_force(Limits(max_memory=60, hard_memory=70), [{"max_memory": 80}]).max_memory == 80
