"""Batch ingestion against the emulator: planning, dedupe, resume, room, pacing, faults."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files._batch import FileResult, ingest
from kimi_files._pacing import Pacer
from kimi_files._state import StateStore
from kimi_files.emulator import CHAOS_KINDS, Emulator

from .conftest import API_KEY, Api, write


def _tree(root: Path, n: int = 4, prefix: str = "doc") -> list[Path]:
    return [write(root / ("sub" if i % 2 else "") / f"{prefix}{i}.txt", f"content {prefix} {i}\n")
            for i in range(n)]


def _posts(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.method == "POST")


def _statuses(report: kf.BatchReport) -> Counter[str]:
    return Counter(r.status for r in report.results)


def test_folder_is_uploaded_with_one_list_call(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path) -> None:
    files = _tree(tmp_path / "in", 6)
    write(tmp_path / "in" / ".hidden.txt", "secret")
    write(tmp_path / "in" / ".git" / "config", "x")
    report = ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert _statuses(report) == {"uploaded": 6}
    assert report.ok and report.list_calls == 1
    assert sorted(emulator.filenames()) == sorted(p.name for p in files)
    assert sum(1 for r in emulator.requests if r.method == "GET") == 1


def test_rerun_skips_everything_unchanged(emulator: Emulator, client: kf.KimiFiles,
                                          tmp_path: Path) -> None:
    files = _tree(tmp_path / "in", 4)
    state = tmp_path / "s.db"
    first = ingest([tmp_path / "in"], client=client, state=state)
    before = _posts(emulator)
    again = ingest([tmp_path / "in"], client=client, state=state)
    assert _statuses(again) == {"skipped": 4} and _posts(emulator) == before
    assert {r.file_id for r in again.results} == {r.file_id for r in first.results}
    # a changed file is uploaded again; a file deleted on the server too
    files[0].write_text("changed\n")
    victim = next(r for r in first.results if r.path == str(files[1]))
    assert victim.file_id is not None
    client.delete(victim.file_id)
    third = ingest([tmp_path / "in"], client=client, state=state)
    assert _statuses(third) == {"uploaded": 2, "skipped": 2}
    assert _posts(emulator) == before + 2


def test_identical_content_is_uploaded_once(emulator: Emulator, client: kf.KimiFiles,
                                            tmp_path: Path) -> None:
    a = write(tmp_path / "in" / "a.txt", "same\n")
    b = write(tmp_path / "in" / "copy" / "b.txt", "same\n")
    report = ingest([tmp_path / "in"], client=client, state=False)
    by_path = {r.path: r for r in report.results}
    assert by_path[str(a)].status == "uploaded" and by_path[str(b)].status == "skipped"
    assert by_path[str(a)].file_id == by_path[str(b)].file_id
    assert _posts(emulator) == 1


def test_filters_and_missing_paths(emulator: Emulator, client: kf.KimiFiles,
                                   tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.pdf.txt", "a")
    write(tmp_path / "in" / "drafts" / "b.txt", "b")
    write(tmp_path / "in" / "c.md", "c")
    report = ingest([tmp_path / "in", tmp_path / "nope"], client=client, state=False,
                    include=["*.txt"], exclude=["drafts/*"])
    assert sorted(emulator.filenames()) == ["a.pdf.txt"]
    rejected = [r for r in report.results if r.status == "rejected"]
    assert len(rejected) == 1 and "nope: no such file or folder" in str(rejected[0].error)
    assert not report.ok


def test_folder_without_eligible_files(client: kf.KimiFiles, tmp_path: Path) -> None:
    write(tmp_path / "in" / ".only-hidden", "x")
    report = ingest([tmp_path / "in"], client=client, state=False)
    assert [r.status for r in report.results] == ["rejected"]
    assert "no eligible files in this folder" in str(report.results[0].error)


def test_batch_that_cannot_fit_sends_what_fits_and_defers_the_rest(
        emulator: Emulator, tmp_path: Path, limited: Any) -> None:
    client = limited(max_files=5)
    for i in range(3):
        emulator.seed(f"old{i}", 1, created_at=i)
    _tree(tmp_path / "in", 4)
    report = ingest([tmp_path / "in"], client=client, state=False)
    assert _statuses(report) == {"uploaded": 2, "deferred": 2}  # issue #18: the part that fits
    err = next(r.error for r in report.results if r.status == "deferred")
    assert isinstance(err, kf.NotEnoughFileSlotsError) and err.files_to_free == 2
    assert "2 file(s) must go" in str(err)
    assert [r.method for r in emulator.requests] == ["GET", "POST", "POST"]
    assert report.deleted == []


@pytest.mark.parametrize("free_quota", ["never", "oldest"])
def test_an_account_over_its_limits_with_nothing_to_send_skips_and_deletes_nothing(
        emulator: Emulator, tmp_path: Path, limited: Any, free_quota: str) -> None:
    state = tmp_path / "s.db"
    _tree(tmp_path / "in", 5)
    ingest([tmp_path / "in"], client=limited(max_files=10), state=state)
    # the account holds 5 where (say, after the limit dropped) 3 are allowed
    report = ingest([tmp_path / "in"], client=limited(max_files=3), state=state,
                    free_quota=free_quota)
    assert _statuses(report) == {"skipped": 5} and report.deleted == []
    assert len(emulator.state.listing()) == 5


def test_an_account_over_its_limits_defers_each_new_file(
        emulator: Emulator, tmp_path: Path, limited: Any) -> None:
    state = tmp_path / "s.db"
    _tree(tmp_path / "in", 5)
    ingest([tmp_path / "in"], client=limited(max_files=10), state=state)
    _tree(tmp_path / "in", 2, prefix="new")
    report = ingest([tmp_path / "in"], client=limited(max_files=3), state=state)
    assert _statuses(report) == {"skipped": 5, "deferred": 2}
    err = next(r.error for r in report.results if r.status == "deferred")
    assert isinstance(err, kf.NotEnoughFileSlotsError) and "Nothing fits; all 2 deferred" in str(err)
    assert len(emulator.state.listing()) == 5


def test_free_quota_deletes_only_what_the_batch_needs(emulator: Emulator, tmp_path: Path,
                                                      limited: Any) -> None:
    client = limited(max_files=6)
    state = tmp_path / "s.db"
    mine = write(tmp_path / "in" / "mine.txt", "already here\n")
    ingest([tmp_path / "in"], client=client, state=state)
    old = [emulator.seed(f"old{i}", 1, created_at=i) for i in range(4)]
    # the batch's own file is older than nothing but must never be deleted
    with emulator.state.lock:
        for f in emulator.state.files.values():
            if f.filename == "mine.txt":
                f.created_at = 0
    import sqlite3  # and as answered: else a later file under a reused id, not ours

    with sqlite3.connect(state) as db:
        db.execute("UPDATE stored SET created_at = 0")
    _tree(tmp_path / "in", 3)
    report = ingest([tmp_path / "in"], client=client, state=state, free_quota="oldest")
    assert [f.id for f in report.deleted] == [old[0].id, old[1].id]
    assert "mine.txt" in emulator.filenames()
    assert _statuses(report) == {"uploaded": 3, "skipped": 1}
    assert mine.exists()


def test_dry_run_mutates_nothing(emulator: Emulator, tmp_path: Path, limited: Any) -> None:
    client = limited(max_files=3)
    old = emulator.seed("old", 1, created_at=1)
    _tree(tmp_path / "in", 3)
    report = ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db", dry_run=True,
                    free_quota="oldest")
    assert _statuses(report) == {"planned": 3}
    assert report.plan is not None and [f.id for f in report.plan.deletions] == [old.id]
    assert "would delete" in report.summary()
    assert {r.method for r in emulator.requests} == {"GET"}
    assert emulator.filenames() == ["old"]


def test_pending_intent_after_a_crash_is_adopted(emulator: Emulator, client: kf.KimiFiles,
                                                 tmp_path: Path) -> None:
    p = write(tmp_path / "in" / "a.txt", "hello\n")
    state = tmp_path / "s.db"
    with StateStore(state) as store, p.open("rb") as fh:
        # what a killed run leaves: the intent recorded (with the server's time, learned from
        # an answer's Date header), the file stored, no answer recorded
        from kimi_files._hashing import sha256_of

        client.list()
        store.begin(p, size=6, mtime_ns=p.stat().st_mtime_ns, sha256=sha256_of(p),
                    filename="a.txt", server_time=client.clock.now())
        stored = client.create(fh, filename="a.txt", content_type="text/plain")
    before = _posts(emulator)
    report = ingest([tmp_path / "in"], client=client, state=state)
    assert [(r.status, r.file_id) for r in report.results] == [("skipped", stored.id)]
    assert _posts(emulator) == before and emulator.filenames() == ["a.txt"]


def test_stop_event_starts_nothing_new_and_rerun_completes(emulator: Emulator,
                                                           client: kf.KimiFiles,
                                                           tmp_path: Path) -> None:
    _tree(tmp_path / "in", 6)
    stop = threading.Event()

    def on_result(r: FileResult) -> None:
        stop.set()

    report = ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db", concurrency=1,
                    stop=stop, on_result=on_result)
    assert report.interrupted and not report.ok
    counts = _statuses(report)
    assert counts["uploaded"] >= 1 and counts["uploaded"] + counts["failed"] == 6
    assert "interrupted" in report.summary()
    rest = ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert rest.ok and len(emulator.filenames()) == 6
    assert len(set(emulator.filenames())) == 6


def test_tier0_pacing_avoids_a_storm_of_429s(tmp_path: Path, no_wait: list[float]) -> None:
    """Tier0 (1 request at a time, 3 a minute) on one shared, injected clock: the pacer's
    waits move the clock the emulator counts its window by, so nothing races real time."""
    now = [1000.0]

    def advance(seconds: float) -> None:
        now[0] += seconds

    _tree(tmp_path / "in", 5)
    with Emulator(api_key=API_KEY, max_concurrency=1, rpm=3, rate_window=60.0,
                  clock=lambda: now[0]) as emulator, \
            kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                         pacer=Pacer(clock=lambda: now[0], wait=advance)) as client:
        # two at once: then the count below holds whatever the threads' timing (with more, a
        # success can widen the window while a 429 is on its way back, and a third request
        # may start before the lesson)
        report = ingest([tmp_path / "in"], client=client, state=False, concurrency=2)
        assert report.ok and len(emulator.filenames()) == 5
        limited = [r for r in emulator.requests if r.status == 429]
        # one 429 teaches each limit (concurrency, then RPM); the rest of the run stays inside
        # (before the pacer learned inside its slot and grew only when full, there were more)
        assert len(limited) <= 2, [(r.method, r.path, r.at) for r in limited]
        assert client.pacer.rpm == 3  # six requests a minute where three are allowed: learned


@pytest.mark.parametrize("fault", sorted(CHAOS_KINDS))
def test_fault_matrix_every_file_exactly_once(emulator: Emulator, api: Api, tmp_path: Path,
                                              no_wait: list[float], fault: str) -> None:
    files = _tree(tmp_path / "in", 5)
    emulator.fail_next(fault, times=3, limit=50, after=1)
    state = tmp_path / "s.db"
    report = api.ingest([tmp_path / "in"], state=state, concurrency=3)
    assert report.ok, report.summary()
    assert Counter(emulator.filenames()) == Counter(p.name for p in files)
    with StateStore(state) as store:
        records = store.records()
        assert store.integrity_ok()
    on_server = {f.id for f in emulator.state.listing()}
    assert {r.status for r in records} == {"uploaded"}
    assert {r.file_id for r in records} == on_server


def _soak(emulator: Emulator, api: Api, root: Path, n: int, seed: int) -> None:
    """Chaos on every upload: in the end every file is stored with its own content, and
    every copy beyond one a file is one that a run reported (lost answers that stored more
    than one copy cannot be told apart: kept and said, never adopted or deleted)."""
    files = _tree(root / "in", n)
    emulator.state.set_chaos(0.2, seed=seed)
    report = api.ingest([root / "in"], state=root / "s.db", concurrency=6)
    reported = {f.id for f in report.suspects}
    emulator.state.set_chaos(0)
    if not report.ok:  # retries ran out for some: a second run finishes the job
        report = api.ingest([root / "in"], state=root / "s.db", concurrency=6)
        reported |= {f.id for f in report.suspects}
    assert report.ok, report.summary()
    _every_file_once_and_extras_reported(emulator, files, root / "s.db", reported)


def _every_file_once_and_extras_reported(emulator: Emulator, files: list[Path], state: Path,
                                         reported: set[str]) -> None:
    stored = {f.id: f for f in emulator.state.listing()}
    with StateStore(state) as store:
        records = store.records()
        reported |= store.suspects()
    assert {r.status for r in records} == {"uploaded"} and len(records) == len(files)
    for rec in records:  # never another file's content
        copy = stored[rec.file_id]
        assert copy.path is not None and copy.path.read_bytes() == Path(rec.path).read_bytes()
    extras = set(stored) - {r.file_id for r in records}
    assert extras <= reported, (sorted(extras - reported), Counter(emulator.filenames()))


def test_chaos_soak_short(emulator: Emulator, api: Api, tmp_path: Path,
                          no_wait: list[float]) -> None:
    _soak(emulator, api, tmp_path, 60, seed=1)


@pytest.mark.slow
def test_chaos_soak_long(emulator: Emulator, api: Api, tmp_path: Path,
                         no_wait: list[float]) -> None:
    for seed in range(3):
        emulator.state.reset()
        _soak(emulator, api, tmp_path / str(seed), 300, seed=seed)


def _text(n_bytes: int, tag: str = "") -> bytes:
    """Varied lines (the emulator refuses repetitive text), exactly ``n_bytes`` long."""
    lines = b"".join(b"line %06d of the text %s\n" % (i, tag.encode()) for i in range(n_bytes // 20))
    return lines[:n_bytes]


def test_hash_is_taken_while_sending_and_recorded(emulator: Emulator, client: kf.KimiFiles,
                                                  tmp_path: Path, no_wait: list[float],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._scan as scan_mod
    from kimi_files._hashing import sha256_of

    size = scan_mod.SAMPLE_BYTES + 5000
    a = write(tmp_path / "in" / "a.txt", _text(size + 1))  # a size no other file has
    start = _text(size - 4)
    b = write(tmp_path / "in" / "b.txt", start + b"bbbb")  # b and c: one size, one start
    c = write(tmp_path / "in" / "c.txt", start + b"cccc")
    d = write(tmp_path / "in" / "d.txt", b"d" + start[1:] + b"dddd")  # d: b's size, another start
    small = write(tmp_path / "in" / "small.txt", "same-12-byte")  # hashed from the check's read
    hashed_up_front: list[Path] = []
    monkeypatch.setattr(scan_mod, "sha256_of",
                        lambda p: hashed_up_front.append(Path(p)) or sha256_of(p))
    emulator.fail_next("extraction_failed")  # one retry: the hash restarts with the body
    state = tmp_path / "s.db"
    report = ingest([tmp_path / "in"], client=client, state=state, concurrency=1)
    assert _statuses(report) == {"uploaded": 5}
    # a's size is unique and d's start differs: hashed as they were sent, not before
    assert sorted(hashed_up_front) == [b, c]
    with StateStore(state) as store:
        recorded = {r.path: r.sha256 for r in store.records()}
    assert recorded == {str(p): sha256_of(p) for p in (a, b, c, d, small)}
    # the re-run takes the recorded hashes of unchanged files: nothing is hashed, all skipped
    hashed_up_front.clear()
    again = ingest([tmp_path / "in"], client=client, state=state)
    assert _statuses(again) == {"skipped": 5} and hashed_up_front == []


def test_a_single_path_is_not_split_into_characters(emulator: Emulator, client: kf.KimiFiles,
                                                    tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.txt", "a")
    report = kf.ingest(str(tmp_path / "in"), client=client, state=False)
    assert _statuses(report) == {"uploaded": 1}
