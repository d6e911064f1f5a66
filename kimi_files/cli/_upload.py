"""``kimi-upload`` and ``kimi-files upload``: upload files and folders."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import KNOWN_PURPOSES, RetryPolicy
from ..errors import KimiError, NoRoomError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._batch import BatchReport, FileResult, StateArg
    from ._common import Subparsers

from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MAX_CONCURRENCY,
    _client,
    _connection_options,
    _exit_now,
    _Stops,
    _Usage,
    _whole,
    add_walk_options,
    exclude_patterns,
)
from ._output import _emit, _emit_json, _say, _stdout_to_devnull


def _upload_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kimi-upload", parents=[_connection_options()],
        description="Upload files and folders to the Kimi Files API: every file is checked "
                    "first, the whole batch is planned against the account's quota, uploads "
                    "are paced, retried safely and recorded so a re-run resumes.",
        epilog="Exit codes: 0 all uploaded or skipped; 1 any rejected, failed or deferred; "
               "2 usage; "
               "130/143/129 stopped by Ctrl-C/SIGTERM/SIGHUP; 141 output closed.")
    _add_upload_options(p)
    return p


def _add_upload_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (walked recursively)")
    p.add_argument("--purpose", default="file-extract", choices=sorted(KNOWN_PURPOSES),
                   help="file-extract (default), image, video or batch")
    p.add_argument("--free-quota", choices=["never", "oldest"], default="never",
                   help="make room by deleting the oldest files, only as many as needed "
                        "(default: never delete)")
    p.add_argument("--dry-run", action="store_true",
                   help="check and plan only: no upload, no deletion")
    p.add_argument("--concurrency", type=_whole(1, MAX_CONCURRENCY), default=4, metavar="N",
                   help="uploads at once (default 4); lowered if the account says so")
    p.add_argument("--rpm", type=_whole(1, 1_000_000), metavar="N",
                   help="at most N requests a minute (learned from 429s if not given)")
    p.add_argument("--retries", type=_whole(0, 100), metavar="N",
                   help=f"retries per request (default {RetryPolicy().max_attempts - 1})")
    add_walk_options(p)
    p.add_argument("--replace", action="store_true",
                   help="once a changed file's new copy is stored, delete the copy this tool "
                        "stored for it before (only that very file, checked by the listing; "
                        "default: keep it, and say so)")
    p.add_argument("--no-reuse", action="store_true",
                   help="upload even what the account already holds with the same content "
                        "(default: reuse it)")
    p.add_argument("--allow-any-type", action="store_true",
                   help="send files of types the extractor cannot read (archives, binaries)")
    p.add_argument("--state", metavar="FILE",
                   help="the state file that makes re-runs resume (default: per account, in "
                        "$XDG_STATE_HOME/kimi-files)")
    p.add_argument("--no-state", action="store_true", help="keep no state (no resume)")
    p.add_argument("--wait", action="store_true",
                   help="wait for another run using the same state instead of exiting")
    p.add_argument("--json", action="store_true",
                   help="stdout: one JSON object per input file and nothing else")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")



def _reason(r: FileResult) -> str:
    """The error of a result without the path it usually starts with (the line shows it)."""
    message = str(r.error)
    prefix = f"{r.path}: "
    return message[len(prefix):] if message.startswith(prefix) and len(message) > len(prefix) \
        else message


class _ResultLines:
    """Human result lines; an error several files share (a batch-wide refusal, twins of a
    failed file) is given in full once, in the summary, and named briefly on each line."""

    def __init__(self) -> None:
        self._seen: dict[int, FileResult] = {}

    def line(self, r: FileResult) -> str:
        if r.error is None:
            tail = f" -> {r.file_id}" if r.file_id else ""
            note = f" ({r.note})" if r.note else ""
            return f"{r.status:9} {r.path}{tail}{note}"
        first = self._seen.setdefault(id(r.error), r)
        if r.status == "deferred":
            reason = f"{r.note or 'deferred'} (see below)"
        elif isinstance(r.error, NoRoomError):
            reason = "no room for this batch (see below)"
        elif first is not r:
            reason = f"{r.note or 'same error as ' + first.path} (see below)"
        else:
            reason = _reason(r)
        return f"{r.status:9} {r.path}: {reason}"


def _summary_lines(report: BatchReport) -> list[str]:
    """The summary, one escaped line each (:meth:`BatchReport.summary_lines`)."""
    first, *rest = report.summary_lines()
    return [f"kimi-upload: {first}", *rest]




def _do_upload(args: argparse.Namespace) -> int:
    from .._batch import ingest

    _check_upload_args(args)
    exclude = exclude_patterns(args)
    if args.no_progress:
        from .._progress import disable_progress_bars

        disable_progress_bars()
    out_lock = threading.Lock()
    ended: list[FileResult] = []
    output_closed = threading.Event()
    stop = threading.Event()
    on_result = _result_printer(args.json, out_lock, ended, output_closed, stop)
    started = time.monotonic()
    with _Stops() as stops, _client(args, retries=args.retries) as client, \
            contextlib.ExitStack() as stack:
        state = _state_of(args, stack)
        outcome: list[BatchReport | BaseException] = []

        def run() -> None:
            try:
                outcome.append(ingest(
                    args.paths, client=client, purpose=args.purpose,
                    free_quota=args.free_quota, dry_run=args.dry_run,
                    concurrency=args.concurrency, rpm=args.rpm, include=args.include,
                    exclude=exclude, state=state, replace=args.replace,
                    progress=None if not args.no_progress else False,
                    allow_any_type=args.allow_any_type, on_result=on_result, stop=stop,
                    reuse=not args.no_reuse,
                    follow_links=args.follow_links, wait=args.wait))
            except BaseException as exc:  # handed to the main thread, which raises it
                outcome.append(exc)

        # the batch runs beside the main thread, which stays free to take signals
        worker = threading.Thread(target=run, name="kimi-batch", daemon=True)
        worker.start()
        _watch(worker, stops, stop, out_lock, ended, started)
        result = outcome[0]
        if isinstance(result, BaseException):
            if stops.code is not None and isinstance(result, KimiError):
                _say(f"kimi-upload: {result}")
                return stops.code
            raise result
    return _finish(result, stops, output_closed)


def _check_upload_args(args: argparse.Namespace) -> None:
    if args.no_state and args.state:
        raise _Usage("--state and --no-state cannot be used together")
    if args.replace and args.no_state:
        raise _Usage("--replace needs the state (it knows which copies this tool stored): "
                     "drop --no-state")


def _state_of(args: argparse.Namespace, stack: contextlib.ExitStack) -> StateArg:
    """The ``state`` for ingest: False (none), the file given, one that goes with the
    emulator, or None (the default store)."""
    if args.no_state:
        return False
    if args.state:
        return str(args.state)
    if args.emulator:
        # the emulator is new each run: keep its state with it, not in the user's store
        import tempfile

        return Path(stack.enter_context(tempfile.TemporaryDirectory())) / "state.sqlite3"
    return None


def _result_printer(json_out: bool, out_lock: threading.Lock, ended: list[FileResult],
                    output_closed: threading.Event,
                    stop: threading.Event) -> Callable[[FileResult], None]:
    """The ``on_result`` of an upload: each result kept in ``ended`` and printed (a line, or
    JSON); once nobody reads stdout, nothing more is printed and no new upload starts."""
    lines = _ResultLines()

    def on_result(result: FileResult) -> None:
        with out_lock:
            ended.append(result)
            if output_closed.is_set():
                return
            try:
                if json_out:
                    _emit_json(result.to_json())
                else:
                    _emit(sys.stdout, lines.line(result))
            except BrokenPipeError:
                # nobody reads the results any more: start nothing new, as a tool killed by
                # SIGPIPE would not; the uploads in flight finish and are recorded
                _stdout_to_devnull()
                output_closed.set()
                stop.set()

    return on_result


def _watch(worker: threading.Thread, stops: _Stops, stop: threading.Event,
           out_lock: threading.Lock, ended: list[FileResult], started: float) -> None:
    """Wait for the batch while taking signals: the first one stops new uploads, the second
    prints the summary of what ended and exits at once."""
    from .._batch import BatchReport

    def first(signum: int) -> None:
        stop.set()
        _say(f"kimi-upload: {_Stops.describe(signum)}: no new upload starts; waiting for "
             "those in flight (again to stop at once)")

    def again() -> None:
        stop.set()
        with out_lock:  # no result line is half-written now
            report = BatchReport(results=list(ended), interrupted=True,
                                 elapsed=time.monotonic() - started)
            for line in _summary_lines(report):
                _say(line)
            _say("kimi-upload: stopped at once: files without a line above were abandoned "
                 "in flight or never started (a re-run settles them)")
            _exit_now(stops.code or EXIT_INTERRUPTED)

    stops.watch(worker, first, again)


def _finish(report: BatchReport, stops: _Stops, output_closed: threading.Event) -> int:
    """Print the summary; the exit code."""
    for line in _summary_lines(report):
        _say(line)
    if stops.code is not None:
        return stops.code
    if output_closed.is_set():
        return EXIT_BROKEN_PIPE
    if report.interrupted:
        return EXIT_INTERRUPTED
    # possible extra copies on the account: not the clean run the exit code 0 promises
    return (EXIT_OK if report.ok and report.results and not report.suspects_remain
            else EXIT_FAILED)


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("upload", parents=parents, help="upload files and folders (= kimi-upload)")
    _add_upload_options(up)
    up.set_defaults(func=_do_upload)
