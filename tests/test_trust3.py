"""Trust, round 3 (issue #16, part A): a lying clock, a changed file with its mtime put back,
a record written in one transaction, no key reachable from an error, and the copies a killed
run stores late."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files.state import StateStore

from .conftest import write


class _FailingOn:
    """A connection that fails the first statement containing ``text`` (as a kill or a full
    disk between two statements would), and passes everything else through."""

    def __init__(self, db: sqlite3.Connection, text: str) -> None:
        self._db, self._text, self.failed = db, text, False

    def execute(self, sql: str, *args: Any) -> Any:
        if self._text in sql and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


# --- 10. a record and the end of its attempt are one transaction ------------------------------


def test_done_failing_between_its_statements_keeps_the_attempt_open(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "some text\n")
    meta = {"size": 10, "mtime_ns": p.stat().st_mtime_ns, "sha256": "h", "filename": "a.txt"}
    with StateStore(tmp_path / "s.db") as store:
        attempt = store.begin(p, **meta, server_time=1000)
        real = store._db
        store._db = _FailingOn(real, "INSERT INTO uploads")  # type: ignore[assignment]
        with pytest.raises(kf.StateError, match="input/output error"):
            store.done(p, **meta, file_id="cl-1", settles=attempt)
        store._db = real
        # the attempt still says "this may be on the server": a re-run looks for it
        assert [a.id for a in store.attempts()] == [attempt]
        rec = store.get(p)
        assert rec is not None and rec.status == "pending"
        store.done(p, **meta, file_id="cl-1", settles=attempt)  # and the store still works
        assert store.attempts() == [] and store.get(p).file_id == "cl-1"  # type: ignore[union-attr]


def test_begin_failing_between_its_statements_leaves_no_half_intent(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "some text\n")
    meta = {"size": 10, "mtime_ns": p.stat().st_mtime_ns, "sha256": "h", "filename": "a.txt"}
    with StateStore(tmp_path / "s.db") as store:
        real = store._db
        store._db = _FailingOn(real, "INSERT INTO uploads")  # type: ignore[assignment]
        with pytest.raises(kf.StateError, match="input/output error"):
            store.begin(p, **meta, server_time=1000)
        store._db = real
        assert store.attempts() == [] and store.get(p) is None
