"""Metrics on the command line, plots, TensorBoard export: real files, real CLI processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from macgpt import metricsfile
from macgpt.client.observe import sparkline
from macgpt.client.plot import stretches

from .conftest import MACGPT, env_with_home


def fake_run(d: Path, steps: int = 200, scale: float = 1.0, t0: float = 1000.0) -> Path:
    """A metrics file in the shape the worker and daemon write, through the real writer."""
    d.mkdir(parents=True, exist_ok=True)
    path = metricsfile.path_in(d)
    metricsfile.append(path, "governor", {"state": "full", "message": "full speed"}, now=t0)
    for step in range(10, steps + 1, 10):
        t = t0 + step
        if step == 60:
            metricsfile.append(path, "governor", {"state": "throttled", "message": "throttled to 1 thread"}, now=t - 5)
        if step == 100:
            metricsfile.append(path, "governor", {"state": "full", "message": "full speed"}, now=t - 5)
        if step == 150:
            metricsfile.append(path, "state", {"step": step - 1, "state": "paused", "message": "user"}, now=t - 8)
            metricsfile.append(path, "state", {"step": step - 1, "state": "resumed", "message": None}, now=t - 2)
        metricsfile.append(path, "train", {"step": step, "loss": scale * (7.5 - step / 60), "avg_loss": 7.0,
                                           "lr": 1e-3, "tokens_per_s": 20_000 - step * 10, "steps_per_s": 5.0,
                                           "threads": 2, "batch_size": 48, "micro_batch": 48,
                                           "cpu_percent": 55.0, "rss": 3e8}, now=t)
        if step % 50 == 0:
            metricsfile.append(path, "eval", {"step": step, "eval_loss": scale * (8 - step / 100),
                                              "perplexity": 900.0, "tokens": 3000}, now=t + 0.5)
    return d


def test_stretches_turn_decisions_into_throttled_and_paused_spans(tmp_path: Path) -> None:
    records = metricsfile.read(metricsfile.path_in(fake_run(tmp_path))).records
    assert stretches(records) == [(1055.0, 1095.0, "throttled"), (1142.0, 1148.0, "paused")]
    open_end = [{"t": 1.0, "kind": "governor", "state": "stopped"}, {"t": 4.0, "kind": "train", "step": 10}]
    assert stretches(open_end) == [(1.0, 4.0, "paused")]


def test_sparkline_spans_the_whole_history() -> None:
    assert sparkline([8.0, 6.0, 4.0, 2.0]) == "█▆▃▁"
    assert sparkline([1.0, None, 1.0]) == "▁ ▁"
    long = sparkline([100.0 - i for i in range(100)], width=10)
    assert len(long) == 10 and long[0] == "█" and long[-1] == "▁"


def _png_pixels(path: Path):  # -> numpy array
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def _has_color(img, hex_color: str) -> bool:
    import numpy as np

    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool((np.abs(img[..., :3] - rgb).max(axis=-1) < 0.02).sum() > 200)


@pytest.mark.parametrize("jobs", [1, 3])
def test_plot_writes_a_png_with_one_curve_colour_per_job(home: Path, jobs: int) -> None:
    runs = [str(fake_run(home / f"run{i}", scale=1 + i / 10)) for i in range(jobs)]
    out = home / "plot.png"
    r = subprocess.run([MACGPT, "plot", *runs, "--out", str(out)], env=env_with_home(home),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    img = _png_pixels(out)
    assert img.shape[0] > 500 and img.shape[1] > 800
    cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    assert [_has_color(img, c) for c in cycle] == [i < jobs for i in range(4)]


def test_metrics_cli_prints_csv_and_refuses_an_unknown_job(home: Path) -> None:
    run = fake_run(home / "jobs" / "000007", steps=30)
    r = subprocess.run([MACGPT, "metrics", "7", "--csv"], env=env_with_home(home), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("t,kind,step,loss") and len(lines) == 1 + len(metricsfile.read(metricsfile.path_in(run)).records)
    assert lines[2].startswith("1010.0,train,10,7.3333")
    r = subprocess.run([MACGPT, "metrics", "8"], env=env_with_home(home), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "job 8: no directory" in r.stderr


def test_tensorboard_export_round_trips_through_tensorboards_reader(home: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    run = fake_run(home / "run")
    out = home / "tb"
    r = subprocess.run([MACGPT, "export", str(run), "--tensorboard", str(out)], env=env_with_home(home),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    acc = EventAccumulator(str(out), size_guidance={"tensors": 0})  # 0: keep every point
    acc.Reload()
    tags = set(acc.Tags()["tensors"])  # the v2 writer stores scalars as tensors of the scalars plugin
    assert acc.SummaryMetadata("loss/train").plugin_data.plugin_name == "scalars"

    def series(tag: str) -> list[tuple[int, float, float]]:
        return [(e.step, float(make_ndarray(e.tensor_proto)), e.wall_time) for e in acc.Tensors(tag)]

    assert {"loss/train", "loss/eval", "speed/tokens_per_s", "resources/cpu_percent", "governor/level"} <= tags
    train = metricsfile.read(metricsfile.path_in(run)).of("train")
    got = series("loss/train")
    assert [s for s, _, _ in got] == [r["step"] for r in train]
    assert [round(v, 4) for _, v, _ in got] == [round(r["loss"], 4) for r in train]
    assert [w for _, _, w in got] == [r["t"] for r in train]
    assert [(s, v) for s, v, _ in series("loss/eval")] == [(50, 7.5), (100, 7.0), (150, 6.5), (200, 6.0)]
    assert [v for _, v, _ in series("governor/level")] == [0.0, 1.0, 0.0]


def test_the_status_sparkline_comes_from_the_metrics_file(tmp_path: Path) -> None:
    from macgpt.client.observe import loss_line

    assert loss_line(tmp_path) is None
    line = loss_line(fake_run(tmp_path), width=20)
    assert line.startswith("loss ") and line.endswith(" 7.333 → 4.167")
    bars = line.split()[1]
    assert len(bars) == 20 and bars[0] == "█" and bars[-1] == "▁" and list(bars) == sorted(bars, reverse=True)


def test_a_restart_from_a_checkpoint_plots_each_step_once_the_latest_kept() -> None:
    from macgpt.client.plot import latest_per_step

    records = [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 4.0}, {"step": 10, "loss": 4.9}, {"step": 20, "loss": 3.9}]
    assert latest_per_step(records) == [{"step": 10, "loss": 4.9}, {"step": 20, "loss": 3.9}]
