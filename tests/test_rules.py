"""The pure decision functions: retry, waits, quota planning, pacing, filters, type rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._config import Limits, RetryPolicy
from kimi_files._filerules import check_purpose, check_size, classify_type
from kimi_files._pacing import Pacer, next_start
from kimi_files._quota import Usage, deficit, plan_room, select_candidates, select_for_deletion
from kimi_files._retry import (
    MIN_SERVER_WAIT,
    attempts_left,
    is_slow_down,
    may_have_stored,
    retry_wait,
    should_retry,
    wait_notice,
)
from kimi_files._scan import matches_filters
from kimi_files.errors import error_from_response

POLICY = RetryPolicy(initial_wait=1.0, max_wait=30.0, jitter=1.0, max_server_wait=120.0)


def _err(status: int, etype: str, message: str) -> kf.APIStatusError:
    return error_from_response(status, f'{{"error":{{"type":"{etype}","message":"{message}"}}}}'
                               .encode())


# --- retry ------------------------------------------------------------------------------------

def test_retry_decisions() -> None:
    assert should_retry(_err(500, "server_error", "Failed to extract file: x"))
    assert should_retry(_err(429, "engine_overloaded_error", "overloaded"))
    assert should_retry(kf.APITimeoutError("t"))
    assert should_retry(error_from_response(502, b"<html></html>"))
    assert not should_retry(_err(429, "exceeded_current_quota_error", "account x is suspended"))
    assert not should_retry(_err(401, "invalid_authentication_error", "Invalid Authentication"))
    assert not should_retry(_err(400, "invalid_request_error", "Invalid request: x"))
    assert not should_retry(_err(404, "resource_not_found_error", "x"))
    assert not should_retry(kf.LocalFileError("x"))
    assert not should_retry(ValueError("not ours"))


def test_may_have_stored() -> None:
    assert may_have_stored(kf.ConnectionLostError("x", request_sent=True))
    assert not may_have_stored(kf.APIConnectionError("refused", request_sent=False))
    assert may_have_stored(error_from_response(504, b""))
    assert not may_have_stored(_err(429, "engine_overloaded_error", "x"))


def test_server_wait_wins_with_jitter_and_too_long_ends_at_once() -> None:
    e = _err(429, "rate_limit_reached_error", "max RPM: 3, please try again after 17 seconds")
    assert retry_wait(e, 1, POLICY, rand=lambda: 0.5) == 17.5
    assert retry_wait(e, 1, POLICY, rand=lambda: 0.0) == 17
    e = _err(429, "rate_limit_reached_error", "max RPM: 3, please try again after 9999 seconds")
    wait = retry_wait(e, 1, POLICY)
    assert wait == math.inf and e.retry_after == 9999
    assert not attempts_left(1, 0, wait, POLICY, now=0, error=e)


def test_backoff_is_exponential_capped_with_jitter() -> None:
    e = kf.GatewayError("x", status_code=502)
    assert [retry_wait(e, n, POLICY, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6, 7)] == \
        [1, 2, 4, 8, 16, 30, 30]
    assert retry_wait(e, 1, POLICY, rand=lambda: 1.0) == 2.0


@given(attempt=st.integers(1, 1000), r=st.floats(0, 1),
       after=st.one_of(st.none(), st.floats(0, 1e9)))
def test_retry_wait_is_bounded_and_honours_the_server(attempt: int, r: float,
                                                      after: float | None) -> None:
    e = kf.RateLimitReachedError("x", status_code=429)
    e.retry_after = after
    wait = retry_wait(e, attempt, POLICY, rand=lambda: r)
    if after is None:
        assert 0 <= wait <= POLICY.max_wait + POLICY.jitter
    elif after > POLICY.max_server_wait:
        assert wait == math.inf
    elif after < MIN_SERVER_WAIT:
        backoff = min(POLICY.max_wait, POLICY.initial_wait * 2.0 ** (attempt - 1))
        assert wait == max(MIN_SERVER_WAIT, backoff) + POLICY.jitter * r
    else:
        assert wait == after + POLICY.jitter * r


@pytest.mark.parametrize("after", [0.0, 0.2, -5.0, math.nan])
def test_a_server_that_says_retry_at_once_meets_the_backoff_not_a_hammer(after: float) -> None:
    e = kf.RateLimitReachedError("please try again after 0 seconds", status_code=429)
    e.retry_after = after
    assert [retry_wait(e, n, POLICY, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6, 7)] == \
        [1, 2, 4, 8, 16, 30, 30]
    no_backoff = RetryPolicy(initial_wait=0.0, jitter=0.0)
    assert retry_wait(e, 1, no_backoff) == MIN_SERVER_WAIT == 0.5
    e.retry_after = MIN_SERVER_WAIT  # a real figure at the floor is taken as it is
    assert retry_wait(e, 5, POLICY, rand=lambda: 0.0) == 0.5


def test_attempts_and_time_are_bounded() -> None:
    p = RetryPolicy(max_attempts=3, timeout=10)
    assert attempts_left(1, 0, 1, p, now=0) and attempts_left(2, 0, 1, p, now=0)
    assert not attempts_left(3, 0, 1, p, now=0)
    assert not attempts_left(1, 0, 5, p, now=6)
    with pytest.raises(kf.ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(kf.ConfigurationError):
        RetryPolicy(max_overload_attempts=0)


def test_overload_is_bounded_by_the_budget_not_the_attempt_count() -> None:
    p = RetryPolicy()  # the default: 6 attempts, 900 s
    overloaded = _err(429, "engine_overloaded_error", "overloaded")
    gateway_503 = error_from_response(503, b"<html>busy</html>")
    extraction = _err(500, "server_error", "Failed to extract file: x")
    # attempt 20 after ten minutes of overload: keep going while the budget lasts
    for error in (overloaded, gateway_503):
        assert attempts_left(20, 0, 30, p, now=600, error=error)
        assert not attempts_left(20, 0, 30, p, now=880, error=error)
    # other retryable errors keep their attempt cap; so does a caller that names no error
    assert not attempts_left(6, 0, 1, p, now=10, error=extraction)
    assert not attempts_left(6, 0, 1, p, now=10)
    # an explicit retry count is honoured whatever the error
    capped = p.with_retries(2)
    assert attempts_left(2, 0, 1, capped, now=0, error=overloaded)
    assert not attempts_left(3, 0, 1, capped, now=0, error=overloaded)


def test_slow_down_signals() -> None:
    assert is_slow_down(_err(429, "engine_overloaded_error", "overloaded"))
    assert is_slow_down(_err(429, "rate_limit_reached_error",
                             "Organization Rate limit exceeded, please try again after 1 seconds"))
    assert is_slow_down(error_from_response(503, b"<html>503</html>"))
    assert is_slow_down(error_from_response(503, b'{"error":{"type":"x","message":"busy"}}'))
    assert not is_slow_down(error_from_response(502, b"<html>502</html>"))
    assert not is_slow_down(_err(429, "exceeded_current_quota_error", "account x is suspended"))
    assert not is_slow_down(_err(500, "server_error", "Failed to extract file: x"))
    assert not is_slow_down(kf.APITimeoutError("t"))
    assert not is_slow_down(None)


def test_wait_notices() -> None:
    overloaded = _err(429, "engine_overloaded_error", "overloaded")
    assert wait_notice(overloaded, 3, 4.9, 800) is None
    assert wait_notice(overloaded, 3, 16.4, 800.2, "a.pdf") == (
        "a.pdf: waiting 16s before retrying (HTTP 429 engine_overloaded_error); "
        "giving up after 800s more")
    refused = kf.APIConnectionError("GET http://h/v1/files: could not connect (refused)")
    assert wait_notice(refused, 1, 1.2, 899) == (
        "GET http://h/v1/files: could not connect (refused); will retry for up to 899s more "
        "(next attempt in 1s)")
    assert wait_notice(refused, 2, 2, 890) is None
    lost = kf.ConnectionLostError("reset", request_sent=True)
    assert wait_notice(lost, 1, 1, 899) is None


# --- quota -------------------------------------------------------------------------------------

def _files(*specs: tuple[int, int]) -> list[kf.FileObject]:
    return [kf.FileObject(id=f"f{i}", bytes=size, created_at=ts)
            for i, (ts, size) in enumerate(specs)]


def test_fits_without_deleting() -> None:
    plan = plan_room(_files((1, 10)), 1, 10, Limits(max_files=3, max_total_bytes=100))
    assert plan.deletions == ()


def test_oldest_first_only_as_many_as_needed() -> None:
    files = _files((30, 10), (10, 10), (20, 10), (40, 10))
    limits = Limits(max_files=4, max_total_bytes=1000)
    plan = plan_room(files, 2, 5, limits, "oldest")
    assert [f.created_at for f in plan.deletions] == [10, 20]


def test_bytes_drive_deletions_too() -> None:
    files = _files((1, 50), (2, 30), (3, 15))
    plan = plan_room(files, 1, 40, Limits(max_files=10, max_total_bytes=100), "oldest")
    assert [f.id for f in plan.deletions] == ["f0"]
    assert plan.freed_bytes == 50


def test_never_policy_refuses_with_numbers() -> None:
    files = _files((1, 50), (2, 30))
    with pytest.raises(kf.NotEnoughFileSlotsError) as info:
        plan_room(files, 2, 1, Limits(max_files=3, max_total_bytes=1000), "never", what="x")
    assert info.value.files_to_free == 1
    assert "1 file(s) must go" in str(info.value) and "--free-quota oldest" in str(info.value)
    with pytest.raises(kf.NotEnoughStorageError) as info2:
        plan_room(files, 1, 40, Limits(max_files=10, max_total_bytes=100), "never")
    assert info2.value.bytes_to_free == 20 and "20 bytes must go" in str(info2.value)
    assert isinstance(info.value, kf.TooManyFilesError)


def test_protected_and_selected_files_are_respected() -> None:
    files = _files((1, 10), (2, 10), (3, 10))
    limits = Limits(max_files=3, max_total_bytes=1000)
    plan = plan_room(files, 1, 1, limits, "oldest", protected={"f0"})
    assert [f.id for f in plan.deletions] == ["f1"]
    plan = plan_room(files, 1, 1, limits, lambda f: f.id == "f2")
    assert [f.id for f in plan.deletions] == ["f2"]
    plan = plan_room(files, 1, 1, limits, ["f1", "f0"])
    assert [f.id for f in plan.deletions] == ["f1"]
    with pytest.raises(kf.NoRoomError, match="not enough"):
        plan_room(files, 2, 1, limits, ["f1"])
    with pytest.raises(kf.ConfigurationError):
        select_candidates(files, "newest")  # type: ignore[arg-type]


def test_a_batch_bigger_than_the_account_is_refused() -> None:
    with pytest.raises(kf.NoRoomError, match="larger than the whole account"):
        plan_room([], 5, 1, Limits(max_files=4), "oldest")


file_specs = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 40)), max_size=12)


@given(specs=file_specs, need_files=st.integers(0, 6), need_bytes=st.integers(0, 120),
       max_files=st.integers(1, 12), max_bytes=st.integers(1, 300),
       protect=st.sets(st.integers(0, 11), max_size=4))
def test_planner_properties(specs: list[tuple[int, int]], need_files: int, need_bytes: int,
                            max_files: int, max_bytes: int, protect: set[int]) -> None:
    files = _files(*specs)
    limits = Limits(max_files=max_files, max_total_bytes=max_bytes)
    usage = Usage.of(files, limits)
    assume(usage.files <= max_files and usage.bytes <= max_bytes)
    protected = {f"f{i}" for i in protect}
    candidates = select_candidates(files, "oldest", protected)
    # room can be made iff deleting every candidate makes it
    all_files = len(candidates)
    all_bytes = sum(f.bytes for f in candidates)
    short_f, short_b = deficit(usage, need_files, need_bytes)
    possible = (need_files <= max_files and need_bytes <= max_bytes
                and all_files >= short_f and all_bytes >= short_b)
    try:
        plan = plan_room(files, need_files, need_bytes, limits, "oldest", protected=protected)
    except kf.NoRoomError:
        assert not possible
        return
    assert possible
    deleted = plan.deletions
    assert not {f.id for f in deleted} & protected
    # it fits after the deletions
    assert usage.files - len(deleted) + need_files <= max_files
    assert usage.bytes - sum(f.bytes for f in deleted) + need_bytes <= max_bytes
    # never more than needed: no shorter prefix of the oldest-first candidates fits
    assert list(deleted) == candidates[: len(deleted)]
    if deleted:
        shorter = deleted[:-1]
        assert (usage.files - len(shorter) + need_files > max_files
                or usage.bytes - sum(f.bytes for f in shorter) + need_bytes > max_bytes)


# --- pacing ------------------------------------------------------------------------------------

def test_next_start_rule() -> None:
    assert next_start([], 3, 60, now=5) == 5
    assert next_start([1, 2], 3, 60, now=5) == 5
    assert next_start([1, 2, 3], 3, 60, now=5) == pytest.approx(1 + 60 * 1.02 + 0.2)
    assert next_start([1, 2, 3], None, 60, now=5) == 5
    assert next_start([0, 100, 120, 130], 2, 60, now=131) == pytest.approx(120 + 60 * 1.02 + 0.2)
    assert next_start([0, 100, 120, 130], 2, 60, now=500) == 500


def test_slow_start_window() -> None:
    from kimi_files._pacing import next_window

    assert next_window(1, 8) == 2
    assert next_window(2, 8) == 4
    assert next_window(5, 8) == 8
    assert next_window(8, 8) == 8
    assert next_window(3, None) == 6
    # a success proves only as much concurrency as it ran with
    assert next_window(2, 8, used=1) == 2 and next_window(2, 8, used=2) == 4
    assert next_window(5, 2, used=1) == 2  # never above a ceiling learned meanwhile


def test_pacer_halves_its_window_on_429s() -> None:
    import contextlib

    pacer = Pacer(8, None)
    for _ in range(10):
        with pacer.slot():  # one at a time proves nothing about running two at once
            pass
    assert pacer.window == 2
    for _ in range(3):  # the window full at once: each round doubles it, up to the ceiling
        with contextlib.ExitStack() as stack:
            for _ in range(pacer.window):
                stack.enter_context(pacer.slot())
    assert pacer.window == 8
    pacer.learn(_err(429, "engine_overloaded_error", "overloaded"))
    assert pacer.window == 4 and pacer.concurrency == 8


def test_pacer_learns_the_tier_from_429s() -> None:
    pacer = Pacer(8, None)
    pacer.learn(_err(429, "rate_limit_reached_error", "max concurrency: 1, please try again "
                                                      "after 1 seconds"))
    pacer.learn(_err(429, "rate_limit_reached_error", "max RPM: 3, please try again after 2 "
                                                      "seconds"))
    assert (pacer.concurrency, pacer.rpm) == (1, 3)
    pacer.learn(_err(429, "rate_limit_reached_error", "max RPM: 200, please try again after 2 "
                                                      "seconds"))
    assert pacer.rpm == 3  # only ever tightens


def test_pacer_spaces_requests_when_waiting_is_off(no_wait: list[float]) -> None:
    pacer = Pacer(None, 2, period=10)
    for _ in range(5):
        with pacer.slot():
            pass
    assert len(no_wait) == 3 and all(w > 9 for w in no_wait)


# --- preflight rules ------------------------------------------------------------------------

def test_purpose_and_size_rules() -> None:
    check_purpose("file-extract")
    with pytest.raises(kf.InvalidPurposeError, match="'fine-tune' is not accepted"):
        check_purpose("fine-tune", "a.txt")
    with pytest.raises(kf.EmptyFileError, match="a.txt: the file is empty"):
        check_size("a.txt", 0, Limits())
    too_large = r"104,857,601 bytes is over the per-file limit of 100\.0 MiB \(104,857,600 bytes\)"
    with pytest.raises(kf.FileTooLargeError, match=too_large):
        check_size("a.txt", 100 * 1024 * 1024 + 1, Limits())
    check_size("a.txt", 100 * 1024 * 1024, Limits())


@pytest.mark.parametrize(
    ("name", "mime", "purpose", "sent", "refused", "warns"),
    [
        ("a.pdf", "application/pdf", "file-extract", "application/pdf", False, False),
        ("a.py", "text/x-script.python", "file-extract", "text/x-script.python", False, False),
        ("a.docx", "application/zip", "file-extract",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document", False, False),
        ("a.zip", "application/zip", "file-extract", "application/zip", True, False),
        ("a.pdf", "application/x-executable", "file-extract", "", True, True),
        ("a.bin", "application/octet-stream", "file-extract", "", True, False),
        ("a.pdf", "text/plain", "file-extract", "text/plain", False, True),
        ("a.mp4", "video/mp4", "file-extract", "", True, False),
        ("a.mp4", "video/mp4", "video", "video/mp4", False, False),
        ("a.txt", "text/plain", "image", "", True, False),
        ("a.png", "image/png", "image", "image/png", False, False),
        ("a.jsonl", "application/json", "batch", "application/json", False, False),
        ("a.csv", "text/csv", "file-extract", "text/csv", False, False),
    ],
)
def test_type_rules(name: str, mime: str, purpose: str, sent: str, refused: bool,
                    warns: bool) -> None:
    if refused:
        with pytest.raises(kf.UnsupportedFileTypeError, match=f"{name}: the content is"):
            classify_type(name, name, mime, purpose)
        got, warnings = classify_type(name, name, mime, purpose, allow_any_type=True)
        assert got == mime
    else:
        got, warnings = classify_type(name, name, mime, purpose)
        assert got == sent
    assert bool(warnings) == warns


# --- filters and selections ----------------------------------------------------------------

def test_glob_filters() -> None:
    assert matches_filters("a/b.pdf", ["*.pdf"], [])
    assert not matches_filters("a/b.txt", ["*.pdf"], [])
    assert not matches_filters("drafts/b.pdf", [], ["drafts/*"])
    assert matches_filters("final/b.pdf", [], ["drafts/*"])


def test_delete_selection() -> None:
    files = [kf.FileObject(id="a", filename="x.pdf", created_at=1),
             kf.FileObject(id="b", filename="y.txt", created_at=86400 * 10)]
    now = 86400 * 11
    kw = {"ids": [], "match": None, "older_than_days": None, "everything": False, "now": now}
    assert select_for_deletion(files, **{**kw, "match": "*.pdf"}) == files[:1]
    assert select_for_deletion(files, **{**kw, "older_than_days": 5}) == files[:1]
    assert select_for_deletion(files, **kw) == []
    assert select_for_deletion(files, **{**kw, "everything": True}) == files
    assert select_for_deletion(files, **{**kw, "ids": ["b"]}) == files[1:]
    # a file with no plausible date (0: what parsing makes of none) is never old enough
    undated = kf.FileObject(id="c", filename="z.txt", created_at=0)
    assert select_for_deletion([undated], **{**kw, "older_than_days": 5}) == []


def test_short_text_is_text() -> None:
    from kimi_files._preflight import looks_like_text

    assert looks_like_text(b"x") and looks_like_text("你好\n".encode())
    assert looks_like_text("你好".encode()[:-1])  # cut mid-character at the sample's end
    assert not looks_like_text(b"\x00\x01") and not looks_like_text(b"\xff\xfeab")
    assert not looks_like_text(b"")


def test_a_batch_call_names_an_unknown_option_and_what_it_knows() -> None:
    from kimi_files._batch import BatchOptions
    from kimi_files._extract_models import ExtractOptions
    from kimi_files._options import path_list, split_upload_options

    upload, rest = split_upload_options({"purpose": "image", "window": 3}, {"window"}, "extract")
    assert upload.purpose == "image" and rest == {"window": 3}
    with pytest.raises(kf.ConfigurationError, match=r"unknown ingest option\(s\) windw; known: "
                                                    r".*allow_any_type.*concurrency"):
        BatchOptions.of({"windw": 3})
    with pytest.raises(kf.ConfigurationError, match=r"unknown extract option\(s\) keeep; known: "
                                                    r".*keep.*purpose"):
        ExtractOptions.of({"keeep": True})
    assert path_list("a.txt") == ["a.txt"] and path_list(("a", "b")) == ["a", "b"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from kimi_files._headers import parse_retry_after

    assert parse_retry_after(" 120 ") == 120.0 and parse_retry_after("-5") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date gone by
    assert (parse_retry_after("Tue, 01 Jan 2999 00:00:00 GMT") or 0) > 3600  # one to come
    assert [parse_retry_after(v) for v in (None, "", "soon", "nan", "inf", "21 Oct")] \
        == [None] * 6
