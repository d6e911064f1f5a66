"""The state store under hostile conditions: one run per state, and every failure a clear error.

Each failure is a StateError (a ConfigurationError) whose text names the state file and the
way out (another state file, or none); a held state is a StateLockedError naming the other
run's pid.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import kimi_files._state as state_mod
from kimi_files._state import POLL_INTERVAL, StateStore, describe_failure
from kimi_files.errors import ConfigurationError, StateError, StateLockedError

#: a locked store's way out is waiting: another state file would store the files twice
LOCKED_WAY_OUT = ("(Another state file or none, --state NEW or --no-state, would not know what "
                  "that run uploads: the same files may be stored twice.)")
WAY_OUT = ("Use another state file (--state NEW; in Python state='NEW') "
           "or none (--no-state; state=False).")

HOLDER = """
import sys
from kimi_files._state import StateStore
store = StateStore(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
store.close()
print("released", flush=True)
"""


@contextmanager
def holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the state until a line is written to it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "released\n"


def lock_is_free(path: Path) -> bool:
    """Whether nobody holds the store's lock (taken and dropped again at once; a lock file
    gone with its run is free)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def failure(path: Path, **kwargs: bool | float) -> StateError:
    """The StateError that opening ``path`` raises; its text names the file and the way out."""
    with pytest.raises(StateError) as info:
        StateStore(path, **kwargs)
    err = info.value
    assert isinstance(err, ConfigurationError)
    way_out = LOCKED_WAY_OUT if isinstance(err, StateLockedError) else WAY_OUT
    assert str(err).startswith(f"state file {path} ") and str(err).endswith(way_out)
    assert err.path == str(path)
    return err


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file or folder read-only (for root too: the immutable attribute)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("cannot make a file read-only for root here (no chattr +i)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


def a_store_with_rows(path: Path, rows: int = 300) -> bytes:
    with StateStore(path) as store:
        for i in range(rows):
            store.done(f"/data/{i:04d}.txt", size=i, mtime_ns=i, sha256="ab" * 32,
                       filename=f"{i:04d}.txt", file_id=f"file-{i:04d}")
    return path.read_bytes()


# --- one run per state ------------------------------------------------------------------------


def test_a_second_store_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as first:
        err = failure(path)
        assert isinstance(err, StateLockedError) and err.pid == os.getpid()
        assert f"is in use by this process (pid {os.getpid()})" in str(err)
        assert "pass --wait (wait=True in Python) to wait for it" in str(err)
        # never sent down the path that stores the files twice without a warning
        assert "Use another state file" not in str(err)
        assert str(err).endswith("would not know what that run uploads: the same files may be "
                                 "stored twice.)")
        first.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")  # still works
    with StateStore(path) as second:  # closed: free again
        assert [r.filename for r in second.records()] == ["a"]


def test_a_second_run_is_refused_naming_the_other_runs_pid(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with holder(path) as proc:
        err = failure(path)
        assert isinstance(err, StateLockedError) and (err.pid, err.path) == (proc.pid, str(path))
        assert str(err).startswith(f"state file {path} is in use by another run (pid {proc.pid}): "
                                   "one run per state file. Wait for it to finish, or pass --wait")
        release(proc)
        StateStore(path).close()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with holder(path) as proc:
        assert isinstance(failure(path), StateLockedError)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with StateStore(path) as store:
            assert store.records() == []


def test_wait_true_waits_for_the_other_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    waiting = threading.Event()
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        waiting.set()
        threading.Event().wait(0.01)

    monkeypatch.setattr(state_mod, "_poll_sleep", pause)
    got: list[StateStore | BaseException] = []

    def open_waiting() -> None:
        try:
            got.append(StateStore(path, wait=True))
        except BaseException as exc:
            got.append(exc)

    with holder(path) as proc:
        waiter = threading.Thread(target=open_waiting)
        waiter.start()
        assert waiting.wait(30), "the second store never waited"
        assert not got  # still waiting while the other run holds the state
        release(proc)
        waiter.join(30)
    assert len(got) == 1 and isinstance(got[0], StateStore)
    with got[0] as store:
        store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
    assert pauses and set(pauses) == {POLL_INTERVAL}


def test_wait_seconds_then_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    now = [1000.0]
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(state_mod, "_clock", lambda: now[0])
    monkeypatch.setattr(state_mod, "_poll_sleep", pause)
    with StateStore(path):
        err = failure(path, wait=1.5)
    assert isinstance(err, StateLockedError) and err.pid == os.getpid()
    assert "in use by this process" in str(err) and " after waiting 1.5 s: " in str(err)
    assert sum(pauses) == pytest.approx(1.5) and max(pauses) <= POLL_INTERVAL
    assert len(pauses) == 8  # 7 full pauses and the rest
    assert lock_is_free(path)


@pytest.mark.parametrize("wait", [-1, float("nan"), float("inf"), "5"])
def test_wait_must_be_a_sane_number(tmp_path: Path, wait: object) -> None:
    with pytest.raises(ConfigurationError, match="wait must be True, False or a number"):
        StateStore(tmp_path / "s.db", wait=wait)  # type: ignore[arg-type]
    assert not (tmp_path / "s.db").exists()


# --- every failure is a StateError naming the file and the way out ------------------------------


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    junk = os.urandom(8192)
    path.write_bytes(junk)
    err = failure(path)
    assert "is damaged or not an SQLite database (file is not a database); " \
           "move it aside to start afresh" in str(err)
    assert path.read_bytes() == junk and lock_is_free(path)


@pytest.mark.parametrize("keep", [0.5, 0.25, 60])
def test_a_half_written_store(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "s.db"
    data = a_store_with_rows(path)
    cut = data[:int(len(data) * keep)] if keep < 1 else data[:int(keep)]
    path.write_bytes(cut)
    err = failure(path)
    assert "is damaged or not an SQLite database (" in str(err)
    assert "move it aside to start afresh" in str(err)
    assert path.read_bytes() == cut and lock_is_free(path)


def test_a_store_damaged_inside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    data = bytearray(a_store_with_rows(path))
    # inside the rows of a leaf page: the header and schema are intact
    start = data.index(b"file-0150") - 20
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    err = failure(path)
    assert "is damaged or not an SQLite database (integrity check: " in str(err)
    assert path.read_bytes() == data and lock_is_free(path)


@pytest.mark.parametrize("other_schema", [
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
    "CREATE TABLE uploads (id INTEGER PRIMARY KEY, url TEXT)",  # same table name, not ours
])
def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path,
                                                             other_schema: str) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute(other_schema)
    db.commit()
    db.close()
    before = path.read_bytes()
    err = failure(path)
    assert "is not a kimi-files state file (another program's database?); leave it alone" \
           in str(err)
    assert path.read_bytes() == before  # not even switched to WAL


def test_a_folder_in_place_of_the_store(tmp_path: Path) -> None:
    (tmp_path / "s.db").mkdir()
    assert str(failure(tmp_path / "s.db")) == f"state file {tmp_path / 's.db'} is a folder, " \
                                               f"not a file. {WAY_OUT}"


def test_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "s.db")
    assert "is not a regular file. " in str(failure(tmp_path / "s.db"))


def test_its_folder_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    err = failure(tmp_path / "state" / "s.db")
    assert f"cannot be created: {tmp_path / 'state'} is a file, not a folder. " in str(err)
    deeper = failure(tmp_path / "state" / "sub" / "s.db")
    assert f"cannot be created: its folder {tmp_path / 'state' / 'sub'} cannot be reached: part " \
           "of its folder path is a file, not a folder. " in str(deeper)


def test_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a_store_with_rows(path, rows=3)
    with read_only(path):
        err = failure(path)
    assert "cannot be written: the file or its folder is read-only (attempt to write a " \
           "readonly database)" in str(err)
    assert lock_is_free(path)


def test_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    with read_only(folder):  # a new store: not even its lock can be made
        err = failure(folder / "s.db")
    assert f"cannot be locked: its lock file {folder / 's.db.lock'} cannot be used: " in str(err)
    a_store_with_rows(folder / "s.db", rows=3)
    with read_only(folder):  # an existing store: its journal cannot be made
        err = failure(folder / "s.db")
    # (as root, with the folder immutable, SQLite says it cannot open; as a user, it may
    # instead find the folder read-only: both name the cause)
    assert ("cannot be opened (unable to open database file); check that it and its folder are "
            "writable" in str(err)) or "read-only" in str(err)


# --- failures mid-run ---------------------------------------------------------------------------


def test_disk_full_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + 1}")  # as good as a full disk
        with pytest.raises(StateError) as info:
            for i in range(1000):
                store.done(f"/d/{i}", size=i, mtime_ns=i, sha256="ab" * 32, filename="x" * 200,
                           file_id=f"file-{i}")
        text = str(info.value)
        assert text.startswith(f"state file {path} cannot be written: the disk is full (")
        assert text.endswith(f"; free some space. {WAY_OUT}")
        assert store.integrity_ok()  # what was committed before is intact


def test_read_only_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        store._db.execute("PRAGMA query_only = 1")  # writes refused as on a read-only mount
        with pytest.raises(StateError) as info:
            store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
        assert str(info.value) == (
            f"state file {path} cannot be written: the file or its folder is read-only "
            f"(attempt to write a readonly database). {WAY_OUT}")
        with pytest.raises(StateError, match="read-only"):
            store.forget(tmp_path / "a")


@pytest.mark.parametrize("how", ["removed", "removed with its journal", "replaced"])
def test_a_store_removed_or_replaced_mid_run(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
        if how.startswith("removed"):
            path.unlink()
            if how == "removed with its journal":
                Path(f"{path}-wal").unlink()
                Path(f"{path}-shm").unlink()
        else:
            other = tmp_path / "other.db"
            StateStore(other).close()
            os.replace(other, path)
            replacement = path.read_bytes()
        words = "replaced by another file" if how == "replaced" else "removed"
        # honest about what a re-run can know: nothing this run (or any before it) uploaded
        after = ("what it recorded went with it: a re-run starts afresh and would upload again "
                 "every file already uploaded (this run's output lists their ids)"
                 if how.startswith("removed") else
                 "a re-run reads the new file, which does not know what was uploaded, and would "
                 "upload those files again (this run's output lists their ids)")
        expected = (f"the state file {path} was {words} while this run was using it; nothing "
                    f"more is recorded; {after}")
        for call in (
            lambda: store.done(tmp_path / "a", size=1, mtime_ns=1, sha256="h", filename="a",
                               file_id="x"),
            lambda: store.begin(tmp_path / "b", size=1, mtime_ns=1, sha256="", filename="b"),
            lambda: store.forget(tmp_path / "a"),
            store.records,
        ):
            with pytest.raises(StateError) as info:
                call()
            assert str(info.value) == expected and info.value.path == str(path)
    if how == "replaced":
        assert path.read_bytes() == replacement
    else:
        assert not path.exists()
    # this run's journal is not left by the name to be replayed into whatever takes it
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()
    with StateStore(path) as fresh:
        assert fresh.records() == [] and fresh.integrity_ok()


def test_a_store_moved_away_mid_run_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        for name in ("a", "b", "c"):
            store.done(tmp_path / name, size=1, mtime_ns=1, sha256="h", filename=name,
                       file_id=f"file-{name}")
        os.rename(path, tmp_path / "kept.db")  # its newest rows are still in s.db-wal
        with pytest.raises(StateError, match="was removed while this run was using it"):
            store.begin(tmp_path / "d", size=1, mtime_ns=1, sha256="", filename="d")
    with StateStore(tmp_path / "kept.db") as kept:
        assert [r.file_id for r in kept.records()] == ["file-a", "file-b", "file-c"]
    with StateStore(path) as fresh:  # and none of them replayed into a new store of that name
        assert fresh.records() == []


def test_its_lock_removed_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    expected = (f"the lock file {path}.lock (of the state file {path}) was %s while this run "
                "was using it; nothing more is recorded; a re-run resumes from what was "
                "recorded until then, but files this run uploaded after that are not known to it "
                "and would be uploaded again")
    with StateStore(path) as store:
        Path(f"{path}.lock").unlink()
        with pytest.raises(StateError) as info:
            store.begin(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a")
        assert str(info.value) == expected % "removed"
        # another run could now lock the state: this one has stopped writing
        with StateStore(path) as newcomer:
            newcomer.begin(tmp_path / "n", size=1, mtime_ns=1, sha256="", filename="n")
            with pytest.raises(StateError) as info:
                store.done(tmp_path / "a", size=1, mtime_ns=1, sha256="", filename="a",
                           file_id="x")
            assert str(info.value) == expected % "replaced by another file"
    with StateStore(path) as after:
        assert [r.filename for r in after.records()] == ["n"]


def test_a_closed_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = StateStore(path)
    store.close()
    store.close()  # again: nothing
    with pytest.raises(StateError) as info:
        store.get(tmp_path / "a")
    assert str(info.value) == (f"state file {path} is closed (this StateStore was closed). "
                               f"{WAY_OUT}")


def test_the_store_lists_its_files(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        assert [p.name for p in store.files] == ["s.db", "s.db-wal", "s.db-shm", "s.db.lock"]
        assert all(p.is_absolute() for p in store.files)


def test_failures_in_words_without_codes() -> None:
    # Python 3.10's sqlite3 errors carry no code: the text decides
    assert describe_failure(sqlite3.OperationalError("database or disk is full")) == (
        "cannot be written: the disk is full (database or disk is full); free some space")
    assert describe_failure(sqlite3.DatabaseError("file is not a database")).startswith(
        "is damaged or not an SQLite database")
    assert describe_failure(sqlite3.OperationalError("something else")) == (
        "failed (something else)")
    assert describe_failure(OSError(28, "No space left on device")) == (
        "cannot be written: the disk is full")
    assert describe_failure(OSError(99999, "odd")) == "cannot be used (odd)"
