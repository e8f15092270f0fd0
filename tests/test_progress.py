"""Progress reports of work that is not a step: rate limits, only real movement, the import watch."""

from __future__ import annotations

import sys
import threading
import time

from macgpt.worker.progress import Reporter, counted, watching_imports


class Sent:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, kind: str, **fields) -> None:
        self.events.append({"kind": kind, **fields})


def test_a_reporter_sends_when_due_and_always_the_last_count() -> None:
    now = [0.0]
    sent = Sent()
    rep = Reporter(sent, "encode", total=100, unit="texts", every=0.5, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.01  # 1 s in all: two or three reports, then the last
        rep.advance()
    rep.finish()
    assert 2 <= len(sent.events) <= 4
    assert sent.events[-1]["done"] == 100 and sent.events[-1]["total"] == 100
    assert all(e["kind"] == "progress" and e["phase"] == "encode" for e in sent.events)
    last = sent.events[-1]
    assert last["eta"] == 0 and last["rate"] > 0


def test_nothing_moved_nothing_sent() -> None:
    sent = Sent()
    rep = Reporter(sent, "eval", every=0.0)
    rep.finish()
    rep.advance(0)
    assert sent.events == []


def test_counted_passes_items_through_and_counts_them() -> None:
    sent = Sent()
    rep = Reporter(sent, "tokenizer", total=5, every=0.0)
    assert list(counted(range(5), rep)) == [0, 1, 2, 3, 4]
    assert [e["done"] for e in sent.events] == [1, 2, 3, 4, 5]
    assert list(counted(["a"], None)) == ["a"]


def test_the_import_watch_reports_modules_as_they_load_and_stops_after() -> None:
    sent = Sent()
    with watching_imports(sent, every=0.05):
        time.sleep(0.15)
        import json.tool  # noqa: F401  (something new to load)
        for i in range(3):
            sys.modules[f"_macgpt_fake_module_{i}"] = sys  # the count moves as an import would
            time.sleep(0.1)
    n = len(sent.events)
    assert n >= 2 and all(e["phase"] == "import" for e in sent.events)
    counts = [e["done"] for e in sent.events]
    assert counts == sorted(set(counts))  # each report is new movement
    time.sleep(0.2)
    assert len(sent.events) == n and not [t for t in threading.enumerate() if t.name == "import-progress"]
    for i in range(3):
        del sys.modules[f"_macgpt_fake_module_{i}"]
