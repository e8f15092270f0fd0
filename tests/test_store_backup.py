"""Issue 11, item 12: the database copy made at each start and clean stop is checked before it
replaces the previous one, so damage that appeared during a run never overwrites the last good copy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from macgpt.supervisor.store import JobStore, StoreError


def test_damage_during_a_run_is_never_copied_over_the_last_good_backup(tmp_path: Path) -> None:
    db = tmp_path / "macgpt.sqlite3"
    store = JobStore(db)
    for i in range(40):
        store.create(f"job{i}", "tiny", {"x": "y" * 200}, 10)
    good = store.backup()
    assert good.stat().st_mode & 0o077 == 0
    before = good.read_bytes()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    with open(db, "r+b") as f:  # a few pages of the jobs table go bad on disk mid-run
        f.seek(4096 * 2)
        f.write(b"\xa5" * 4096 * 3)
    store.db = sqlite3.connect(db, isolation_level=None)  # the running daemon now reads the damaged file
    with pytest.raises(StoreError, match=r"integrity check failed.*kept the last good copy"):
        store.backup()
    assert good.read_bytes() == before  # the good copy is untouched
    store.db.close()
    copy = sqlite3.connect(good)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 40
    copy.close()
