"""The shared core's rules, driven step by step with scripted answers: no server, no threads.

Each scenario feeds :func:`kimi_files._uploader.upload_steps` (or a part of it) the answers of
the ``Script`` in ``tests/scripted.py`` and checks the actions the steps asked for: how many
uploads were sent, what was listed, what was deleted, how long they chose to wait.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_files._config import Limits, RetryPolicy
from kimi_files._options import UploadOptions
from kimi_files._reconcile import RELIST_WAITS
from kimi_files._uploader import upload_steps
from kimi_files.errors import (
    AuthenticationError,
    ConnectionLostError,
    ExtractionFailedError,
    MalformedResponseError,
    NoExtractableTextError,
    NotEnoughFileSlotsError,
    RPMLimitError,
)

from .scripted import Script, answer, listing, stored

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
        doc: Path, caplog: pytest.LogCaptureFixture) -> None:
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
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
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
