"""The batch's rules, driven step by step with scripted answers: no server, no threads.

Each scenario runs :func:`kimi_files._batch.batch_steps` (the steps ``ingest`` and ``aingest``
run) against the ``Script`` of ``tests/scripted.py``, with a real state store in a temporary
folder, and checks what the steps asked for: what was listed, sent and deleted, how long they
waited, and the lines they said.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kimi_files._batch import BatchOptions, batch_steps
from kimi_files._config import Limits
from kimi_files._hashing import sha256_of
from kimi_files._models import FileObject
from kimi_files._report import BatchReport
from kimi_files._state import StateStore
from kimi_files.errors import NotEnoughFileSlotsError

from .scripted import Script, answer, listing, stored

T0 = 1_760_000_000  # the server's time when the scenario starts
PURPOSE = "file-extract"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of three text files of different sizes: a.txt, b.txt, c.txt."""
    root = tmp_path / "in"
    root.mkdir()
    for n, name in enumerate(("a.txt", "b.txt", "c.txt"), start=1):
        (root / name).write_text(f"{name}: the quarterly numbers, in words\n" * n,
                                 encoding="utf-8")
    return root


def _script(tmp_path: Path, **kw: object) -> Script:
    script = Script(state=tmp_path / "state.db", **kw)  # type: ignore[arg-type]
    script.clock.observe(T0)  # the server's Date header, seen on an earlier answer
    return script


def _ingest(script: Script, *paths: Path, **options: object) -> BatchReport:
    """One batch with ``script`` as the client and its state; ``options``: ingest's."""
    settings = BatchOptions.of({"progress": False, "reuse": False, **options})
    with StateStore(script.state_path()) as store:
        report = script.run(batch_steps(script, store, settings, paths, threading.Event()))
    assert isinstance(report, BatchReport)
    return report


def _copy(path: Path, file_id: str, created_at: int, name: str | None = None) -> FileObject:
    """A stored file that looks like the copy of ``path``."""
    return stored(file_id, name or path.name, path.stat().st_size, created_at)


def _outcomes(report: BatchReport) -> list[tuple[str, str, str | None]]:
    return [(Path(r.path).name, r.status, r.file_id) for r in report.results]


def _crashed(script: Script, path: Path, *, proven: bool = True) -> None:
    """What a run killed while it sent ``path`` leaves: its intent on record (begun 30 s
    before the scenario, by the server's clock), no answer."""
    st = path.stat()
    with StateStore(script.state_path()) as store:
        store.begin(path, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_of(path),
                    filename=path.name, purpose=PURPOSE, server_time=T0 - 30, proven=proven)


def _said_once(script: Script, *parts: str) -> str:
    """The one line said that holds every part (it must be said exactly once)."""
    lines = [line for line in script.said if all(p in line for p in parts)]
    assert len(lines) == 1, (parts, script.said)
    return lines[0]


# --- resume: a batch after a crash ----------------------------------------------------------


def test_resume_adopts_the_copy_an_interrupted_upload_provably_stored(folder: Path,
                                                                     tmp_path: Path) -> None:
    a = folder / "a.txt"
    script = _script(tmp_path)
    _crashed(script, a)
    copy = _copy(a, "f-copy", T0 - 20)  # after the intent, by the server's clock; alone
    script.on("list", listing(copy))
    report = _ingest(script, a)
    assert _outcomes(report) == [("a.txt", "skipped", "f-copy")]
    assert report.results[0].note == "stored by an interrupted run; adopted"
    assert script.calls("create") == [] and script.calls("delete") == []
    assert report.suspects == []
    with StateStore(script.state_path()) as store:
        (record,) = store.records()
        assert (record.status, record.file_id) == ("uploaded", "f-copy")
        assert store.attempts() == []  # the interrupted attempt is settled


@pytest.mark.parametrize("doubt", ["clock never proven", "made before the intent",
                                   "two look-alikes", "file changed since"])
def test_resume_uploads_again_and_reports_a_copy_it_cannot_prove(folder: Path, tmp_path: Path,
                                                                 doubt: str) -> None:
    a = folder / "a.txt"
    script = _script(tmp_path)
    _crashed(script, a, proven=doubt != "clock never proven")
    copies = [_copy(a, "f-copy", T0 - 40 if doubt == "made before the intent" else T0 - 20)]
    if doubt == "two look-alikes":
        copies.append(_copy(a, "f-other", T0 - 10))
    if doubt == "file changed since":
        st = a.stat()
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, touched
    script.on("list", listing(*copies)).on("create", _copy(a, "f-new", T0 + 1))
    report = _ingest(script, a)
    assert _outcomes(report) == [("a.txt", "uploaded", "f-new")]
    assert script.calls("create") == [("a.txt", a.stat().st_size)]
    assert script.calls("delete") == []  # a copy that may be someone's is never deleted
    suspects = [f.id for f in copies]
    assert [f.id for f in report.suspects] == suspects == list(report.results[0].suspects)
    many = "1 possible extra copy" if len(copies) == 1 else "2 possible extra copies"
    assert report.results[0].note == f"{many} kept"
    for file_id in suspects:  # the plan, the look after the others and the late look: once
        _said_once(script, file_id, "may be a copy an interrupted or lost attempt stored")
    with StateStore(script.state_path()) as store:
        assert store.suspects() == set(suspects)  # no later run adopts them either


@pytest.mark.parametrize("proven", [True, False])
def test_a_copy_that_lands_after_the_plan_is_looked_for_once_the_rest_is_sent(
        folder: Path, tmp_path: Path, proven: bool) -> None:
    a, b = folder / "a.txt", folder / "b.txt"
    script = _script(tmp_path)
    _crashed(script, a, proven=proven)
    late = _copy(a, "f-late", T0 - 20)  # the killed run's request, stored after the plan
    # the plan's listing; after b is sent; after a is (sent again, or not)
    script.on("list", listing(), listing(late), listing(late, _copy(a, "f-new", T0 + 5)))
    script.on("create", _copy(b, "f-b", T0 + 1), _copy(a, "f-new", T0 + 5))
    report = _ingest(script, a, b)
    sent = [name for name, _ in script.calls("create")]
    if proven:  # provably its own: adopted, a is never sent
        assert sent == ["b.txt"]
        assert _outcomes(report) == [("b.txt", "uploaded", "f-b"), ("a.txt", "skipped", "f-late")]
        assert report.suspects == []
        return
    assert sent == ["b.txt", "a.txt"]  # a after the rest: its copy could still land
    assert _outcomes(report) == [("b.txt", "uploaded", "f-b"), ("a.txt", "uploaded", "f-new")]
    assert [f.id for f in report.suspects] == ["f-late"]
    # seen at the second look and again at the last: said once
    _said_once(script, "f-late", "may be a copy an interrupted or lost attempt stored")
    assert script.calls("delete") == []


def test_a_file_uploaded_in_an_earlier_run_is_not_sent_again(folder: Path,
                                                             tmp_path: Path) -> None:
    a = folder / "a.txt"
    script = _script(tmp_path)
    script.on("list", listing()).on("create", _copy(a, "f1", T0 + 1))
    assert _outcomes(_ingest(script, a)) == [("a.txt", "uploaded", "f1")]

    again = _script(tmp_path).on("list", listing(_copy(a, "f1", T0 + 1)))
    report = _ingest(again, a)
    assert _outcomes(report) == [("a.txt", "skipped", "f1")]
    assert report.results[0].note == "already uploaded, unchanged"
    assert again.calls("create") == []

    # its copy gone from the account: then (only then) it is sent again
    gone = _script(tmp_path).on("list", listing()).on("create", _copy(a, "f2", T0 + 2))
    assert _outcomes(_ingest(gone, a)) == [("a.txt", "uploaded", "f2")]


def test_a_recorded_id_listed_as_another_file_is_left_alone_and_said_once(
        folder: Path, tmp_path: Path) -> None:
    a = folder / "a.txt"
    script = _script(tmp_path)
    script.on("list", listing()).on("create", _copy(a, "f1", T0 + 1))
    _ingest(script, a)
    # the server reused the id for someone else's file: not a.txt's copy
    other = stored("f1", "budget.xlsx", 12345, T0 + 50)
    again = _script(tmp_path).on("list", listing(other)).on("create", _copy(a, "f2", T0 + 60))
    report = _ingest(again, a)
    assert _outcomes(report) == [("a.txt", "uploaded", "f2")]
    assert again.calls("delete") == []
    _said_once(again, "f1, recorded as stored, is not that file now",
               "the file is sent again")


# --- quota: the plan of the whole batch -----------------------------------------------------


def _full(script: Script) -> list[FileObject]:
    """An account of 3 slots with 2 taken (old-1 the older): one of the 3 files fits."""
    old = [stored("old-1", "x.txt", 10, T0 - 300), stored("old-2", "y.txt", 10, T0 - 200)]
    script.on("list", listing(*old))
    return old


def test_a_batch_that_cannot_fit_is_refused_before_any_byte(folder: Path,
                                                            tmp_path: Path) -> None:
    script = _script(tmp_path, limits=Limits(max_files=3))
    _full(script)
    # freeing is asked, but only old-1 may go: 2 slots short, 1 can be freed
    report = _ingest(script, folder, free_quota=["old-1"])
    assert {r.status for r in report.results} == {"rejected"} and len(report.results) == 3
    assert all(isinstance(r.error, NotEnoughFileSlotsError) for r in report.results)
    assert script.calls("create") == [] and script.calls("delete") == []
    assert script.calls("open") == []  # not a byte read to be sent


def test_without_freeing_asked_nothing_is_deleted_and_the_rest_deferred(
        folder: Path, tmp_path: Path) -> None:
    script = _script(tmp_path, limits=Limits(max_files=3))
    _full(script)
    script.on("create", _copy(folder / "a.txt", "f-a", T0 + 1))
    report = _ingest(script, folder)
    assert _outcomes(report) == [("b.txt", "deferred", None), ("c.txt", "deferred", None),
                                 ("a.txt", "uploaded", "f-a")]
    assert script.calls("delete") == []


def test_freeing_asked_deletes_what_the_plan_needs_first_and_says_each_once(
        folder: Path, tmp_path: Path) -> None:
    script = _script(tmp_path, limits=Limits(max_files=3))
    old = _full(script)
    script.on("create", *(_copy(folder / n, f"f-{n[0]}", T0 + k)
                          for k, n in enumerate(("a.txt", "b.txt", "c.txt"), start=1)))
    dry = _ingest(script, folder, free_quota="oldest", dry_run=True)
    assert dry.plan is not None and [f.id for f in dry.plan.deletions] == ["old-1", "old-2"]
    assert script.calls("delete") == [] and script.calls("create") == []  # a dry run

    report = _ingest(script, folder, free_quota="oldest")
    assert {r.status for r in report.results} == {"uploaded"}
    assert [f.id for f in report.deleted] == [f.id for f in old]
    kinds = [kind for kind, _ in script.log if kind in ("delete", "create")]
    assert kinds == ["delete", "delete", "create", "create", "create"]
    for f in old:
        _said_once(script, f"deleted {f.id} ")


# --- waiting and saying ---------------------------------------------------------------------


def test_a_429_with_a_named_wait_pauses_that_long_and_says_so_once(folder: Path,
                                                                  tmp_path: Path) -> None:
    a = folder / "a.txt"
    slow = answer(429, "rate_limit_reached_error",
                  "Your account o<a> request reached organization max RPM: 3, please try "
                  "again after 20 seconds")
    script = _script(tmp_path).on("list", listing()).on("create", slow, _copy(a, "f1", T0 + 30))
    report = _ingest(script, a)
    assert _outcomes(report) == [("a.txt", "uploaded", "f1")]
    (wait,) = script.waits
    assert 20 <= wait <= 21
    assert len(script.calls("create")) == 2
    _said_once(script, "attempt 1 failed", "retrying in")


def test_the_bars_and_the_status_line_follow_the_files_and_are_closed(folder: Path,
                                                                     tmp_path: Path) -> None:
    script = _script(tmp_path).on("list", listing()).on(
        "create", *(_copy(folder / n, f"f-{n[0]}", T0 + 1) for n in ("a.txt", "b.txt", "c.txt")))
    report = _ingest(script, folder)
    total = sum(p.stat().st_size for p in folder.iterdir())
    overall, *each = script.bars
    assert (overall.total, overall.files, overall.files_done, overall.done) == (total, 3, 3, total)
    assert sorted(b.desc for b in each) == ["a.txt", "b.txt", "c.txt"]
    assert all(b.closed for b in script.bars)
    (status,) = script.statuses
    assert status.closed and status.touched == len(report.results) == 3  # a result is news
    assert status.describe(42.0) == (f"still working: 3/3 files done, {total} bytes of {total} "
                                     "bytes sent, 42s so far")
    assert report.elapsed == 0.0  # measured on the steps' clock, which no wait moved


def test_a_failing_on_result_is_said_once_per_result_and_loses_nothing(folder: Path,
                                                                      tmp_path: Path) -> None:
    a = folder / "a.txt"
    script = _script(tmp_path).on("list", listing()).on("create", _copy(a, "f1", T0 + 1))

    def broken(result: object) -> None:
        raise RuntimeError("the caller's bug")

    report = _ingest(script, a, on_result=broken)
    assert _outcomes(report) == [("a.txt", "uploaded", "f1")]
    _said_once(script, "on_result failed for", "the caller's bug")
