"""Fixtures of the live tests: no busy process of one test outlives it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .live import Hog


@pytest.fixture(autouse=True)
def _stop_leftover_hogs() -> Iterator[None]:
    yield
    for hog in list(Hog.running):
        hog.stop()
