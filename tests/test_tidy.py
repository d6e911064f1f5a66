"""A tidy machine: lock files go with their run, state and cache files are listed and cleaned
(ours only, never in use), runs against an ephemeral emulator leave nothing, and the
emulator's storage folder survives a restart."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files import state as state_mod
from kimi_files.cache import ReuseCache
from kimi_files.emulator import Emulator
from kimi_files.errors import StateLockedError
from kimi_files.state import (
    StateFile,
    StateStore,
    clean_choice,
    file_kind,
    lock_held,
    loopback_port,
    remove_account,
    remove_account_files,
    state_files,
)

from .conftest import API_KEY, write


def test_the_lock_file_goes_with_its_run(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with StateStore(path) as store:
        assert store.lock_path.exists() and lock_held(store.lock_path)
    assert not store.lock_path.exists()
    assert path.exists()  # the state itself stays (it is what a re-run resumes from)
    StateStore(path).close()  # and the next run locks afresh


def test_a_run_waiting_on_a_removed_lock_file_takes_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The waiter opened the lock file before its holder removed it: it must not hold a lock
    on the removed file (that nobody else could see), but the one at the path."""
    path = tmp_path / "s.sqlite3"
    first = StateStore(path)
    waiting = threading.Event()
    real_sleep = state_mod._poll_sleep

    def sleep(seconds: float) -> None:
        waiting.set()
        real_sleep(0.01)

    monkeypatch.setattr(state_mod, "_poll_sleep", sleep)
    got: list[StateStore] = []
    t = threading.Thread(target=lambda: got.append(StateStore(path, wait=True)))
    t.start()
    assert waiting.wait(30)
    first.close()  # removes the lock file the waiter has open
    t.join(30)
    [second] = got
    try:
        assert second.lock_path.exists() and lock_held(second.lock_path)
        with pytest.raises(StateLockedError):
            StateStore(path)  # a third run sees the second's lock
    finally:
        second.close()


def _sqlite(path: Path, app_id: int = 0) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    if app_id:
        db.execute(f"PRAGMA application_id = {app_id}")
    db.commit()
    db.close()


def test_state_files_lists_ours_with_account_size_and_use(tmp_path: Path) -> None:
    StateStore(tmp_path / "127.0.0.1_8000-abcdef012345.sqlite3").close()
    ReuseCache(tmp_path / "127.0.0.1_8000-abcdef012345.cache.sqlite3").close()
    _sqlite(tmp_path / "someone_else-000000000000.sqlite3")  # not ours: not listed
    write(tmp_path / "junk.cache.sqlite3", "not a database")
    held = StateStore(tmp_path / "api.moonshot.ai_https-111111111111.sqlite3")
    try:
        found = {(f.account, f.kind): f for f in state_files(tmp_path)}
        assert set(found) == {("127.0.0.1_8000-abcdef012345", "state"),
                              ("127.0.0.1_8000-abcdef012345", "cache"),
                              ("api.moonshot.ai_https-111111111111", "state")}
        local = found[("127.0.0.1_8000-abcdef012345", "state")]
        assert local.size >= 4096 and abs(local.last_used - time.time()) < 3600
        assert not local.in_use
        assert found[("api.moonshot.ai_https-111111111111", "state")].in_use
    finally:
        held.close()


def test_file_kind_reads_the_header(tmp_path: Path) -> None:
    StateStore(tmp_path / "s.sqlite3").close()
    ReuseCache(tmp_path / "c.sqlite3").close()
    _sqlite(tmp_path / "other.sqlite3", app_id=0x12345678)
    assert file_kind(tmp_path / "s.sqlite3") == "state"
    assert file_kind(tmp_path / "c.sqlite3") == "cache"
    assert file_kind(tmp_path / "other.sqlite3") is None
    assert file_kind(tmp_path / "missing.sqlite3") is None


def _info(account: str, *, days: float, in_use: bool = False, kind: str = "state") -> StateFile:
    return StateFile(Path(f"/x/{account}.sqlite3"), kind, account, 1, 1000.0 - days * 86400,
                     in_use)


def test_clean_choice_takes_old_and_unreachable_never_in_use() -> None:
    old = _info("a_1-000000000001", days=40)
    young = _info("a_1-000000000002", days=1)
    gone = _info("127.0.0.1_5-000000000003", days=1)
    busy = _info("127.0.0.1_6-000000000004", days=400, in_use=True)
    picked = clean_choice([old, young, gone, busy], now=1000.0, older_than_days=30,
                          unreachable={gone.account, busy.account})
    assert picked == [old, gone]
    assert clean_choice([old, young], now=1000.0, older_than_days=None) == []


def test_loopback_port_reads_the_account_name() -> None:
    assert loopback_port("127.0.0.1_41234-abcdef012345") == 41234
    assert loopback_port("localhost_8000-abcdef012345") == 8000
    assert loopback_port("_1_8000-abcdef012345") == 8000  # ::1
    assert loopback_port("api.moonshot.ai_https-abcdef012345") is None
    assert loopback_port("example.com_8000-abcdef012345") is None


def test_remove_account_files_removes_ours_and_refuses_a_held_lock(tmp_path: Path) -> None:
    path = tmp_path / "127.0.0.1_9-abcdef012345.sqlite3"
    StateStore(path).close()
    [info] = state_files(tmp_path)
    with StateStore(path):
        with pytest.raises(StateLockedError, match="is in use by another run; nothing removed"):
            remove_account_files(info)
        assert path.exists()
    removed = remove_account_files(info)
    assert path in removed and not path.exists()
    assert os.listdir(tmp_path) == []


def test_remove_account_files_leaves_a_file_replaced_by_another_programs(tmp_path: Path) -> None:
    path = tmp_path / "127.0.0.1_9-abcdef012345.sqlite3"
    StateStore(path).close()
    [info] = state_files(tmp_path)
    for side in info.files:
        side.unlink(missing_ok=True)
    _sqlite(path)  # someone else's database took the name since it was listed
    assert remove_account_files(info) == []
    assert path.exists()


# --- the emulator ------------------------------------------------------------------------


def test_the_emulator_says_whether_its_files_outlive_it(tmp_path: Path) -> None:
    with Emulator(api_key=API_KEY) as emu, kf.KimiFiles(api_key=API_KEY,
                                                        base_url=emu.base_url) as c:
        c.list()
        assert c.emulator == "ephemeral" and c.ephemeral_server
    with Emulator(api_key=API_KEY, storage_dir=tmp_path / "store") as emu, \
            kf.KimiFiles(api_key=API_KEY, base_url=emu.base_url) as c:
        c.list()
        assert c.emulator == "persistent" and not c.ephemeral_server


def test_the_storage_dir_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    doc = write(tmp_path / "a.txt", "kept across restarts\n")
    with Emulator(api_key=API_KEY, storage_dir=store) as emu, \
            kf.KimiFiles(api_key=API_KEY, base_url=emu.base_url) as c:
        kept = c.upload(doc, reuse=False)
        gone = c.upload(write(tmp_path / "b.txt", "deleted\n"), reuse=False)
        c.delete(gone.id)
        emu.seed("seeded.pdf", 10)
    with Emulator(api_key=API_KEY, storage_dir=store) as emu, \
            kf.KimiFiles(api_key=API_KEY, base_url=emu.base_url) as c:
        listed = {f.id: f for f in c.list()}
        assert kept.id in listed and gone.id not in listed
        assert (listed[kept.id].filename, listed[kept.id].bytes) == ("a.txt", kept.bytes)
        assert sorted(f.filename for f in listed.values()) == ["a.txt", "seeded.pdf"]
        assert c.content(kept.id).text == "kept across restarts\n"
        assert c.upload(write(tmp_path / "c.txt", "new\n"), reuse=False).id not in listed


def test_a_run_against_an_ephemeral_emulator_leaves_nothing(tmp_path: Path) -> None:
    """The files the run kept at the default place (state, cache, lock) go when it ends."""
    doc = write(tmp_path / "in" / "a.txt", "a\n")
    with Emulator(api_key=API_KEY) as emu, kf.KimiFiles(api_key=API_KEY,
                                                        base_url=emu.base_url) as c:
        assert kf.ingest([doc], client=c).ok
        where = c.state_path()
        assert where.exists()
        c.close()
        assert c.ephemeral_server
        removed = remove_account(where)
    assert where in removed
    assert os.listdir(where.parent) == []
