"""The command line: ``kimi-upload`` for uploads, ``kimi-files`` for the rest.

::

    kimi-upload [options] PATH...            upload files and folders (recursively)
    kimi-files upload [options] PATH...      the same
    kimi-files list [--json]                 the account's files
    kimi-files quota [--json]                files and bytes used of 1,000 and 10 GB
    kimi-files delete ID... | --match GLOB | --older-than DAYS | --all  [--dry-run] [--yes]
    kimi-files content ID... [-o DIR] | --all -o DIR   the extracted text
    kimi-files emulator [--port N] ...       serve the local emulator

Exit codes: 0 success; 1 a file was rejected or failed, or an API call failed; 2 a usage or
configuration error (bad option, missing key, malformed base URL); 130 interrupted (Ctrl-C,
SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP); 141 the output was closed (a broken
pipe, as in ``kimi-files list | head -1``: what a standard tool killed by SIGPIPE reports).
No traceback for any failure a user can cause.

An upload stops on the first Ctrl-C, SIGTERM or SIGHUP: no new upload starts, those in flight
finish, every result is recorded in the state and the summary is printed. A second signal
stops at once: uploads in flight are abandoned (their intents stay in the state, so the next
run settles them), the summary of what ended is printed, and the process exits.

Human output shows control characters of names (ESC, BEL, CR, LF, the other C0 and C1
controls, DEL, bidirectional overrides) escaped, as ``\\x1b``, ``\\n``, ``\\u202e``, so no
name can forge a line or drive the terminal; ``--json`` output is exact (JSON escapes them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# httpx imports its own command line (click, pygments) whenever they are installed, as they
# are beside uvicorn. This process is kimi-files' command line and never uses httpx's: keep
# it out of start-up (about 20 ms). A None entry makes that one import fail, and httpx then
# defines a stub in its place.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .config import API_KEY_ENV, FALLBACK_API_KEY_ENV, KNOWN_PURPOSES
from .errors import ConfigurationError, KimiError, NoRoomError, redact
from .progress import shown
from .quota import fmt_bytes, select_for_deletion

if TYPE_CHECKING:
    from .batch import BatchReport, FileResult
    from .client import KimiFiles
    from .config import Limits
    from .models import FileObject

__all__ = ["main", "shown", "upload_main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: 128 + the signal's number, as a shell reports a process that signal ended.
EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 129, 130, 141, 143

#: The longest --timeout that makes sense: a day.
MAX_TIMEOUT = 86400.0
#: The most uploads at once any account allows (the top tier's concurrency).
MAX_CONCURRENCY = 1000


class _Usage(Exception):
    """A usage error found after parsing."""


# --- text that is safe to show ----------------------------------------------------------------

#: What JSON leaves raw and a terminal may act on: DEL, C1 controls, bidirectional marks, the
#: line and paragraph separators, lone surrogates (JSON escapes C0 controls by itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")


def json_line(obj: Any) -> str:
    """``obj`` as one line of JSON that no terminal acts on: JSON escapes C0 controls itself;
    DEL, C1 controls, bidirectional marks and lone surrogates are escaped as ``\\uXXXX`` too.
    The value is exactly the same."""
    text = json.dumps(obj, ensure_ascii=False)
    # outside strings JSON is ASCII, so every match is inside a string: escaping it is exact
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _raw(text: str) -> str:
    """Text shown as it is (extracted content): only what cannot be encoded is replaced."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- shared options ---------------------------------------------------------------------------


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a number of at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected a number of at most {maximum:,}, got {value:,}")
        return value

    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: seconds, more than 0 and at most a day."""
    value = _number(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected seconds greater than 0 and at most {MAX_TIMEOUT:.0f} (a day), got {text!r}")
    return value


def _days(text: str) -> float:
    """An argparse type: days, 0 or more and at most 100 years."""
    value = _number(text)
    if not 0 <= value <= 36525:
        raise argparse.ArgumentTypeError(
            f"expected days from 0 to 36525 (100 years), got {text!r}")
    return value


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--base-url", metavar="URL",
                   help="API base URL (default: $MOONSHOT_BASE_URL or https://api.moonshot.ai/v1);"
                        " the key comes from $MOONSHOT_API_KEY")
    g.add_argument("--platform", choices=["international", "china"],
                   help="shortcut for the base URL of platform.kimi.ai or platform.kimi.com")
    g.add_argument("--allow-http", action="store_true",
                   help="allow plain http to a non-loopback host (the key travels unencrypted)")
    g.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="give up on a request with no progress for this long, at most a day "
                        "(default: 15 s to connect, 120 s per write, 300 s for an answer)")
    g.add_argument("--emulator", action="store_true",
                   help="start the bundled emulator in-process and use it (no key, no network)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more to stderr (-v: info, -vv: debug)")
    return p


def _upload_parser(prog: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, parents=parents,
        description="Upload files and folders to the Kimi Files API: every file is checked "
                    "first, the whole batch is planned against the account's quota, uploads "
                    "are paced, retried safely and recorded so a re-run resumes.",
        epilog="Exit codes: 0 all uploaded or skipped; 1 any rejected or failed; 2 usage; "
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
                   help="retries per request (default 5)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="only files whose name or relative path matches (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip files whose name or relative path matches (repeatable)")
    p.add_argument("--no-reuse", action="store_true",
                   help="upload even what the account already holds with the same content "
                        "(default: reuse it)")
    p.add_argument("--allow-any-type", action="store_true",
                   help="send files of types the extractor cannot read (archives, binaries)")
    p.add_argument("--follow-links", action="store_true",
                   help="follow links that lead outside the folders given")
    p.add_argument("--state", metavar="FILE",
                   help="the state file that makes re-runs resume (default: per account, in "
                        "$XDG_STATE_HOME/kimi-files)")
    p.add_argument("--no-state", action="store_true", help="keep no state (no resume)")
    p.add_argument("--wait", action="store_true",
                   help="wait for another run using the same state instead of exiting")
    p.add_argument("--json", action="store_true",
                   help="stdout: one JSON object per input file and nothing else")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- running --------------------------------------------------------------------------------------


class _ShownFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # the whole line, a traceback included, is redacted once more
        return _redact(super().format(record))


def _keys() -> list[str]:
    """The API keys this process may send (the environment's), to keep out of any output."""
    return [key for name in (API_KEY_ENV, FALLBACK_API_KEY_ENV)
            if (key := os.environ.get(name, "").strip())]


def _redact(text: str) -> str:
    """``text`` without the API key, ``Bearer <token>`` values or ``sk-...`` tokens."""
    keys: list[str | None] = [*_keys()] or [None]
    for key in keys:
        text = redact(text, key)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites each record's message, its arguments merged, with the key, bearer tokens and
    ``sk-...`` tokens replaced (httpx's and httpcore's records carry URLs and headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: shown as written, arguments dropped
            message = str(record.msg)
        record.msg, record.args = _redact(message), None
        return True


#: Loggers that dump request or response headers at DEBUG: never enabled, whatever -v says.
_HEADER_LOGGERS = ("httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")


@contextlib.contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the length of a command, then put the loggers back as they were."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShownFormatter("kimi-files: %(levelname)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    saved = []
    for name in ("kimi_files", "httpx", "httpcore", *_HEADER_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        if name in _HEADER_LOGGERS:
            logger.setLevel(logging.WARNING)
            continue
        logger.handlers[:] = [handler]
        logger.setLevel(level if name == "kimi_files" or verbosity >= 2 else logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, old_level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(old_level)
            logger.propagate = propagate


@contextlib.contextmanager
def _client(args: argparse.Namespace, retries: int | None = None) -> Iterator[KimiFiles]:
    from .client import KimiFiles

    limits: Limits | None = getattr(args, "limits", None)
    if args.emulator:
        try:
            from .emulator import Emulator
        except ImportError:
            raise ConfigurationError(
                "--emulator needs the emulator extra: pip install 'kimi-files[emulator]'"
            ) from None
        with Emulator() as emu:
            key = os.environ.get("MOONSHOT_API_KEY") or "emulator"
            print(f"kimi-files: using the bundled emulator at {emu.base_url}", file=sys.stderr)
            # the emulator is new each run: no reuse cache to keep beside the user's
            with KimiFiles(api_key=key, base_url=emu.base_url, max_retries=retries,
                           timeout=args.timeout, limits=limits, cache=False) as c:
                yield c
        return
    with KimiFiles(base_url=args.base_url, platform=args.platform, allow_http=args.allow_http,
                   max_retries=retries, timeout=args.timeout, limits=limits) as c:
        yield c


def _stdout_to_devnull() -> None:
    """The reader of stdout went away: send what is left to /dev/null, so neither a later
    write nor the flush at exit fails (the Python documentation's advice for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _Signalled(BaseException):
    """SIGTERM or SIGHUP outside an upload: raised where the command is, like Ctrl-C's
    KeyboardInterrupt, so it ends through its own clean-up (a half-written file removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _handling(names: Iterable[str], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """For the length of the block, ``handler`` takes these signals (those this platform
    has), in the main thread only; the handlers before are put back after."""
    saved: list[tuple[int, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for name in names:
            signum = getattr(signal, name, None)
            if signum is not None:
                saved.append((signum, signal.signal(signum, handler)))
    try:
        yield
    finally:
        for signum, previous in reversed(saved):
            signal.signal(signum, previous)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """For the length of a command, SIGTERM and SIGHUP raise :class:`_Signalled` in the main
    thread (an upload's own handling, :class:`_Stops`, takes over while it runs)."""

    def handler(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    with _handling(("SIGTERM", "SIGHUP"), handler):
        yield


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    try:
        with _signals_raise(), _logging_to_stderr(args.verbose):
            return func(args)
    except _Signalled as exc:
        _say(f"{prog}: {_Stops.describe(exc.signum)}")
        return 128 + exc.signum
    except (ConfigurationError, _Usage) as exc:
        _say(f"{prog}: error: {exc}")
        return EXIT_USAGE
    except KimiError as exc:
        _say(f"{prog}: error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, as a standard tool would
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a local file or folder the command could not use
        where = f": {os.fsdecode(exc.filename)}" if exc.filename is not None else ""
        _say(f"{prog}: error: {exc.strerror or exc}{where}")
        return EXIT_FAILED


def _emit(stream: TextIO, text: str) -> None:
    """One line of human output, escaped (see :func:`shown`)."""
    from .progress import write_line

    write_line(shown(text), stream)


def _emit_json(stream: TextIO, obj: Any) -> None:
    from .progress import write_line

    write_line(json_line(obj), stream)


def _say(text: str) -> None:
    """One line on stderr, escaped: a line break inside ``text`` is shown as ``\\n``; never
    the API key (see :func:`_redact`)."""
    _emit(sys.stderr, _redact(text))


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
        if isinstance(r.error, NoRoomError):
            reason = "no room for this batch (see below)"
        elif first is not r:
            reason = f"{r.note or 'same error as ' + first.path} (see below)"
        else:
            reason = _reason(r)
        return f"{r.status:9} {r.path}: {reason}"


def _summary_lines(report: BatchReport, prog: str) -> list[str]:
    """The summary, one escaped line each (:meth:`BatchReport.summary_lines`)."""
    first, *rest = report.summary_lines()
    return [f"{prog}: {first}", *rest]


#: The signals that stop an upload, and how the CLI names them.
_STOP_SIGNALS = {"SIGINT": "interrupted (Ctrl-C)", "SIGTERM": "terminated (SIGTERM)",
                 "SIGHUP": "hung up (SIGHUP)"}


class _Stops:
    """Ctrl-C, SIGTERM and SIGHUP during an upload, in the main thread, for the length of
    the command. The handler only records the signal; the waiting loop acts on it."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._handling = _handling(_STOP_SIGNALS, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.received.append(signum)

    def __enter__(self) -> _Stops:
        self._handling.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handling.__exit__(None, None, None)

    @property
    def code(self) -> int | None:
        """The exit code for the first signal received (128 + its number), if any."""
        return 128 + self.received[0] if self.received else None

    @staticmethod
    def describe(signum: int) -> str:
        return _STOP_SIGNALS.get(signal.Signals(signum).name, signal.Signals(signum).name)


def _exit_now(code: int) -> None:
    """End the process at once, without waiting for the upload threads still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _do_upload(args: argparse.Namespace) -> int:
    from .batch import BatchReport, ingest

    if args.no_state and args.state:
        raise _Usage("--state and --no-state cannot be used together")
    if args.no_progress:
        from .progress import disable_progress_bars

        disable_progress_bars()
    out_lock = threading.Lock()
    lines = _ResultLines()
    ended: list[FileResult] = []
    output_closed = threading.Event()
    stop = threading.Event()

    def on_result(result: FileResult) -> None:
        with out_lock:
            ended.append(result)
            if output_closed.is_set():
                return
            try:
                if args.json:
                    _emit_json(sys.stdout, result.to_json())
                else:
                    _emit(sys.stdout, lines.line(result))
            except BrokenPipeError:
                # nobody reads the results any more: start nothing new, as a tool killed by
                # SIGPIPE would not; the uploads in flight finish and are recorded
                _stdout_to_devnull()
                output_closed.set()
                stop.set()

    started = time.monotonic()
    with _Stops() as stops, _client(args, retries=args.retries) as client, \
            contextlib.ExitStack() as stack:
        state: Any = None
        if args.no_state:
            state = False
        elif args.state:
            state = args.state
        elif args.emulator:
            # the emulator is new each run: keep its state with it, not in the user's store
            import tempfile

            state = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "state.sqlite3"
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(ingest(
                    args.paths, client=client, purpose=args.purpose,
                    free_quota=args.free_quota, dry_run=args.dry_run,
                    concurrency=args.concurrency, rpm=args.rpm, include=args.include,
                    exclude=args.exclude, state=state,
                    progress=None if not args.no_progress else False,
                    allow_any_type=args.allow_any_type, on_result=on_result, stop=stop,
                    reuse=not args.no_reuse,
                    follow_links=args.follow_links, wait=args.wait))
            except BaseException as exc:  # handed to the main thread, which raises it
                outcome.append(exc)

        # the batch runs beside the main thread, which stays free to take signals
        worker = threading.Thread(target=run, name="kimi-batch", daemon=True)
        worker.start()
        told = 0
        while worker.is_alive():
            worker.join(0.05)
            if len(stops.received) > told:
                told = len(stops.received)
                stop.set()
                if told == 1:
                    _say(f"kimi-upload: {_Stops.describe(stops.received[0])}: no new upload "
                         "starts; waiting for those in flight (again to stop at once)")
                else:
                    with out_lock:  # no result line is half-written now
                        report = BatchReport(results=list(ended), interrupted=True,
                                             elapsed=time.monotonic() - started)
                        for line in _summary_lines(report, "kimi-upload"):
                            _say(line)
                        _say("kimi-upload: stopped at once: files without a line above "
                             "were abandoned in flight or never started (a re-run settles "
                             "them)")
                        _exit_now(stops.code or EXIT_INTERRUPTED)
        result = outcome[0]
        if isinstance(result, BaseException):
            if stops.code is not None and isinstance(result, KimiError):
                _say(f"kimi-upload: {result}")
                return stops.code
            raise result
    report = result
    for line in _summary_lines(report, "kimi-upload"):
        _say(line)
    if stops.code is not None:
        return stops.code
    if output_closed.is_set():
        return EXIT_BROKEN_PIPE
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok and report.results else EXIT_FAILED


# --- management commands ----------------------------------------------------------------------


def _when(ts: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # a server's nonsense time
        return str(ts)


def _do_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        files = client.list()
    if args.json:
        _emit_json(sys.stdout, {"object": "list", "data": [f.to_dict() for f in files]})
        return EXIT_OK
    if not files.data:
        print("no files", file=sys.stderr)
        return EXIT_OK
    rows = [(shown(f.id), fmt_bytes(f.bytes), _when(f.created_at), shown(f.status), f.filename)
            for f in files]
    head = ("ID", "SIZE", "CREATED", "STATUS", "FILENAME")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    for r in [head, *rows]:
        _emit(sys.stdout, "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return EXIT_OK


def _do_quota(args: argparse.Namespace) -> int:
    from .quota import Usage

    with _client(args) as client:
        usage = Usage.of(client.list(), client.limits)
    if args.json:
        _emit_json(sys.stdout, {
            "files": usage.files, "max_files": usage.max_files, "free_files": usage.free_files,
            "bytes": usage.bytes, "max_bytes": usage.max_bytes, "free_bytes": usage.free_bytes})
        return EXIT_OK
    _emit(sys.stdout, f"files: {usage.files:,} of {usage.max_files:,} ({usage.free_files:,} free)")
    _emit(sys.stdout, f"bytes: {fmt_bytes(usage.bytes)} of {fmt_bytes(usage.max_bytes)} "
                      f"({fmt_bytes(usage.free_bytes)} free)")
    return EXIT_OK


def _do_delete(args: argparse.Namespace) -> int:

    if not (args.ids or args.match or args.older_than is not None or args.all):
        raise _Usage("say what to delete: file ids, --match GLOB, --older-than DAYS or --all")
    if args.ids and (args.match or args.older_than is not None or args.all):
        raise _Usage("give file ids or filters, not both")
    with _client(args) as client:
        files = client.list().data
        chosen = select_for_deletion(files, ids=args.ids, match=args.match,
                                     older_than_days=args.older_than, everything=args.all,
                                     now=time.time())
        missing = sorted(set(args.ids) - {f.id for f in chosen})
        for fid in missing:
            _say(f"kimi-files: no file {fid} in this account")
        if args.dry_run or (not args.ids and not args.yes):
            for f in chosen:
                _emit(sys.stdout, f"would delete {f.id}  {f.filename}  ({f.bytes:,} bytes)")
            if not args.dry_run:
                _say(f"kimi-files: {len(chosen)} file(s) match; pass --yes to delete them")
                return EXIT_FAILED
            return EXIT_OK if not missing else EXIT_FAILED
        failed = _delete_each(client, chosen) < len(chosen) or bool(missing)
    return EXIT_FAILED if failed else EXIT_OK


def _delete_each(client: KimiFiles, files: Sequence[FileObject]) -> int:
    """Delete ``files`` (one already gone is fine), a line each, and forget them in the reuse
    cache; how many are gone. A failure is said and the rest go on."""
    from .errors import NotFoundError

    gone = []
    for f in files:
        try:
            client.delete(f.id)
        except NotFoundError:
            pass
        except KimiError as exc:
            _say(f"kimi-files: could not delete {f.id}: {exc}")
            continue
        gone.append(f.id)
        _emit(sys.stdout, f"deleted {f.id}  {f.filename}")
    cache = client.reuse_cache()
    if cache is not None and gone:
        cache.forget(gone)
    return len(gone)


def _do_prune(args: argparse.Namespace) -> int:
    from .quota import select_for_pruning

    if args.keep is None and args.older_than is None:
        raise _Usage("say what to keep: --keep N (the N newest) and/or --older-than DAYS")
    with _client(args) as client:
        chosen = select_for_pruning(client.list().data, keep=args.keep,
                                    older_than_days=args.older_than, match=args.match,
                                    purpose=args.purpose, now=time.time())
        if args.dry_run or not args.yes:
            for f in chosen:
                _emit(sys.stdout, f"would delete {f.id}  {f.filename}  ({f.bytes:,} bytes, "
                                  f"{_when(f.created_at)})")
            if not args.dry_run:
                _say(f"kimi-files: {len(chosen)} file(s) match; pass --yes to delete them")
                return EXIT_FAILED
            _say(f"kimi-files: {len(chosen)} file(s) would be deleted (dry run)")
            return EXIT_OK
        gone = _delete_each(client, chosen)
        _say(f"kimi-files: {gone} file(s) deleted")
    return EXIT_FAILED if gone < len(chosen) else EXIT_OK


def _do_cache(args: argparse.Namespace) -> int:
    from .errors import CacheError

    with _client(args) as client:
        try:
            cache = client.reuse_cache()
        except CacheError as exc:
            if args.action != "clear" or exc.path is None:
                raise
            from .cache import remove_cache_files

            for p in remove_cache_files(Path(exc.path)):
                _say(f"kimi-files: removed {p}")
            _say(f"kimi-files: the reuse cache could not be opened ({exc}); removed it")
            return EXIT_OK
        if cache is None:  # pragma: no cover - only --emulator, which the parser refuses
            raise _Usage("no reuse cache for the emulator")
        if args.action == "clear":
            files, texts = cache.counts()
            cache.clear()
            _say(f"kimi-files: forgot {files} file(s) and {texts} text(s) ({cache.path})")
            return EXIT_OK
        entries = cache.entries()
        if args.json:
            _emit_json(sys.stdout, {"path": os.fsdecode(cache.path), "files": [
                {"sha256": e.sha256, "purpose": e.purpose, "file_id": e.file_id,
                 "filename": e.filename, "bytes": e.size} for e in entries],
                "texts": cache.counts()[1]})
            return EXIT_OK
        files, texts = cache.counts()
        _say(f"kimi-files: {cache.path}: {files} file(s), {texts} extracted text(s)")
        for e in entries:
            _emit(sys.stdout, f"{e.sha256[:12]}  {e.purpose:12} {e.file_id}  {e.filename}  "
                              f"({e.size:,} bytes)")
    return EXIT_OK


def _do_messages(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.messages(args.paths, max_chars=args.max_chars, strict=args.strict,
                                purpose=args.purpose, reuse=not args.no_reuse)
    _emit_json(sys.stdout, list(found))
    for path, (total, kept) in found.cut.items():
        _say(f"kimi-files: {path}: cut to {kept:,} of {total:,} characters (--max-chars)")
    for path, exc in found.failed.items():
        _say(f"kimi-files: {path}: left out: {exc}")
    return EXIT_FAILED if found.failed else EXIT_OK


# --- content: file names a server cannot steer ---------------------------------------------------

#: Never in an output name: separators, what Windows forbids, and every unsafe character.
_NOT_IN_NAMES = re.compile('[/\\\\<>:"|?*\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e'
                           "\u2066-\u2069\ud800-\udfff]")


def _name_part(text: str, max_bytes: int, default: str) -> str:
    """``text`` as part of a file name: unsafe characters become ``_``, no leading dot or
    space (no hidden file, never ``.`` or ``..``), at most ``max_bytes`` bytes of UTF-8."""
    cleaned = _NOT_IN_NAMES.sub("_", text).strip(". ")
    cleaned = cleaned.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip(". ")
    return cleaned or default


def output_name(file_id: str, filename: str, taken: set[str]) -> str:
    """The name ``content -o DIR`` writes a file's text to: ``ID-NAME.txt``, one path
    component (no separator, not hidden, never ``.`` or ``..``), at most 255 bytes, and not
    one of ``taken`` (compared without case, for case-insensitive file systems): a ``-2``,
    ``-3``, ... is added until it is new. Adds the name to ``taken``. Pure."""
    stem = f"{_name_part(file_id, 80, 'file')}-{_name_part(filename, 150, 'file')}"
    name, n = f"{stem}.txt", 1
    while name.casefold() in taken:
        n += 1
        name = f"{stem}-{n}.txt"
    taken.add(name.casefold())
    return name


def _write_inside(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``folder/name``, which must be directly inside ``folder``; a file of
    that name is replaced whole (never written through a link it may be)."""
    import tempfile

    target = folder / name
    # one component that names an entry of the folder itself; never resolved, so a link of
    # that name left in the folder is replaced, not followed
    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name) \
            or os.path.dirname(os.path.normpath(target)) != os.path.normpath(folder):
        raise OSError(f"{name!r} is not a plain file name")  # pragma: no cover - output_name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".kimi-content-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _do_content(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise _Usage("give file ids, or --all with --output DIR")
    if args.all and not args.output:
        raise _Usage("--all needs --output DIR")
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Usage(f"cannot use {args.output} as the output folder: "
                         f"{exc.strerror or exc}") from None
    with _client(args) as client:
        names: dict[str, str] = {}
        if args.ids:
            ids = list(dict.fromkeys(args.ids))
        else:
            listing = client.list().data
            ids = list(dict.fromkeys(f.id for f in listing))
            for f in listing:
                names.setdefault(f.id, f.filename)
        failed = False
        taken: set[str] = set()
        for fid in ids:
            try:
                content = client.content(fid)
            except KimiError as exc:
                _say(f"kimi-files: {fid}: {exc}")
                failed = True
                continue
            if out_dir is None:
                from .progress import write_line

                write_line(_raw(content.text), sys.stdout)
                continue
            name = output_name(fid, names.get(fid) or content.filename or fid, taken)
            try:
                target = _write_inside(out_dir, name, content.text)
            except OSError as exc:
                _say(f"kimi-files: {fid}: cannot write {out_dir / name}: {exc.strerror or exc}")
                failed = True
                continue
            _say(f"kimi-files: wrote {target}")
    return EXIT_FAILED if failed else EXIT_OK


# --- entry points -----------------------------------------------------------------------------


def upload_main(argv: Sequence[str] | None = None, *, limits: Limits | None = None) -> int:
    """``kimi-upload``. ``limits``: the account's limits, if not the platform's (tests)."""
    parser = _upload_parser("kimi-upload", [_connection_options()])
    args = parser.parse_args(argv)
    args.limits = limits
    return _run(_do_upload, args, "kimi-upload")


def main(argv: Sequence[str] | None = None, *, limits: Limits | None = None) -> int:
    """``kimi-files``. ``limits``: the account's limits, if not the platform's (tests)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:  # its options are the emulator's own
        from .emulator.__main__ import main as emulator_main

        return emulator_main(args_list[1:])
    conn = _connection_options()
    parser = argparse.ArgumentParser(
        prog="kimi-files", description="Manage files of the Kimi Files API.",
        epilog="Exit codes: 0 success; 1 failure; 2 usage or configuration error; "
               "130/143/129 stopped by Ctrl-C/SIGTERM/SIGHUP; 141 output closed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("upload", parents=[conn], help="upload files and folders (= kimi-upload)")
    _add_upload_options(up)
    up.set_defaults(func=_do_upload)
    ls = sub.add_parser("list", parents=[conn], help="list the account's files")
    ls.add_argument("--json", action="store_true", help="the API's list object as JSON")
    ls.set_defaults(func=_do_list)
    qu = sub.add_parser("quota", parents=[conn], help="files and bytes used and free")
    qu.add_argument("--json", action="store_true")
    qu.set_defaults(func=_do_quota)
    de = sub.add_parser("delete", parents=[conn], help="delete files by id or by filter")
    de.add_argument("ids", nargs="*", metavar="ID")
    de.add_argument("--match", metavar="GLOB", help="files whose name matches")
    de.add_argument("--older-than", type=_days, metavar="DAYS", help="files older than DAYS")
    de.add_argument("--all", action="store_true", help="every file (with --yes)")
    de.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    de.add_argument("--yes", action="store_true", help="delete what the filters match")
    de.set_defaults(func=_do_delete)
    co = sub.add_parser("content", parents=[conn], help="print or save extracted text")
    co.add_argument("ids", nargs="*", metavar="ID")
    co.add_argument("--all", action="store_true", help="every file (needs --output)")
    co.add_argument("-o", "--output", metavar="DIR",
                    help="write ID-NAME.txt files into DIR (names made safe; never outside DIR)")
    co.set_defaults(func=_do_content)
    pr = sub.add_parser("prune", parents=[conn],
                        help="delete old files of one purpose: keep the N newest, or those "
                             "younger than DAYS")
    pr.add_argument("--keep", type=_whole(0), metavar="N", help="keep the N newest")
    pr.add_argument("--older-than", type=_days, metavar="DAYS",
                    help="delete those made more than DAYS ago")
    pr.add_argument("--match", metavar="GLOB", help="only files whose name matches")
    pr.add_argument("--purpose", choices=sorted(KNOWN_PURPOSES), default="file-extract",
                    help="only files of this purpose (default file-extract); others are "
                         "never touched")
    pr.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    pr.add_argument("--yes", action="store_true", help="delete them (for cron jobs)")
    pr.set_defaults(func=_do_prune)
    ca = sub.add_parser("cache", parents=[conn],
                        help="show or empty the reuse cache (content -> stored file, texts)")
    ca.add_argument("action", choices=["show", "clear"])
    ca.add_argument("--json", action="store_true", help="show: as JSON")
    ca.set_defaults(func=_do_cache)
    me = sub.add_parser("messages", parents=[conn],
                        help="print the system messages of a chat request for documents, as "
                             "JSON")
    me.add_argument("paths", nargs="+", metavar="PATH")
    me.add_argument("--max-chars", type=_whole(1), metavar="N",
                    help="keep the total under N characters, cutting the largest first")
    me.add_argument("--strict", action="store_true",
                    help="fail on a document the service cannot read (default: leave it out)")
    me.add_argument("--purpose", choices=sorted(KNOWN_PURPOSES), default="file-extract",
                    help=argparse.SUPPRESS)
    me.add_argument("--no-reuse", action="store_true",
                    help="upload even what the account already holds")
    me.set_defaults(func=_do_messages)
    sub.add_parser("emulator", help="serve the local emulator (kimi-files emulator --help)")
    args = parser.parse_args(args_list)
    if args.command == "cache" and args.emulator:
        parser.error("the emulator keeps no reuse cache (it is new each run)")
    args.limits = limits
    prog = f"kimi-files {args.command}"
    return _run(args.func, args, prog)
