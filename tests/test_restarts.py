"""Crash restarts: straight back once, then exponential back-off, then give up."""

from macgpt.supervisor.restarts import RestartPolicy, next_restart

POLICY = RestartPolicy(max_crashes=5, window=600, base_delay=0.5, max_delay=3)


def test_backoff_then_give_up() -> None:
    crashes: list[float] = []
    delays = []
    for t in range(6):
        crashes.append(float(t))
        delays.append(next_restart(crashes, float(t), POLICY))
    assert delays == [0.0, 0.5, 1.0, 2.0, None, None]


def test_old_crashes_leave_the_window_and_delays_are_capped() -> None:
    assert next_restart([0.0, 1.0, 2.0, 3.0, 700.0], 700.0, POLICY) == 0.0
    big = RestartPolicy(max_crashes=50, base_delay=1, max_delay=3)
    assert next_restart([float(t) for t in range(20)], 20.0, big) == 3
