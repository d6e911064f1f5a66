"""The shared core's rules, driven step by step with scripted answers: no server, no threads.

Each scenario feeds :func:`kimi_files._uploader.upload_steps` (or a part of it) the answers of
the ``Script`` in ``tests/scripted.py`` and checks the actions the steps asked for: how many
uploads were sent, what was listed, what was deleted, how long they chose to wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_files._adoption import Attempt
from kimi_files._config import Limits, RetryPolicy
from kimi_files._options import UploadOptions
from kimi_files._quota import fmt_bytes, fmt_time
from kimi_files._reconcile import RELIST_WAITS, Claims
from kimi_files._steps import FileStat
from kimi_files._uploader import preflight_steps, send_steps, upload_steps
from kimi_files.errors import (
    AuthenticationError,
    ConnectionLostError,
    ExtractionFailedError,
    LocalFileError,
    MalformedResponseError,
    NoExtractableTextError,
    NotEnoughFileSlotsError,
    RPMLimitError,
)

from .scripted import AS_IS, Script, answer, listing, stored

T0 = 1_760_000_000  # the server's time when the scenario starts
NAME = "notes.txt"


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / NAME
    path.write_text("the quarterly numbers, in words\n" * 10, encoding="utf-8")
    return path


def _script(**kw: object) -> Script:
    script = Script(**kw)  # type: ignore[arg-type]
    script.clock.observe(T0)  # the server's Date header, seen on an earlier answer
    return script


def _upload(script: Script, path: Path, **options: object) -> object:
    opts = UploadOptions(progress=False, reuse=False, **options)  # type: ignore[arg-type]
    return script.run(upload_steps(script, path, opts))


def lost() -> ConnectionLostError:
    return ConnectionLostError("the connection dropped after the body was sent",
                               request_sent=True)


# --- retries ----------------------------------------------------------------------------------


def test_an_extraction_500_is_retried_after_the_backoff_and_then_stored(doc: Path) -> None:
    size = doc.stat().st_size
    script = _script().on("list", listing()).on(
        "create", answer(500, "server_error", "Failed to extract file: timeout"),
        stored("f1", NAME, size, T0 + 1))
    up = _upload(script, doc)
    assert up.id == "f1" and up.attempts == 2 and not up.adopted  # type: ignore[attr-defined]
    assert len(script.calls("create")) == 2
    (wait,) = script.waits
    policy = RetryPolicy()
    assert policy.initial_wait <= wait <= policy.initial_wait + policy.jitter


def test_a_429_that_names_its_wait_is_waited_that_long(doc: Path) -> None:
    size = doc.stat().st_size
    error = answer(429, "rate_limit_reached_error",
                   "Your account o<a> request reached organization max RPM: 3, please try "
                   "again after 20 seconds")
    assert isinstance(error, RPMLimitError)
    script = _script().on("list", listing()).on("create", error, stored("f1", NAME, size, T0 + 30))
    up = _upload(script, doc)
    assert up.id == "f1"  # type: ignore[attr-defined]
    (wait,) = script.waits
    assert 20 <= wait <= 21
    # a 429 is refused at the door: nothing to look for on the account before sending again
    assert len(script.calls("list")) == 1


@pytest.mark.parametrize(("status", "type_", "message", "raised"), [
    (401, "invalid_authentication_error", "Invalid Authentication", AuthenticationError),
    (400, "invalid_request_error", "text extract error: 没有解析出内容", NoExtractableTextError),
])
def test_what_no_retry_can_cure_is_raised_after_one_attempt(
        doc: Path, status: int, type_: str, message: str, raised: type[Exception]) -> None:
    script = _script().on("list", listing()).on("create", answer(status, type_, message))
    with pytest.raises(raised):
        _upload(script, doc)
    assert len(script.calls("create")) == 1
    assert script.waits == []


def test_the_retries_run_out_and_the_last_error_is_raised(doc: Path) -> None:
    failure = answer(500, "server_error", "Failed to extract file: boom")
    script = _script(retry_policy=RetryPolicy(max_attempts=3)).on("list", listing()).on(
        "create", failure, failure, failure)
    with pytest.raises(ExtractionFailedError, match="boom"):
        _upload(script, doc)
    assert len(script.calls("create")) == 3 and len(script.waits) == 2


def test_a_200_that_lies_about_the_size_has_its_copy_deleted_every_time(doc: Path) -> None:
    # each id came in our own answer: provably ours, so each copy is deleted at once; a
    # server that keeps lying ends the upload with the error, leaving no copy behind
    size = doc.stat().st_size
    script = _script(retry_policy=RetryPolicy(max_attempts=3)).on("list", listing()).on(
        "create", *(stored(f"f{i}", NAME, size + 7, T0 + i) for i in (1, 2, 3)))
    with pytest.raises(MalformedResponseError,
                       match=rf"{size + 7} bytes where {size} were sent; the copy it stored "
                             r"\(f3\) was deleted"):
        _upload(script, doc)
    assert script.calls("delete") == [("f1",), ("f2",), ("f3",)]
    assert len(script.calls("create")) == 3
    # no lost answer: nothing to look for on the account between the attempts
    assert len(script.calls("list")) == 1


def test_a_size_lie_then_a_true_answer_keeps_only_the_true_copy(doc: Path) -> None:
    size = doc.stat().st_size
    script = _script().on("list", listing()).on(
        "create", stored("f1", NAME, size + 7, T0 + 1), stored("f2", NAME, size, T0 + 2))
    up = _upload(script, doc)
    assert up.id == "f2" and not up.suspects  # type: ignore[attr-defined]
    assert script.calls("delete") == [("f1",)]


# --- lost answers and adoption ----------------------------------------------------------------


def test_a_lost_answer_whose_copy_is_listed_is_adopted_not_sent_again(doc: Path) -> None:
    size = doc.stat().st_size
    ours = stored("f-ours", NAME, size, T0 + 2)
    script = _script().on("list", listing(), listing(ours)).on("create", lost())
    up = _upload(script, doc)
    assert up.id == "f-ours" and up.adopted  # type: ignore[attr-defined]
    assert len(script.calls("create")) == 1


def test_an_older_look_alike_is_never_adopted_after_a_lost_answer(
        doc: Path) -> None:
    size = doc.stat().st_size
    old = stored("f-old", NAME, size, T0 - 3600)  # same name and size, stored an hour before
    script = _script().on("list", listing(old)).on(
        "create", lost(), stored("f-new", NAME, size, T0 + 9))
    up = _upload(script, doc)
    assert up.id == "f-new" and not up.adopted  # type: ignore[attr-defined]
    assert len(script.calls("create")) == 2
    # after the retry's backoff, the account was listed, then again after each pause, before
    # the file was sent again
    assert script.waits[1:] == list(RELIST_WAITS)
    kinds = [kind for kind, _ in script.log if kind in ("list", "create")]
    # preflight; create (lost); a look and three more; create; a last look for a late copy
    assert kinds == ["list", "create", *["list"] * (1 + len(RELIST_WAITS)), "create", "list"]
    assert "f-old" not in [s.id for s in up.suspects]  # type: ignore[attr-defined]
    said = script.said
    assert [m for m in said if "listing again" in m] == [
        f"{doc}: looking for the copy a lost answer may have stored: listing again for up "
        f"to {sum(RELIST_WAITS):g} s"]


def test_two_candidates_are_reported_as_suspects_and_neither_is_adopted(doc: Path) -> None:
    size = doc.stat().st_size
    a, b = stored("f-a", NAME, size, T0 + 1), stored("f-b", NAME, size, T0 + 2)
    script = _script().on("list", listing(), listing(a, b)).on(
        "create", lost(), stored("f-new", NAME, size, T0 + 9))
    up = _upload(script, doc)
    assert up.id == "f-new" and not up.adopted  # type: ignore[attr-defined]
    assert sorted(s.id for s in up.suspects) == ["f-a", "f-b"]  # type: ignore[attr-defined]
    assert script.calls("delete") == []  # never deleted: they cannot be proven ours


def test_a_copy_of_another_size_is_not_ours(doc: Path) -> None:
    size = doc.stat().st_size
    other = stored("f-other", NAME, size + 1, T0 + 1)
    script = _script().on("list", listing(), listing(other)).on(
        "create", lost(), stored("f-new", NAME, size, T0 + 9))
    up = _upload(script, doc)
    assert up.id == "f-new" and not up.adopted  # type: ignore[attr-defined]


# --- quota ------------------------------------------------------------------------------------


def test_a_full_account_is_refused_before_any_byte_unless_freeing_is_asked(doc: Path) -> None:
    size = doc.stat().st_size
    full = listing(stored("f-1", "a.txt", 10, T0 - 200), stored("f-2", "b.txt", 10, T0 - 100))
    script = _script(limits=Limits(max_files=2)).on("list", full)
    with pytest.raises(NotEnoughFileSlotsError):
        _upload(script, doc)
    assert script.calls("create") == [] and script.calls("delete") == []

    script = _script(limits=Limits(max_files=2)).on("list", full).on(
        "create", stored("f-3", NAME, size, T0 + 1))
    up = _upload(script, doc, free_quota="oldest")
    assert [d.id for d in up.deleted] == ["f-1"]  # type: ignore[attr-defined]
    # the oldest went first, and only then was the file sent
    kinds = [kind for kind, _ in script.log if kind in ("delete", "create")]
    assert kinds == ["delete", "create"]


def test_a_stored_copy_whose_extraction_failed_is_deleted_and_sent_again(doc: Path) -> None:
    size = doc.stat().st_size
    script = _script().on("list", listing()).on(
        "create", stored("f-bad", NAME, size, T0 + 1, status="error"),
        stored("f-good", NAME, size, T0 + 2))
    up = _upload(script, doc)
    assert up.id == "f-good"  # type: ignore[attr-defined]
    assert script.calls("delete") == [("f-bad",)]


# --- the clock, the file and the user: local actions, scripted --------------------------------


def test_a_lying_clock_is_said_once_and_then_nothing_is_adopted_by_time(doc: Path) -> None:
    size = doc.stat().st_size
    # the first copy's created_at is an hour before the Date headers allow: the server's two
    # clocks disagree, so "stored after the attempt began" proves nothing from now on
    early = stored("f1", NAME, size, T0 - 3600)
    twin = stored("f-twin", NAME, size, T0 + 5)  # would have been adopted by time
    script = _script().on("list", listing()).on("create", early)
    assert _upload(script, doc).id == "f1"  # type: ignore[attr-defined]
    script.on("list", listing(early), listing(early, twin)).on(
        "create", lost(), stored("f2", NAME, size, T0 + 9))
    up = _upload(script, doc)
    assert up.id == "f2" and not up.adopted  # type: ignore[attr-defined]
    assert [s.id for s in up.suspects] == ["f-twin"]  # type: ignore[attr-defined]
    assert script.calls("delete") == []  # the twin cannot be proven ours: kept, reported
    clock_lines = [m for m in script.said if "clock disagrees" in m]
    assert len(clock_lines) == 1 and "earlier than its Date headers allow" in clock_lines[0]


def test_the_time_budget_is_counted_on_the_steps_clock(doc: Path) -> None:
    size = doc.stat().st_size
    slow = answer(429, "rate_limit_reached_error",
                  "Your account o<a> request reached organization max RPM: 3, please try "
                  "again after 20 seconds")
    script = _script(retry_policy=RetryPolicy(timeout=30)).on("list", listing()).on(
        "create", slow, slow, stored("f1", NAME, size, T0 + 60))
    with pytest.raises(RPMLimitError):
        _upload(script, doc)
    # 20 s fit in the 30 s budget; another 20 s after them do not: given up without waiting
    assert len(script.waits) == 1 and 20 <= script.waits[0] <= 21
    assert len(script.calls("create")) == 2
    assert [m for m in script.said if "retrying in" in m] == [
        f"{doc}: attempt 1 failed ({slow}); retrying in {script.waits[0]:.1f}s"]


def test_a_file_rewritten_while_it_is_sent_has_its_copy_deleted(doc: Path) -> None:
    size = doc.stat().st_size
    script = _script().on("list", listing()).on("create", stored("f1", NAME, size, T0 + 1))
    opened = doc.stat()
    # as opened; as the first attempt begins; then, as the answer comes, rewritten in place
    script.on("stat", AS_IS, AS_IS,
              FileStat(size, opened.st_mtime_ns + 1, opened.st_ctime_ns + 1))
    with pytest.raises(LocalFileError, match=r"changed while it was sent .*\(f1\) was deleted"):
        _upload(script, doc)
    assert script.calls("delete") == [("f1",)] and len(script.calls("create")) == 1
    assert script.calls("close") == ["BytesIO", "FakeBar"]  # what the steps opened is closed


def test_a_file_gone_before_a_retry_is_not_sent_again(doc: Path) -> None:
    gone = FileNotFoundError(2, "No such file or directory")
    script = _script().on("list", listing()).on(
        "create", answer(500, "server_error", "Failed to extract file: timeout"))
    script.on("stat", AS_IS, AS_IS, gone)  # as opened; attempt 1; before attempt 2
    with pytest.raises(LocalFileError, match="gone since the preflight") as err:
        _upload(script, doc)
    assert err.value.rule == "exists"
    assert len(script.calls("create")) == 1 and len(script.waits) == 1


def test_the_bar_counts_each_attempt_and_is_closed_with_the_file(doc: Path) -> None:
    size = doc.stat().st_size
    script = _script().on("list", listing()).on(
        "create", answer(500, "server_error", "Failed to extract file: timeout"),
        stored("f1", NAME, size, T0 + 1))
    _upload(script, doc)
    (bar,) = script.bars
    assert (bar.total, bar.done, bar.rewinds, bar.closed) == (size, size, ["retry 2"], True)
    assert script.calls("close") == ["BytesIO", "FakeBar"]
    assert script.calls("open") == [doc]


def test_each_deletion_that_makes_room_is_said_once(doc: Path) -> None:
    size = doc.stat().st_size
    full = listing(stored("f-1", "a.txt", 10, T0 - 200), stored("f-2", "b.txt", 10, T0 - 100))
    script = _script(limits=Limits(max_files=2)).on("list", full).on(
        "create", stored("f-3", NAME, size, T0 + 1))
    _upload(script, doc, free_quota="oldest")
    assert [m for m in script.said if m.startswith("deleted ")] == [
        f"deleted f-1 (a.txt, {fmt_bytes(10)}, made {fmt_time(T0 - 200)}) to make room for "
        f"{NAME}"]


# --- resume: uploads interrupted earlier ------------------------------------------------------


def test_an_interrupted_upload_on_record_keeps_a_lost_answer_from_adopting(doc: Path) -> None:
    # a run that crashed mid-upload left an attempt on record (a "ghost"): a copy that fits
    # both could be the ghost's, so this upload adopts nothing and reports it
    size = doc.stat().st_size
    twin = stored("f-twin", NAME, size, T0 + 2)
    script = _script().on("list", listing(), listing(twin))
    local = script.run(preflight_steps(script, doc, UploadOptions(progress=False))).file
    script.on("create", lost(), stored("f-new", NAME, size, T0 + 9))
    ghost = Attempt(NAME, size, "file-extract", T0 - 30)
    sent = script.run(send_steps(script, local, purpose="file-extract", claims=Claims(),
                                 ghosts={7: ghost}))
    assert sent.file.id == "f-new" and not sent.adopted
    assert [s.id for s in sent.suspects] == ["f-twin"]
    assert script.calls("delete") == []


def test_without_an_interrupted_upload_on_record_the_same_copy_is_adopted(doc: Path) -> None:
    # the twin of the test above: the ghost alone made the difference
    size = doc.stat().st_size
    twin = stored("f-twin", NAME, size, T0 + 2)
    script = _script().on("list", listing(), listing(twin))
    local = script.run(preflight_steps(script, doc, UploadOptions(progress=False))).file
    script.on("create", lost())
    sent = script.run(send_steps(script, local, purpose="file-extract", claims=Claims()))
    assert sent.file.id == "f-twin" and sent.adopted
