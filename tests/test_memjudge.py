"""The runaway judgement on synthetic memory histories: baseline after set-up, growth projection."""

from __future__ import annotations

from macgpt.supervisor import memjudge as m

MB = 2**20
GB = 2**30


def history(sizes, dt: float = 0.25, training: bool = True) -> m.MemTrack:
    track = m.MemTrack()
    for i, size in enumerate(sizes):
        track = m.observe(track, 100.0 + i * dt, size, training)
    return track


def test_the_baseline_is_the_largest_size_of_the_settle_time_and_then_fixed() -> None:
    first_steps = [300 * MB, 500 * MB, 900 * MB, 800 * MB] + [850 * MB] * 40
    track = history(first_steps)
    assert track.baseline == 900 * MB
    assert m.runaway(track, 30.0, 16 * GB, 75.0) is None


def test_set_up_is_not_judged_and_resets_the_history() -> None:
    track = history([100 * MB * i for i in range(1, 60)], training=False)
    assert track == m.MemTrack()
    assert m.runaway(track, 74.0, 16 * GB, 75.0) is None


def test_growth_rate_is_the_fitted_slope() -> None:
    track = history([1 * GB + i * 25 * MB for i in range(40)])  # 25 MB every 0.25 s
    assert abs(m.growth_rate(track) - 100 * MB) < 1 * MB
    assert m.growth_rate(history([GB, GB])) is None  # too short a history


def test_steady_growth_that_would_reach_the_hard_limit_soon_is_a_runaway() -> None:
    track = history([GB] * 20 + [GB + i * 100 * MB for i in range(1, 21)])  # 400 MB/s
    why = m.runaway(track, 60.0, 16 * GB, 75.0)  # 2.4 GB of headroom: 6 s away
    assert why is not None and "past its 1024 MB after set-up" in why and "400 MB/s" in why


def test_slow_growth_far_from_the_hard_limit_is_not() -> None:
    track = history([GB] * 20 + [GB + i * 10 * MB for i in range(1, 30)])  # 40 MB/s, 12 GB headroom
    assert m.runaway(track, 0.0, 16 * GB, 75.0) is None
    assert m.runaway(track, 74.0, 16 * GB, 75.0) is not None  # the same growth near the limit is


def test_noise_around_a_large_stable_footprint_is_not_growth() -> None:
    sizes = [3 * GB + (40 * MB if i % 2 else 0) for i in range(200)]
    assert m.runaway(history(sizes), 70.0, 16 * GB, 75.0) is None
