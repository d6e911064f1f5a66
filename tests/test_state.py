"""The state store: rows before and after an upload, its location, no key in it."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._hashing import sha256_of
from kimi_files._state import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Record,
    StateStore,
    default_state_path,
)
from kimi_files.errors import StateError

from .conftest import API_KEY, write


def test_intent_then_done(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "abc")
    with StateStore(tmp_path / "s.db") as store:
        assert store.get(f) is None
        store.begin(f, size=3, mtime_ns=1, sha256="", filename="a.txt")
        rec = store.get(f)
        assert rec is not None and rec.status == "pending" and rec.file_id is None
        store.done(f, size=3, mtime_ns=1, sha256=sha256_of(f), filename="a.txt", file_id="x")
        rec = store.get(tmp_path / "." / "a.txt")  # the same file by another spelling
        assert rec is not None and (rec.status, rec.file_id) == ("uploaded", "x")
        assert rec.path == str(f) and rec.sha256 == sha256_of(f)
        assert store.integrity_ok()
    with StateStore(tmp_path / "s.db") as again:  # it persists
        assert [r.file_id for r in again.records()] == ["x"]


def test_non_utf8_paths_are_kept_exactly(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    name = os.fsdecode(raw)
    with StateStore(tmp_path / "s.db") as store:
        store.done(name, size=1, mtime_ns=1, sha256="h", filename="caf\ufffd.txt", file_id="y")
        assert store.get(name) is not None and store.records()[0].path == name


def test_location_per_account_and_base_url(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    a = default_state_path("https://api.moonshot.ai/v1", API_KEY)
    b = default_state_path("https://api.moonshot.cn/v1", API_KEY)
    c = default_state_path("https://api.moonshot.ai/v1", API_KEY + "x")
    assert a.parent == tmp_path / "xdg" / "kimi-files"
    assert len({a, b, c}) == 3
    assert API_KEY not in str(a) and a.name.startswith("api.moonshot.ai_https-")
    monkeypatch.setenv("KIMI_FILES_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_path("http://127.0.0.1:8000/v1", "k").parent == tmp_path / "explicit"


# --- schema v1: purpose and the server's clock; user_version; migration -----------------------

V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path      BLOB PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    filename  TEXT NOT NULL,
    file_id   TEXT,
    status    TEXT NOT NULL CHECK (status IN ('pending', 'uploaded')),
    updated   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_sha ON uploads (sha256);
"""


def _pragmas(db_path: Path) -> tuple[int, int]:
    db = sqlite3.connect(db_path)
    try:
        return (db.execute("PRAGMA user_version").fetchone()[0],
                db.execute("PRAGMA application_id").fetchone()[0])
    finally:
        db.close()


def test_purpose_and_server_time_are_kept(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
        rec = store.get(tmp_path / "a")
        assert rec is not None and (rec.purpose, rec.server_time) == ("file-extract", None)
        store.begin(tmp_path / "b", size=1, mtime_ns=1, sha256="", filename="b",
                    purpose="batch", server_time=1_700_000_123)
        rec = store.get(tmp_path / "b")
        assert rec is not None and (rec.status, rec.purpose, rec.server_time) == (
            "pending", "batch", 1_700_000_123)
        # the answer keeps the intent's clock, and takes the purpose it was stored under
        store.done(tmp_path / "b", size=1, mtime_ns=1, sha256="h", filename="b", file_id="f",
                   purpose="file-extract")
        rec = store.get(tmp_path / "b")
        assert rec is not None and (rec.status, rec.purpose, rec.server_time) == (
            "uploaded", "file-extract", 1_700_000_123)
        # a new attempt is a new intent with its own clock
        store.begin(tmp_path / "b", size=1, mtime_ns=1, sha256="h", filename="b",
                    server_time=1_700_000_999)
        rec = store.get(tmp_path / "b")
        assert rec is not None and (rec.status, rec.file_id, rec.server_time) == (
            "pending", None, 1_700_000_999)


def test_record_built_positionally_as_before() -> None:
    rec = Record("/p", 1, 2, "h", "p", None, "pending")
    assert (rec.purpose, rec.server_time) == ("file-extract", None)


def test_a_new_store_is_marked_with_its_schema_version(tmp_path: Path) -> None:
    StateStore(tmp_path / "s.db").close()
    assert _pragmas(tmp_path / "s.db") == (SCHEMA_VERSION, APPLICATION_ID) == (3, APPLICATION_ID)


def test_a_v0_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.executescript(V0_SCHEMA)
    db.execute("INSERT INTO uploads VALUES (?, 3, 7, 'h1', 'a.txt', 'file-a', 'uploaded', 1.0)",
               (os.fsencode(tmp_path / "a.txt"),))
    db.execute("INSERT INTO uploads VALUES (?, 4, 8, '', 'b.txt', NULL, 'pending', 2.0)",
               (os.fsencode(tmp_path / "b.txt"),))
    db.commit()
    db.close()
    inode = path.stat().st_ino
    with StateStore(path) as store:
        assert store.records() == [
            Record(str(tmp_path / "a.txt"), 3, 7, "h1", "a.txt", "file-a", "uploaded",
                   "file-extract", None),
            Record(str(tmp_path / "b.txt"), 4, 8, "", "b.txt", None, "pending",
                   "file-extract", None),
        ]
        store.begin(tmp_path / "c.txt", size=1, mtime_ns=1, sha256="", filename="c.txt",
                    server_time=42)
        rec = store.get(tmp_path / "c.txt")
        assert rec is not None and rec.server_time == 42
        # the pending row of the old store became an open attempt of the ledger (with no
        # start time: never adopted), beside the one just begun
        assert [(a.path, a.server_time) for a in store.attempts()] == [
            (str(tmp_path / "b.txt"), None), (str(tmp_path / "c.txt"), 42)]
        assert store.integrity_ok()
    assert path.stat().st_ino == inode and _pragmas(path) == (3, APPLICATION_ID)
    with StateStore(path) as again:  # opening a current store changes nothing
        assert len(again.records()) == 3 and len(again.attempts()) == 2


def test_a_store_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    with pytest.raises(StateError) as info:
        StateStore(path)
    text = str(info.value)
    assert text.startswith(f"state file {path} was made by a newer kimi-files (schema 4; "
                           "this one knows up to 3): upgrade kimi-files")
    assert "--state NEW" in text and "--no-state" in text and info.value.path == str(path)
    assert isinstance(info.value, kf.ConfigurationError)
    assert _pragmas(path) == (4, APPLICATION_ID)


def test_forget_deletes_a_row(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
        store.done(tmp_path / "b", size=1, mtime_ns=1, sha256="h", filename="b", file_id="x")
        assert store.forget(tmp_path / "." / "a") is True
        assert store.get(tmp_path / "a") is None
        assert store.forget(tmp_path / "a") is False
        assert [r.file_id for r in store.records()] == ["x"]


def test_threads_share_one_store(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        def work(t: int) -> None:
            for i in range(25):
                p = tmp_path / f"{t}-{i}"
                store.begin(p, size=i, mtime_ns=i, sha256="", filename=p.name, server_time=i)
                store.done(p, size=i, mtime_ns=i, sha256="h", filename=p.name, file_id=f"{t}-{i}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = store.records()
        assert len(records) == 200 and {r.status for r in records} == {"uploaded"}
        assert store.integrity_ok()


def test_the_ledger_keeps_attempts_until_they_are_settled(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        first = store.begin("/d/a.txt", size=1, mtime_ns=1, sha256="", filename="a.txt",
                            server_time=100)
        second = store.begin("/d/a.txt", size=1, mtime_ns=1, sha256="", filename="a.txt",
                             server_time=200)  # a re-run begins the same file again
        assert [a.id for a in store.attempts()] == [first, second]  # the first is kept
        store.done("/d/a.txt", size=1, mtime_ns=1, sha256="h", filename="a.txt",
                   file_id="f-1", settles=second)
        assert [a.id for a in store.attempts()] == [first]
        store.settle([first])
        assert store.attempts() == []
        store.note_suspects([("/d/a.txt", "f-9"), ("/d/a.txt", "f-9")])
        assert store.suspects() == {"f-9"}
        store.forget_suspects(["f-9"])
        assert store.suspects() == set()


def test_a_v1_store_is_migrated_to_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        store.begin("/d/a.txt", size=1, mtime_ns=1, sha256="", filename="a.txt", server_time=5)
    db = sqlite3.connect(path)  # make it what version 1 wrote: no ledger
    db.execute("DROP TABLE attempts")
    db.execute("DROP TABLE suspects")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with StateStore(path) as store:
        assert [(a.path, a.server_time) for a in store.attempts()] == [("/d/a.txt", 5)]
    assert _pragmas(path) == (3, APPLICATION_ID)


def test_a_stored_table_of_an_older_version_gains_created_at(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE stored; CREATE TABLE stored (file_id TEXT PRIMARY KEY, "
                     "path BLOB NOT NULL, filename TEXT NOT NULL, size INTEGER NOT NULL, "
                     "purpose TEXT NOT NULL, recorded REAL NOT NULL);"
                     "INSERT INTO stored VALUES ('old', '/d/a.txt', 'a.txt', 5, 'file-extract', 1);")
    db.close()
    with StateStore(path) as store:
        store.note_stored("/d/b.txt", file_id="new", filename="b.txt", size=6,
                          purpose="file-extract", created_at=1_760_000_000)
        assert [(c.file_id, c.created_at) for c in store.stored()] == [
            ("old", None), ("new", 1_760_000_000)]
