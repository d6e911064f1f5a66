"""Issue #18: the tool says what it decided and why, does the part that fits, and fails fast
on a wrong base URL (items 1, 2, 3, 4 and 6)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._retry import connect_failure, should_retry, unreachable_message
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write
from .test_platform import _closed_port

# --- item 2: a wrong base URL fails fast ------------------------------------------------------


def test_first_contact_failures_are_classified_and_only_before_any_answer() -> None:
    import ssl

    refused = OSError("wrapped")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert connect_failure(refused, answered=False) == "refused"
    assert connect_failure(refused, answered=True) is None
    unknown = OSError("wrapped")
    unknown.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert connect_failure(unknown, answered=False) == "unknown host"
    assert connect_failure(ssl.SSLError(1, "WRONG_VERSION_NUMBER"), answered=False) == "tls"
    assert connect_failure(TimeoutError("slow"), answered=False) is None  # may be a slow network
    text = unreachable_message("GET", "https://h:1/v1/files", "https://h:1/v1", "tls", "x")
    assert "use http://h:1/v1" in text and "--base-url" in text


@pytest.mark.parametrize("kind", ["refused", "unknown host", "tls"])
def test_a_wrong_base_url_fails_at_once_naming_the_url_and_the_fix(
        kind: str, emulator: Emulator) -> None:
    if kind == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/v1"
        hint = "is the server (or the emulator) running?"
    elif kind == "unknown host":
        url = "https://kimi-files-test.invalid/v1"  # RFC 6761: never resolves
        hint = "'kimi-files-test.invalid' is unknown"
    else:
        url = emulator.base_url.replace("http://", "https://")  # TLS to a plain-http server
        hint = f"use {emulator.base_url}"
    started = time.monotonic()
    # waiting is on: a retry would sleep (the budget is 900 s)
    with kf.KimiFiles(api_key="k", base_url=url) as c, \
            pytest.raises(kf.ServerUnreachableError) as info:
        c.list()
    assert time.monotonic() - started < 3 * 5  # 3 s asked; generous for a loaded machine
    assert info.value.reason == kind and not should_retry(info.value)
    assert isinstance(info.value, kf.APIConnectionError)
    assert url in str(info.value) and hint in str(info.value)
    assert "Not retried" in str(info.value)


def test_after_one_answer_a_refused_connection_is_retried(no_wait: list[float]) -> None:
    with kf.KimiFiles(api_key="k", base_url=f"http://127.0.0.1:{_closed_port()}/v1",
                      max_retries=2) as c:
        c.answered = True  # the server answered before: the failure may be passing
        with pytest.raises(kf.APIConnectionError) as info:
            c.list()
    assert not isinstance(info.value, kf.ServerUnreachableError)
    assert len(no_wait) == 2


def test_the_first_answer_is_remembered(client: kf.KimiFiles) -> None:
    assert not client.answered
    client.list()
    assert client.answered


# --- item 1: every slow-down is announced; every wait can be stopped ----------------------------


def _max_request(limit: int = 1) -> kf.APIStatusError:
    body = ('{"error": {"type": "rate_limit_reached_error", "message": "request reached max '
            f'request: {limit}, please try again after 1 seconds"}}}}').encode()
    return kf.error_from_response(429, body, {})


def test_a_learned_ceiling_is_said_with_the_answer_and_what_it_now_allows() -> None:
    from kimi_files._pacing import ceiling_notice, pacing_notice, window_notice

    err = _max_request(1)
    line = ceiling_notice(err, (4, None), (4, 1))
    assert line is not None
    assert "HTTP 429 rate_limit_reached_error" in line and "max request: 1" in line
    assert "from now on at most 1 request a minute (no ceiling before)" in line
    assert ceiling_notice(err, (4, 1), (4, 1)) is None  # nothing new: nothing said
    conc = ceiling_notice(err, (8, 30), (2, 30))
    assert conc is not None and "at most 2 requests at once (was 8)" in conc
    assert pacing_notice(4.9, 1, 60, "POST files") is None
    assert pacing_notice(48, 1, 60, "POST files") == (
        "POST files: waiting 48s for its turn (pacing: at most 1 request a minute)")
    assert window_notice(err, 1, None) is not None and window_notice(err, 1, 1) is None


def test_the_pacer_says_each_ceiling_and_each_long_wait_as_it_decides_it(
        caplog: pytest.LogCaptureFixture) -> None:
    from kimi_files._pacing import Pacer

    now = [1000.0]
    waited: list[float] = []
    pacer = Pacer(4, None, clock=lambda: now[0], wait=waited.append)
    with caplog.at_level(logging.WARNING, logger="kimi_files"):
        with pytest.raises(kf.RPMLimitError), pacer.slot("POST files"):
            raise _max_request(1)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "from now on at most 1 request a minute" in said[0]
        with pacer.slot("GET files"):  # the refused one counted: this one waits a minute
            pass
        with pacer.slot("POST files"):  # and this one two
            pass
    said = [r.getMessage() for r in caplog.records]
    assert len(waited) == 2 and 60 < waited[0] < waited[1]
    assert said[1:] == [
        f"{what}: waiting {w:.0f}s for its turn (pacing: at most 1 request a minute)"
        for what, w in zip(("GET files", "POST files"), waited, strict=True)]


def test_a_stop_ends_a_long_pacing_wait_at_once() -> None:
    import threading

    from kimi_files._pacing import Pacer
    from kimi_files._retry import stops_with

    pacer = Pacer(4, 1)  # real waits: the second request waits a minute
    with pacer.slot():
        pass
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with stops_with(stop), pytest.raises(kf.UploadCancelledError, match="pacing"), \
            pacer.slot("POST files"):
        pytest.fail("sent after a stop")
    assert time.monotonic() - started < 5  # not the minute


def test_a_stop_ends_a_long_pacing_wait_of_an_async_task() -> None:
    import asyncio
    import threading

    from kimi_files._pacing import Pacer
    from kimi_files._retry import stops_with

    pacer = Pacer(4, 1)

    async def main() -> None:
        async with pacer.aslot():
            pass
        stop = threading.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        with stops_with(stop), pytest.raises(kf.UploadCancelledError):
            async with pacer.aslot():
                pytest.fail("sent after a stop")

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 5


def test_a_batch_stopped_while_paced_ends_at_once(emulator: Emulator, tmp_path: Path) -> None:
    """Ctrl-C (the stop event) during a pacing wait of a batch: it returns at once."""
    import threading

    for i in range(3):
        write(tmp_path / "in" / f"f{i}.txt", f"file {i}")
    stop = threading.Event()
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        c.pacer.restrict(rpm=1)  # the second request waits a minute
        threading.Timer(1.0, stop.set).start()
        started = time.monotonic()
        report = c.ingest(tmp_path / "in", state=False, stop=stop, concurrency=2)
    assert time.monotonic() - started < 20  # minutes if the waits ignored the stop
    assert report.interrupted


def test_a_learned_ceiling_is_said_in_a_real_run(emulator: Emulator, client: kf.KimiFiles,
                                                 tmp_path: Path, no_wait: list[float],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    emulator.fail_next("max_request", times=1)
    f = write(tmp_path / "a.txt", "hello")
    with caplog.at_level(logging.WARNING, logger="kimi_files"):
        client.upload(f)
    said = [r.getMessage() for r in caplog.records]
    assert any("max request: 1" in m and "at most 1 request a minute" in m for m in said), said


def test_the_status_line_comes_when_nothing_else_was_shown_for_30s(
        caplog: pytest.LogCaptureFixture) -> None:
    from kimi_files._progress import Heartbeat, status_due, status_line

    assert not status_due(129.9, 100.0) and status_due(130.0, 100.0)
    assert status_line(3, 12, 2048, 4096, 95.2, "pacing at most 1 request a minute") \
        == ("still working: 3/12 files done, 2.0 KiB (2,048 bytes) of 4.0 KiB (4,096 bytes) "
            "sent, 95s so far; pacing at most 1 request a minute")
    from kimi_files._pacing import Pacer

    assert Pacer(4, 1).describe() == "pacing at most 1 request a minute"
    assert Pacer(4, None).describe() == ""
    now = [0.0]
    handlers = list(logging.getLogger("kimi_files").handlers)
    with caplog.at_level(logging.WARNING, logger="kimi_files"), \
            Heartbeat(lambda: "status!", clock=lambda: now[0], start=False) as beat:
        # no handler added: a program with no logging set up still sees warnings (last resort)
        assert logging.getLogger("kimi_files").handlers == handlers
        now[0] = 29.0
        assert not beat.tick()
        now[0] = 30.0
        assert beat.tick()  # 30 s of silence
        now[0] = 45.0
        logging.getLogger("kimi_files").warning("a wait was announced")  # news
        now[0] = 70.0
        assert not beat.tick()  # 25 s since the news
        beat.touch()  # a result printed
        now[0] = 99.0
        assert not beat.tick()
        now[0] = 100.0
        assert beat.tick()
    assert [r.getMessage() for r in caplog.records].count("status!") == 2


def test_the_batch_bar_counts_files(tmp_path: Path) -> None:
    import io

    from kimi_files._progress import (
        ProgressBar,
        disable_progress_bars,
        enable_progress_bars,
        files_label,
    )

    assert files_label(3, 12) == "3/12 files"
    out = io.StringIO()
    enable_progress_bars()  # the suite turns them off
    try:
        bar = ProgressBar(total=100, files=3, enabled=True, file=out)
        bar.advance(100)  # every byte sent, files still waiting
        bar.file_done()
        bar.close()
    finally:
        disable_progress_bars()
    assert "1/3 files" in out.getvalue() and bar.files_done == 1


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_drivers_draw_the_batch_bar_and_hold_the_status_line_until_closed(
        driver: str) -> None:
    import asyncio

    from kimi_files._progress import Heartbeat, ProgressBar
    from kimi_files._steps import Close, Progress, Status, Steps, run_async, run_sync

    logger = logging.getLogger("kimi_files")
    ages: list[float] = []

    def describe(age: float) -> str:
        ages.append(age)
        return "status!"

    def steps() -> Steps[tuple[Any, Any, bool]]:
        bar = yield Progress(100, "", False, files=3, position=0, leave=False)
        beat = yield Status(describe)
        held = beat in logger.filters  # while held, a WARNING said is news to it
        yield Close(beat)
        yield Close(bar)
        return bar, beat, held

    bar, beat, held = (run_sync(steps(), client=None) if driver == "sync"
                       else asyncio.run(run_async(steps(), client=None)))
    assert isinstance(bar, ProgressBar) and bar.files == 3 and not bar.drawn
    assert isinstance(beat, Heartbeat) and held and beat not in logger.filters
    assert beat._describe() == "status!" and 0 <= ages[0] < 60  # the seconds since it began


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_drivers_move_bars_on_and_a_files_bar_counts_in_its_overall_bar(
        driver: str) -> None:
    import asyncio

    from kimi_files._progress import Heartbeat
    from kimi_files._steps import Advance, Close, Progress, Status, Steps, run_async, run_sync

    def steps() -> Steps[tuple[Any, Any, Any]]:
        overall = yield Progress(100, "", False, files=3)
        one = yield Progress(40, "a.txt", False, part_of=overall)
        yield Advance(one, 40)
        yield Advance(overall, 40, files=1, note="40 B")  # a file that never had its own bar
        yield Close(one)  # its file is done: counted once, however often it is closed
        one.close()
        beat = yield Status(lambda age: "status!")
        beat._last = -1e9  # long silent: a status line would be due
        yield Advance(beat)  # a result shown just now: not due any more
        return overall, one, beat

    overall, one, beat = (run_sync(steps(), client=None) if driver == "sync"
                          else asyncio.run(run_async(steps(), client=None)))
    assert (one.n, overall.n, overall.files_done) == (40, 40, 2)
    assert isinstance(beat, Heartbeat) and not beat.tick()


# --- item 4: do the part that fits ----------------------------------------------------------


def _items(sizes: list[int]) -> list[Any]:
    from kimi_files._preflight import LocalFile
    from kimi_files._scan import Item

    return [Item(LocalFile(Path(f"/in/f{k}.txt"), f"f{k}.txt", size, 1, "text/plain"),
                 f"f{k}.txt") for k, size in enumerate(sizes)]


def _stored(n: int, size: int = 1, start: int = 1000) -> list[kf.FileObject]:
    return [kf.FileObject(id=f"old{k}", bytes=size, created_at=start + k, filename=f"o{k}",
                          purpose="file-extract", status="ok") for k in range(n)]


@given(sizes=st.lists(st.integers(1, 50), max_size=12), held=st.integers(0, 10),
       max_files=st.integers(1, 12), max_bytes=st.integers(10, 300))
def test_the_plan_sends_a_first_fit_in_input_order_and_deletes_nothing(
        sizes: list[int], held: int, max_files: int, max_bytes: int) -> None:
    from kimi_files._config import Limits
    from kimi_files._planner import plan_batch

    limits = Limits(max_files=max_files, max_total_bytes=max_bytes)
    listing = _stored(min(held, max_files), 1)
    items = _items(sizes)
    plan = plan_batch(items, listing, [], limits, "never", purpose="file-extract")
    assert plan.refusal is None and plan.room is not None and plan.room.deletions == ()
    sent = plan.uploads
    assert sorted(sent + list(plan.deferred), key=items.index) == items  # each once
    order = [items.index(i) for i in sent]
    assert sorted(order) == order or len(plan.groups) > 1  # groups keep their first's order
    free_files = max_files - len(listing)
    free_bytes = max_bytes - sum(f.bytes for f in listing)
    assert len(sent) <= free_files and sum(i.local.size for i in sent) <= free_bytes
    # every deferred file, at its place, did not fit what the files before it left
    for d in plan.deferred:
        before = [i for i in sent if items.index(i) < items.index(d)]
        assert (len(before) + 1 > free_files
                or sum(i.local.size for i in before) + d.local.size > free_bytes)
    assert (plan.deferral is None) == (not plan.deferred)


def test_the_deferral_says_what_would_finish_and_never_frees_the_batchs_own() -> None:
    from kimi_files._config import Limits
    from kimi_files._planner import plan_batch
    from kimi_files._state import Record

    limits = Limits(max_files=5, max_total_bytes=10**6)
    items = _items([10] * 4)
    others = _stored(3)  # someone else's old files: freeing them would finish the batch
    plan = plan_batch(items, others, [], limits, "never", purpose="file-extract")
    assert [i.shown for i in plan.uploads] == ["f0.txt", "f1.txt"]
    assert [i.shown for i in plan.deferred] == ["f2.txt", "f3.txt"]
    text = str(plan.deferral)
    assert "Sending the 2 that fit, in input order; 2 deferred" in text
    assert "--free-quota oldest" in text and "deletes the 2 oldest" in text
    assert "kimi-files extract" in text and "kimi-files delete" in text
    # the oldest files are this batch's own (earlier versions of its files): never suggested
    own = _stored(3)
    records = [Record(path=f"/in/f{k}.txt", size=1, mtime_ns=0, sha256="x" * 64,
                      filename=f"f{k}.txt", file_id=f"old{k}", purpose="file-extract",
                      status="uploaded") for k in range(3)]
    plan = plan_batch(items, own, records, limits, "never", purpose="file-extract")
    assert len(plan.deferred) == 2 and "--free-quota" not in str(plan.deferral)
    assert "kimi-files delete" in str(plan.deferral)
    # with freeing asked and not enough to free, the whole batch is refused as before
    plan = plan_batch(items, own, records, Limits(max_files=3, max_total_bytes=10**6),
                      ["nope"], purpose="file-extract")
    assert plan.refusal is not None and not plan.deferred


def test_a_batch_that_does_not_fit_sends_what_fits_and_defers_the_rest(
        limited: Any, tmp_path: Path, emulator: Emulator) -> None:
    client = limited(max_files=3)
    emulator.seed("someone-elses.txt", 5)
    paths = [write(tmp_path / "in" / f"f{k}.txt", f"file number {k}") for k in range(4)]
    report = client.ingest(paths, state=False)
    by_status = {r.path: r.status for r in report.results}
    assert [by_status[str(p)] for p in paths] == ["uploaded", "uploaded", "deferred", "deferred"]
    assert sorted(emulator.filenames()) == ["f0.txt", "f1.txt", "someone-elses.txt"]
    assert not report.ok and report.deleted == []
    deferred = [r for r in report.results if r.status == "deferred"]
    assert deferred[0].error is deferred[1].error  # one reason, said once
    assert deferred[0].to_json()["status"] == "deferred"
    assert deferred[0].to_json()["error"]["type"] == "NotEnoughFileSlotsError"
    summary = report.summary_lines()
    assert summary[0].startswith("2 uploaded, 2 deferred")
    assert sum("deferred (2 files): No room for all of this batch" in line
               for line in summary) == 1


# --- item 3: account full is batch-wide -------------------------------------------------------


def test_account_full_stops_sending_lists_once_and_reports_once(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    emulator.state.max_files = 3  # the account's real limit; the client plans for 1,000
    paths = [write(tmp_path / "in" / f"f{k:02}.txt", f"file number {k}") for k in range(10)]
    report = client.ingest(paths, state=False, concurrency=1)
    statuses = [r.status for r in sorted(report.results, key=lambda r: r.path)]
    assert statuses == ["uploaded"] * 3 + ["deferred"] * 7
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert len(posts) == 4  # three stored, one refused: nothing after the refusal
    assert [r.method for r in emulator.requests].count("GET") == 2  # the plan, then once more
    reasons = {id(r.error) for r in report.results if r.status == "deferred"}
    assert len(reasons) == 1  # one reason for all
    text = str(next(r.error for r in report.results if r.status == "deferred"))
    assert text.startswith(f"The account is full: the server refused {paths[3]}")
    assert "it holds 3 file(s) now" in text
    assert "pass --max-files 3 (or set KIMI_FILES_MAX_FILES=3" in text
    summary = report.summary_lines()
    assert sum("The account is full" in line for line in summary) == 1
    assert "deferred (7 files): The account is full" in "\n".join(summary)
    assert not report.ok


def test_the_account_full_reason_is_pure() -> None:
    from kimi_files._quota import account_full_error

    err = account_full_error("a.txt", "exceeded the max file count 100", 100, 100, 1000)
    assert isinstance(err, kf.NotEnoughFileSlotsError)
    assert "--max-files 100" in str(err) and "holds 100 file(s) now" in str(err)
    same = account_full_error("a.txt", "exceeded", None, None, 1000)
    assert "--max-files" not in str(same) and "holds" not in str(same)


# --- item 6: progress that counts files; deletions said once, with dates; purposes listed ------


def test_quota_deletions_are_said_once_with_readable_dates(
        limited: Any, emulator: Emulator, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from kimi_files._quota import fmt_time

    assert fmt_time(1_764_921_306) == "2025-12-05 07:55:06Z"
    assert fmt_time(0) == "0 (no date)"
    client = limited(max_files=2)
    emulator.seed("old.txt", 3, created_at=1_764_921_306)
    emulator.seed("older.txt", 3, created_at=1_764_000_000)
    paths = [write(tmp_path / "in" / f"f{k}.txt", f"file {k}") for k in range(1)]
    with caplog.at_level(logging.WARNING, logger="kimi_files"):
        report = client.ingest(paths, state=False, free_quota="oldest")
    said = [r.getMessage() for r in caplog.records if "to make room" in r.getMessage()]
    assert len(said) == 1 and "older.txt" in said[0]
    assert "made 2025-11-24 16:00:00Z" in said[0] and "1764000000" not in said[0]
    summary = report.summary_lines()
    assert not any("older.txt" in line for line in summary)  # named once, above
    assert "  deleted 1 file(s) to make room (3 bytes), each named above" in summary


def test_list_shows_the_purpose(emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from kimi_files.cli import main

    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    emulator.seed("photo.png", 5, purpose="image")
    emulator.seed("notes.txt", 5)
    assert main(["list", "--base-url", emulator.base_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SIZE", "CREATED", "PURPOSE", "STATUS", "FILENAME"]
    assert any("image" in line and line.endswith("photo.png") for line in lines)
    assert any("file-extract" in line and line.endswith("notes.txt") for line in lines)


# --- the CLI: the account's limits, the deferred batch ------------------------------------------


def test_byte_counts_take_units() -> None:
    import argparse

    from kimi_files.cli._common import _byte_count

    assert _byte_count("1048576") == 1024**2
    assert _byte_count("500MB") == 500 * 1000**2
    assert _byte_count("10GiB") == 10 * 1024**3
    assert _byte_count("1.5k") == 1536
    for bad in ("", "ten", "5 parsecs", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _byte_count(bad)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_max_files_tells_the_cli_the_accounts_limit(
        how: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from kimi_files.cli import upload_main

    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    emulator.seed("old.txt", 3)
    for k in range(3):
        write(tmp_path / "in" / f"f{k}.txt", f"file {k}")
    argv = ["--no-state", "--base-url", emulator.base_url, str(tmp_path / "in")]
    if how == "flag":
        argv[:0] = ["--max-files", "2"]
    else:
        monkeypatch.setenv("KIMI_FILES_MAX_FILES", "2")
    assert upload_main(argv) == 1  # deferred files: exit 1
    out, err = capsys.readouterr()
    assert sorted(line.split()[0] for line in out.splitlines()) == [
        "deferred", "deferred", "uploaded"]
    assert "deferred (2 files): No room for all of this batch" in err
    assert "the account holds 1 of 2 files" in err
    assert [r.method for r in emulator.requests].count("POST") == 1


def test_max_bytes_and_a_bad_variable(emulator: Emulator, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from kimi_files.cli import main

    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    assert main(["quota", "--json", "--max-bytes", "1KiB"]) == 0
    assert '"max_bytes": 1024' in capsys.readouterr().out
    monkeypatch.setenv("KIMI_FILES_MAX_BYTES", "lots")
    assert main(["quota"]) == 2
    assert "$KIMI_FILES_MAX_BYTES: expected a size" in capsys.readouterr().err


def test_after_a_stop_no_turn_is_taken_and_no_wait_is_said(
        caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from kimi_files._pacing import Pacer
    from kimi_files._retry import stops_with

    now = [0.0]
    waited: list[float] = []
    pacer = Pacer(4, 1, clock=lambda: now[0], wait=waited.append)
    with pacer.slot():
        pass
    stop = threading.Event()
    stop.set()
    with caplog.at_level(logging.WARNING, logger="kimi_files"), stops_with(stop), \
            pytest.raises(kf.UploadCancelledError), pacer.slot("POST files"):
        pytest.fail("sent after a stop")
    assert waited == [] and caplog.records == []


def test_a_batch_stopped_while_its_listing_waits_reports_every_file(
        emulator: Emulator, tmp_path: Path) -> None:
    import threading

    paths = [write(tmp_path / f"f{k}.txt", f"file {k}") for k in range(2)]
    stop = threading.Event()
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        c.pacer.restrict(rpm=1)
        c.list()  # the listing of the batch waits a minute for its turn
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        report = c.ingest(paths, state=False, stop=stop)
    assert time.monotonic() - started < 20
    assert report.interrupted and [r.status for r in report.results] == ["failed", "failed"]
    assert all("not started (interrupted)" in str(r.error) for r in report.results)


def test_the_async_client_fails_fast_too() -> None:
    import asyncio

    url = f"http://127.0.0.1:{_closed_port()}/v1"

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key="k", base_url=url) as c:
            with pytest.raises(kf.ServerUnreachableError, match="is the server"):
                await c.list()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_paced_upload_is_announced_by_its_file_name(
        kind: str, emulator: Emulator, tmp_path: Path, no_wait: list[float],
        caplog: pytest.LogCaptureFixture) -> None:
    from .conftest import Api

    f = write(tmp_path / "report.txt", "hello")
    api = Api(kind, api_key=API_KEY, base_url=emulator.base_url)
    try:
        api.client.pacer.restrict(rpm=1)
        with caplog.at_level(logging.WARNING, logger="kimi_files"):
            api.upload(f)
    finally:
        api.close()
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("report.txt (upload): waiting ") for m in said), said
    assert len(no_wait) == 1  # the listing went first, the upload waited its turn
