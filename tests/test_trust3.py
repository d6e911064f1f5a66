"""Trust, round 3 (issue #16, part A): a lying clock, a changed file with its mtime put back,
a record written in one transaction, no key reachable from an error, and the copies a killed
run stores late."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files._state import StateStore

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


# --- 11. nothing reachable from a raised error holds the key ----------------------------------

SECRET = "sk-REACHABLE0123456789abcdefXYZ"


def _reachable_strings(root: object) -> list[str]:
    """Every string or bytes reachable from ``root``: its context and cause, args, attributes,
    and the requests, responses, headers and containers they hold (not traceback frames)."""
    import httpx

    seen: set[int] = set()
    found: list[str] = []
    todo: list[object] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, (str, bytes, bytearray)):
            found.append(obj.decode("latin-1") if isinstance(obj, (bytes, bytearray)) else obj)
            continue
        if isinstance(obj, (int, float, bool, type)) or (callable(obj) and not isinstance(
                obj, BaseException)):
            continue
        if isinstance(obj, BaseException):
            todo += [obj.__context__, obj.__cause__, obj.args, str(obj), repr(obj)]
        if isinstance(obj, httpx.Headers):
            todo += list(obj.raw)
            continue
        if isinstance(obj, httpx.Request):
            todo += [obj.headers, str(obj.url), obj.extensions]
            continue
        if isinstance(obj, httpx.Response):
            todo += [obj.headers, obj._request, obj.extensions]
            continue
        if isinstance(obj, dict):
            todo += [*obj.keys(), *obj.values()]
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo += list(obj)
            continue
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            todo.append(attrs)
        for name in getattr(type(obj), "__slots__", ()):
            todo.append(getattr(obj, name, None))
    return found


def _status(code: int, body: dict[str, Any]) -> Any:
    import httpx

    return lambda request: httpx.Response(code, json=body)


def _raises(exc: type[Exception]) -> Any:
    def handler(request: Any) -> Any:
        raise exc("boom", request=request)

    return handler


@pytest.mark.parametrize("handler", [
    _status(401, {"error": {"type": "invalid_authentication_error", "message": "Invalid"}}),
    _status(429, {"error": {"type": "rate_limit_reached_error", "message": "slow down"}}),
    _status(500, {"error": {"type": "server_error", "message": "oops"}}),
    "refused",
    "read-timeout",
    "connect-timeout",
    "dropped",
    "echo",
], ids=["401", "429", "500", "refused", "read-timeout", "connect-timeout", "dropped",
        "not-json-echo"])
@pytest.mark.parametrize("call", ["list", "upload"])
def test_no_key_is_reachable_from_a_raised_error(handler: Any, call: str, tmp_path: Path,
                                                 no_wait: list[float]) -> None:
    import socket

    import httpx

    handlers = {"read-timeout": _raises(httpx.ReadTimeout),
                "connect-timeout": _raises(httpx.ConnectTimeout),
                "dropped": _raises(httpx.RemoteProtocolError),
                # a body that is not JSON and echoes the key (kept redacted, and its parser's
                # error, which holds the whole body, must not be reachable)
                "echo": lambda r: httpx.Response(200, content=r.headers["authorization"].encode())}
    if handler == "refused":
        with socket.socket() as s:  # a loopback port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = kf.KimiFiles(api_key=SECRET, base_url=f"http://127.0.0.1:{port}/v1",
                              max_retries=1, cache=False)
    else:
        transport = httpx.MockTransport(handlers.get(handler, handler))
        client = kf.KimiFiles(api_key=SECRET, base_url="http://127.0.0.1:9/v1", max_retries=1,
                              cache=False, http_client=httpx.Client(transport=transport))
    p = write(tmp_path / "a.txt", "some text\n")
    with client, pytest.raises(kf.KimiError) as info:
        client.list() if call == "list" else client.upload(p)
    leaks = [s for s in _reachable_strings(info.value) if SECRET in s]
    assert leaks == []


# --- 3. a file rewritten at the same size with its mtime put back is not skipped --------------


def _put_back_mtime(path: Path, content: bytes) -> None:
    import os

    st = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p, tar or rsync -t would


def test_a_same_size_rewrite_with_the_mtime_put_back_is_uploaded_again(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path) -> None:
    p = write(tmp_path / "in" / "report.txt", "version one of it\n")
    first = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert [r.status for r in first.results] == ["uploaded"]
    _put_back_mtime(p, b"version TWO of it\n")
    again = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = again.results
    assert result.status == "uploaded" and result.file_id != first.results[0].file_id
    assert client.content(result.file_id).text == "version TWO of it\n"
    # and now it is unchanged: skipped without being read
    third = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert [(r.status, r.file_id) for r in third.results] == [("skipped", result.file_id)]


def test_a_file_replaced_by_an_identical_copy_is_checked_by_its_hash(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path) -> None:
    import os
    import shutil

    from kimi_files._scan import _unchanged

    p = write(tmp_path / "in" / "report.txt", "the same words\n")
    first = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    with StateStore(tmp_path / "s.db") as store:
        rec = store.get(p)
    assert rec is not None and _unchanged(p, rec) is not None
    copy = write(tmp_path / "copy.txt", "the same words\n")
    shutil.copy2(p, copy)
    os.replace(copy, p)  # another inode, the same size, mtime and content
    assert _unchanged(p, rec) is None
    again = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert [(r.status, r.file_id) for r in again.results] == [
        ("skipped", first.results[0].file_id)]
    with StateStore(tmp_path / "s.db") as store:  # the record now names the new inode
        rec = store.get(p)
    assert rec is not None and rec.inode == p.stat().st_ino and _unchanged(p, rec) is not None


def test_a_v2_store_is_migrated_to_v3_and_its_records_are_checked_by_hash(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import APPLICATION_ID, SCHEMA_VERSION

    p = write(tmp_path / "in" / "report.txt", "version one of it\n")
    first = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    db = sqlite3.connect(tmp_path / "s.db")  # make it what version 2 wrote
    for column in ("ctime_ns", "inode", "device"):
        db.execute(f"ALTER TABLE uploads DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    _put_back_mtime(p, b"version TWO of it\n")
    again = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = again.results
    assert result.status == "uploaded" and result.file_id != first.results[0].file_id
    db = sqlite3.connect(tmp_path / "s.db")
    assert (db.execute("PRAGMA user_version").fetchone()[0],
            db.execute("PRAGMA application_id").fetchone()[0]) == (SCHEMA_VERSION, APPLICATION_ID)
    assert SCHEMA_VERSION == 3
    row = db.execute("SELECT ctime_ns, inode FROM uploads").fetchone()
    db.close()
    assert row == (p.stat().st_ctime_ns, p.stat().st_ino)


def test_attempts_an_older_version_left_are_migrated_unproven(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        store.begin("/d/a.txt", size=1, mtime_ns=1, sha256="", filename="a.txt", server_time=5)
    db = sqlite3.connect(tmp_path / "s.db")  # make it what version 2 wrote
    db.execute("ALTER TABLE attempts DROP COLUMN proven")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with StateStore(tmp_path / "s.db") as store:
        (a,) = store.attempts()
        # its start was never checked against created_at: it proves nothing
        assert (a.server_time, a.proven, a.attempt.since) == (5, False, None)


# --- 1. a lying clock: adoption by time only when the server's clocks agree --------------------

DAY = 86400

#: One batch run in a process of its own, to be killed with SIGKILL.
INGEST = ("import sys, kimi_files as kf; "
          "kf.ingest([sys.argv[2]], state=sys.argv[1], concurrency=4)")


def _killed_run(emulator: Any, folder: Path, state: Path, fault: Any) -> None:
    """A run that sends its upload(s), is killed with SIGKILL once the server holds the one
    ``fault`` catches, and is gone; then the fault is released (no race with real time)."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import API_KEY

    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emulator.base_url}
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(state), str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fault.held.wait(60), "the run never sent its upload"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    fault.release.set()


def test_a_date_behind_never_adopts_an_older_look_alike_after_a_kill(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path) -> None:
    import threading
    import time

    emulator.state.date_offset = -DAY  # the gateway's Date runs a day behind created_at
    p = write(tmp_path / "in" / "report.txt", "our own report\n")
    stranger = emulator.seed("report.txt", p.stat().st_size,
                             created_at=int(time.time()) - 3600)
    fault = emulator.state.add_fault("hang", release=threading.Event())  # nothing stored
    _killed_run(emulator, tmp_path / "in", tmp_path / "s.db", fault)
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = report.results
    assert result.status == "uploaded" and result.file_id != stranger.id
    assert client.content(result.file_id).text == "our own report\n"
    assert [f.id for f in report.suspects] == [stranger.id]  # kept, reported
    assert result.suspects == (stranger.id,)
    assert stranger.id in {f.id for f in emulator.state.listing()}


def test_a_date_ahead_reports_the_copy_a_killed_run_stored(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path) -> None:
    import threading

    emulator.state.date_offset = 30 * DAY  # the gateway's Date runs 30 days ahead
    write(tmp_path / "in" / "report.txt", "our own report\n")
    fault = emulator.state.add_fault("store_late", release=threading.Event())
    _killed_run(emulator, tmp_path / "in", tmp_path / "s.db", fault)
    assert fault.stored.wait(60)  # the server stored it after the run was killed
    (copy,) = emulator.state.listing()
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = report.results
    assert result.status == "uploaded" and result.file_id != copy.id
    # never silently a second copy: said in the report and in the file's own result
    assert [f.id for f in report.suspects] == [copy.id]
    assert result.suspects == (copy.id,)


def test_the_server_clock_checks_date_against_created_at() -> None:
    from kimi_files._adoption import CLOCK_TOLERANCE, ServerClock

    now = [0.0]
    clock = ServerClock(monotonic=lambda: now[0])
    clock.observe_stored(1_000)  # no Date seen: nothing to check against
    assert clock.agrees is None and clock.since() == 1_000
    clock.observe(2_000)
    since = clock.since()
    clock.observe_stored(2_000 + CLOCK_TOLERANCE, since)  # within the tolerance
    assert clock.agrees is True

    behind = ServerClock(monotonic=lambda: now[0])  # Date a day behind created_at
    behind.observe(2_000 - DAY)
    behind.observe_stored(2_000, behind.since())
    assert behind.agrees is False and behind.since() is None
    behind.observe_stored(2_000 - DAY, behind.since())  # once disagreed, for good
    assert behind.agrees is False

    ahead = ServerClock(monotonic=lambda: now[0])  # Date 30 days ahead
    ahead.observe(2_000 + 30 * DAY)
    since = ahead.since()
    assert ahead.observe_stored(2_000, since) == -30 * DAY  # said the first time only
    assert ahead.agrees is False and ahead.since() is None
    assert ahead.observe_stored(2_000, since) is None


def test_attempts_begun_before_the_clock_was_checked_are_proven_by_a_later_store(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float]) -> None:
    import threading

    for i in range(3):
        write(tmp_path / "in" / f"f{i}.txt", f"document {i}\n")
    held = emulator.state.add_fault("hang", release=threading.Event())
    proofs: list[tuple[list[int], bool]] = []
    # the three attempts all begin before any is sent (else, on a busy machine, the third
    # may begin after the first store, and be proven by a second call: no flake)
    begun = threading.Barrier(3, timeout=30)

    class Watching(StateStore):
        def begin(self, *args: Any, **kwargs: Any) -> Any:
            result = super().begin(*args, **kwargs)
            begun.wait()
            return result

        def prove(self, ids: Any, proven: bool = True) -> None:
            proofs.append((list(ids), proven))
            super().prove(ids, proven)
            held.release.set()  # f0's attempt ends (dropped) only once the others proved it

    with Watching(tmp_path / "s.db") as store:
        report = kf.ingest([tmp_path / "in"], client=client, state=store, concurrency=3,
                           max_retries=0)
        assert report.count("uploaded") == 2
        assert len(proofs) == 1 and proofs[0][1] is True and len(proofs[0][0]) == 3
        # f0's attempt (its answer lost) stays open, and proven: a re-run may adopt by it
        (left,) = store.attempts()
        assert left.proven and left.attempt.since is not None


def test_a_run_whose_clocks_disagree_marks_every_attempt_unproven(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float]) -> None:
    import threading

    emulator.state.date_offset = -DAY
    for i in range(3):
        write(tmp_path / "in" / f"f{i}.txt", f"document {i}\n")
    held = emulator.state.add_fault("hang", release=threading.Event())

    class Watching(StateStore):
        def prove(self, ids: Any, proven: bool = True) -> None:
            super().prove(ids, proven)
            held.release.set()

    with Watching(tmp_path / "s.db") as store:
        kf.ingest([tmp_path / "in"], client=client, state=store, concurrency=3, max_retries=0)
        (left,) = store.attempts()
        assert not left.proven and left.attempt.since is None


def test_the_emulator_dates_its_answers_by_its_clock_and_offset() -> None:
    from email.utils import parsedate_to_datetime

    import httpx

    from kimi_files.emulator import Emulator

    from .conftest import API_KEY

    wall = [1_700_000_000.0]
    with Emulator(api_key=API_KEY, wall=lambda: wall[0], date_offset=-DAY) as emu:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        r = httpx.post(f"{emu.base_url}/files", headers=headers, data={"purpose": "file-extract"},
                       files={"file": ("a.txt", b"some text", "text/plain")})
        assert r.json()["created_at"] == 1_700_000_000
        assert r.headers.get_list("date") == [r.headers["date"]]  # one Date, the emulated one
        assert parsedate_to_datetime(r.headers["date"]).timestamp() == 1_700_000_000 - DAY
        emu.state.date_offset = None
        assert "date" not in httpx.get(f"{emu.base_url}/files", headers=headers).headers


# --- 12. copies a killed run's requests store late are adopted, not duplicated ----------------


def _kill_with_late_stores(emulator: Any, folder: Path, state: Path, late: int) -> Any:
    """A run of every file in ``folder`` (4 at once) whose last ``late`` uploads the server
    holds (a slow extraction), killed with SIGKILL once the others are recorded; the held
    requests store their copies when the returned event is set."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from .conftest import API_KEY

    release = threading.Event()
    others = len(list(folder.iterdir())) - late
    emulator.state.add_fault("delay", times=others)  # answered at once, in the fault's turn
    faults = [emulator.state.add_fault("store_late", release=release) for _ in range(late)]
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emulator.base_url}
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(state), str(folder)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recorded() -> int:
        if not state.exists():
            return 0
        with sqlite3.connect(state) as db:
            try:
                return int(db.execute(
                    "SELECT count(*) FROM uploads WHERE status = 'uploaded'").fetchone()[0])
            except sqlite3.OperationalError:  # not created yet
                return 0

    try:
        for f in faults:
            assert f.held.wait(60), "the run never sent its uploads"
        deadline = time.monotonic() + 60
        while recorded() < others and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert recorded() == others
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    release.faults = faults  # type: ignore[attr-defined]
    return release


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_copies_a_killed_run_stores_late_are_adopted_when_the_rerun_reaches_them(
        emulator: Any, tmp_path: Path, kind: str) -> None:
    import asyncio

    from .conftest import API_KEY

    folder = tmp_path / "in"
    for i in range(4):
        write(folder / f"doc{i}.txt", f"document number {i}\n")
    release = _kill_with_late_stores(emulator, folder, tmp_path / "s.db", late=2)
    posts = sum(r.method == "POST" for r in emulator.requests)

    def on_result(result: Any) -> None:  # the killed run's requests land during the re-run
        release.set()
        for f in release.faults:  # type: ignore[attr-defined]
            assert f.stored.wait(60)

    options: dict[str, Any] = {"api_key": API_KEY, "base_url": emulator.base_url,
                               "state": tmp_path / "s.db", "on_result": on_result}
    report = (kf.ingest([folder], **options) if kind == "sync"
              else asyncio.run(kf.aingest([folder], **options)))
    assert report.suspects == [] and report.ok, report.summary()
    notes = sorted(r.note for r in report.results)
    assert [r.status for r in report.results] == ["skipped"] * 4
    assert notes == ["already uploaded, unchanged"] * 2 + ["stored by an interrupted run; adopted"] * 2
    assert sum(r.method == "POST" for r in emulator.requests) == posts  # nothing sent again
    stored = {f.id: f for f in emulator.state.listing()}
    assert len(stored) == 4  # one copy each, each with its own content
    for r in report.results:
        copy = stored[r.file_id]
        assert copy.path is not None and copy.path.read_bytes() == Path(r.path).read_bytes()
    with StateStore(tmp_path / "s.db") as store:
        assert store.attempts() == [] and {r.status for r in store.records()} == {"uploaded"}


def test_a_copy_that_lands_after_the_relisting_is_reported_and_the_command_exits_1(
        emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import kimi_files._batch as batch
    from kimi_files.cli import upload_main

    from .conftest import API_KEY

    folder = tmp_path / "in"
    for i in range(2):
        write(folder / f"doc{i}.txt", f"document number {i}\n")
    release = _kill_with_late_stores(emulator, folder, tmp_path / "s.db", late=1)
    real = batch._late_copies

    def land_then_look(*args: Any) -> Any:  # too slow: it lands after the file was sent again
        release.set()
        assert release.faults[0].stored.wait(60)  # type: ignore[attr-defined]
        return (yield from real(*args))

    monkeypatch.setattr(batch, "_late_copies", land_then_look)
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    code = upload_main(["--json", "--no-progress", "--state", str(tmp_path / "s.db"),
                        str(folder)])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["status"] for r in rows) == ["skipped", "uploaded"]
    late = [f for f in emulator.state.listing() if f.id not in {r["file_id"] for r in rows}]
    assert len(late) == 1 and late[0].id in err  # said, with the command that removes it
    assert f"kimi-files delete {late[0].id}" in err
    assert code == 1  # a duplicate remains: not the clean run exit 0 promises
    report = batch.BatchReport(suspects=late)
    assert report.suspects_remain and not batch.BatchReport().suspects_remain


def test_once_the_clocks_disagree_a_lost_answer_adopts_nothing_in_the_run(
        emulator: Any, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float],
        caplog: pytest.LogCaptureFixture) -> None:
    emulator.state.date_offset = -DAY
    first = client.upload(write(tmp_path / "a.txt", "first document\n"))
    assert client.clock.agrees is False  # its created_at was a day after the Date
    said = [r.getMessage() for r in caplog.records if "clock disagrees" in r.getMessage()]
    assert len(said) == 1 and "later than its Date headers allow (by about 8640" in said[0]
    assert "no copy is adopted by time" in said[0]
    emulator.fail_next("store_then_drop")
    up = client.upload(write(tmp_path / "b.txt", "second document\n"))
    stored = [f.id for f in emulator.state.listing() if f.id not in (first.id, up.id)]
    # its own copy, maybe, but proven by nothing: kept and said, the file sent again
    assert not up.adopted and [f.id for f in up.suspects] == stored and len(stored) == 1
    assert sum("clock disagrees" in r.getMessage() for r in caplog.records) == 1  # once
