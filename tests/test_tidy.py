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
from kimi_files import _state as state_mod
from kimi_files._cache import ReuseCache
from kimi_files._state import StateStore
from kimi_files._state_files import (
    StateFile,
    clean_choice,
    file_kind,
    lock_held,
    loopback_address,
    remove_account,
    remove_account_files,
    state_files,
)
from kimi_files.emulator import Emulator
from kimi_files.errors import StateLockedError

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


def test_loopback_address_reads_the_account_name() -> None:
    assert loopback_address("127.0.0.1_41234-abcdef012345") == ("127.0.0.1", 41234)
    assert loopback_address("localhost_8000-abcdef012345") == ("localhost", 8000)
    assert loopback_address("_1_8000-abcdef012345") == ("::1", 8000)
    assert loopback_address("api.moonshot.ai_https-abcdef012345") is None
    assert loopback_address("example.com_8000-abcdef012345") is None


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


# --- every option has a help line; the README's defaults are the code's ------------------

import argparse  # noqa: E402
import re  # noqa: E402


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from kimi_files.cli import _parser
    from kimi_files.cli._upload import _upload_parser
    from kimi_files.emulator.__main__ import _parser as emulator_parser

    found = [("kimi-upload", _upload_parser()),
             ("python -m kimi_files.emulator", emulator_parser())]
    todo = [("kimi-files", _parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
    return found


def test_every_option_and_positional_of_every_command_has_a_help_line() -> None:
    parsers = _parsers()
    names = {n for n, _ in parsers}
    assert {"kimi-files map", "kimi-files state", "kimi-files upload", "kimi-files cache",
            "kimi-files prune", "kimi-files messages"} <= names
    missing = []
    for name, parser in parsers:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_states_the_codes_defaults() -> None:
    from kimi_files._config import (
        CONNECT_TIMEOUT,
        MAX_FILE_BYTES,
        MAX_FILES,
        MAX_TOTAL_BYTES,
        READ_TIMEOUT,
        RetryPolicy,
    )
    from kimi_files.cli._upload import _upload_parser
    from kimi_files.emulator.__main__ import _parser as emulator_parser

    text = " ".join(README.read_text(encoding="utf-8").split())
    policy = RetryPolicy()
    upload = _upload_parser()
    defaults = {a.dest: a.default for a in upload._actions}
    claims = {
        # the CLI section
        rf"--timeout SECONDS per-request time-out \(default: {CONNECT_TIMEOUT:g} s connect, "
        rf"{READ_TIMEOUT:g} s answer\)": True,
        rf"The default read time-out is {READ_TIMEOUT:g} s": True,
        rf"--purpose P default {defaults['purpose']}": True,
        rf"--free-quota never\|oldest default {defaults['free_quota']}": True,
        rf"--concurrency N --rpm N bounded concurrency and pace \(default "
        rf"{defaults['concurrency']}[;)]": True,
        rf"--retries N retries per request \(default {policy.max_attempts - 1}\)": True,
        # the library's options and the retry policy
        rf"`max_retries`: retries after the first attempt \(default {policy.max_attempts - 1};":
            True,
        rf"\| `timeout` \| {policy.timeout:g} s \|": True,
        rf"\| `max_attempts` \| {policy.max_attempts} \|": True,
        rf"\| `initial_wait`, `max_wait`, `jitter` \| {policy.initial_wait:g} s, "
        rf"{policy.max_wait:g} s, {policy.jitter:g} s \|": True,
        rf"\| `max_server_wait` \| {policy.max_server_wait:g} s \|": True,
        # the limits
        rf"\| per-file cap \| 100 MiB = {MAX_FILE_BYTES:,} bytes": True,
        rf"\| files per account \| {MAX_FILES:,} \|": True,
        rf"\| bytes per account \| 10 GiB = {MAX_TOTAL_BYTES:,} bytes \|": True,
        # the emulator
        rf"python -m kimi_files.emulator --port {emulator_parser().get_default('port')}": True,
    }
    missing = [claim for claim in claims if not re.search(claim, text)]
    assert missing == []


# --- the command line: state list / clean, and ephemeral emulators ----------------------

import json  # noqa: E402

from kimi_files._state_files import default_state_dir, sweep_ephemeral  # noqa: E402
from kimi_files.cli import main, upload_main  # noqa: E402


def test_commands_against_ephemeral_emulators_leave_nothing_once_they_are_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """While an ephemeral emulator runs, its state resumes and its cache reuses as any
    server's; once it is gone, the next command removes what was kept for it."""
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    write(tmp_path / "in" / "a.txt", "a\n")
    folder = default_state_dir()
    with Emulator(api_key=API_KEY) as first:
        monkeypatch.setenv("MOONSHOT_BASE_URL", first.base_url)
        assert upload_main(["--no-progress", str(tmp_path / "in")]) == 0
        assert upload_main(["--no-progress", "--json", str(tmp_path / "in")]) == 0
        [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines()[-1:]]
        assert row["status"] == "skipped"  # resumed: the state is kept while it runs
        kept = sorted(os.listdir(folder))
        assert any(n.endswith(".ephemeral") for n in kept) and len(kept) >= 3
    with Emulator(api_key=API_KEY) as second:
        monkeypatch.setenv("MOONSHOT_BASE_URL", second.base_url)
        assert upload_main(["--no-progress", str(tmp_path / "in")]) == 0
        port = str(second.port)
        assert all(port in n for n in os.listdir(folder))  # the first's set is gone
    assert [p.name for p in sweep_ephemeral(folder)]  # and the second's, once it stops
    assert os.listdir(folder) == []


def test_a_persistent_emulators_state_is_never_swept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    write(tmp_path / "in" / "a.txt", "a\n")
    with Emulator(api_key=API_KEY, storage_dir=tmp_path / "store") as emu:
        monkeypatch.setenv("MOONSHOT_BASE_URL", emu.base_url)
        assert upload_main(["--no-progress", str(tmp_path / "in")]) == 0
    assert sweep_ephemeral(default_state_dir()) == []
    assert not any(n.endswith(".ephemeral") for n in os.listdir(default_state_dir()))
    assert len(state_files(default_state_dir())) == 2  # its state and cache


def test_state_lists_and_cleans_only_what_may_go(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = default_state_dir()
    old = folder / "api.moonshot.ai_https-000000000001.sqlite3"
    StateStore(old).close()
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    StateStore(folder / "127.0.0.1_9-000000000002.sqlite3").close()  # nothing on port 9
    ReuseCache(folder / "127.0.0.1_9-000000000002.cache.sqlite3").close()
    _sqlite(folder / "theirs-000000000003.sqlite3")  # another program's: never listed
    os.utime(folder / "theirs-000000000003.sqlite3", (time.time() - 400 * 86400,) * 2)
    held = StateStore(folder / "127.0.0.1_9-000000000004.sqlite3")
    try:
        assert main(["state", "--json"]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert {(r["account"], r["kind"], r["in_use"]) for r in rows} == {
            ("api.moonshot.ai_https-000000000001", "state", False),
            ("127.0.0.1_9-000000000002", "state", False),
            ("127.0.0.1_9-000000000002", "cache", False),
            ("127.0.0.1_9-000000000004", "state", True)}
        assert main(["state", "clean"]) == 2  # says what to remove
        assert "--older-than DAYS and/or --unreachable" in capsys.readouterr().err
        assert main(["state", "clean", "--older-than", "30", "--dry-run"]) == 0
        assert f"would remove {old}" in capsys.readouterr().out and old.exists()
        assert main(["state", "clean", "--older-than", "30", "--unreachable"]) == 0
        out, err = capsys.readouterr()
        assert f"removed {old} (unused for over 30 days)" in out
        assert "(unreachable)" in out and "1 file(s) in use by a live run, left alone" in err
        assert sorted(os.listdir(folder)) == [
            "127.0.0.1_9-000000000004.sqlite3", "127.0.0.1_9-000000000004.sqlite3-shm",
            "127.0.0.1_9-000000000004.sqlite3-wal", "127.0.0.1_9-000000000004.sqlite3.lock",
            "theirs-000000000003.sqlite3"]
    finally:
        held.close()


def test_a_database_with_our_mark_but_not_our_tables_is_not_ours(tmp_path: Path) -> None:
    _sqlite(tmp_path / "marked.sqlite3", app_id=state_mod.APPLICATION_ID)  # only a table "t"
    assert file_kind(tmp_path / "marked.sqlite3") is None
    assert state_files(tmp_path) == []


def test_a_state_file_that_cannot_be_removed_is_named(tmp_path: Path) -> None:
    path = tmp_path / "127.0.0.1_9-abcdef012345.sqlite3"
    StateStore(path).close()
    (tmp_path / f"{path.name}-wal").mkdir()  # something unlink cannot remove
    [info] = state_files(tmp_path)
    with pytest.raises(state_mod.StateError, match=(
            rf"{path.name}-wal cannot be removed \(is a folder, not a file\); remove it by hand")):
        remove_account_files(info)
    assert path.exists()  # the journal goes first: the database is left whole


def test_a_damaged_index_of_the_storage_dir_is_named(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "index.json").write_text("{not json")
    with pytest.raises(RuntimeError, match=(
            r"the emulator's index .*index\.json cannot be read \(.*\); move it aside to start "
            r"with an empty account")):
        Emulator(api_key=API_KEY, storage_dir=store)
