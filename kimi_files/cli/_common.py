"""What every command shares: exit codes, option types, the connection options, the client,
signals and the run wrapper that turns every failure into a message and an exit code."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from .._config import CONNECT_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT
from ..errors import ConfigurationError, KimiError

if TYPE_CHECKING:
    from .._client import KimiFiles
    from .._config import Limits

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

from ._output import _logging_to_stderr, _say, _stdout_to_devnull

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: 128 + the signal's number, as a shell reports a process that signal ended.
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141

#: The longest --timeout that makes sense: a day.
MAX_TIMEOUT = 86400.0
#: The most uploads at once any account allows (the top tier's concurrency).
MAX_CONCURRENCY = 1000


class _Usage(Exception):
    """A usage error found after parsing."""


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
                        f"(default: {CONNECT_TIMEOUT:g} s to connect, {WRITE_TIMEOUT:g} s per "
                        f"write, {READ_TIMEOUT:g} s for an answer)")
    g.add_argument("--emulator", action="store_true",
                   help="start the bundled emulator in-process and use it (no key, no network)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more to stderr (-v: info, -vv: debug)")
    a = p.add_argument_group("account limits (when the account's are not the platform's)")
    a.add_argument("--max-files", type=_whole(1), metavar="N",
                   help=f"the account holds at most N files (default: ${MAX_FILES_ENV} or "
                        "1,000)")
    a.add_argument("--max-bytes", type=_byte_count, metavar="SIZE",
                   help=f"the account holds at most SIZE bytes in all, e.g. 10GiB or 500MB "
                        f"(default: ${MAX_BYTES_ENV} or 10 GiB)")
    return p


#: The environment variables of the account's limits (--max-files, --max-bytes).
MAX_FILES_ENV, MAX_BYTES_ENV = "KIMI_FILES_MAX_FILES", "KIMI_FILES_MAX_BYTES"

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3,
          "t": 1024**4, "tib": 1024**4}


def _byte_count(text: str) -> int:
    """An argparse type: a number of bytes, with an optional unit (KB, MB, GB: powers of
    1,000; K/KiB, M/MiB, G/GiB: of 1,024), at least 1."""
    import re

    m = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500MB, 10GiB or 1048576, got {text!r}")
    value = int(float(m.group(1).replace(",", "").replace("_", "")) * _UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a size of at least 1 byte, got {text!r}")
    return value


def _limits(args: argparse.Namespace, environ: Mapping[str, str]) -> Limits | None:
    """The account's limits: --max-files and --max-bytes, else their environment variables,
    else the platform's (None). A malformed variable is a usage error naming it."""
    from .._config import Limits

    given: Limits | None = getattr(args, "limits", None)  # the tests' seam
    if given is not None:
        return given
    values: dict[str, int] = {}
    for field, option, env, parse in (
            ("max_files", "max_files", MAX_FILES_ENV, _whole(1)),
            ("max_total_bytes", "max_bytes", MAX_BYTES_ENV, _byte_count)):
        value = getattr(args, option, None)
        if value is None and environ.get(env, "").strip():
            try:
                value = parse(environ[env])
            except argparse.ArgumentTypeError as exc:
                raise ConfigurationError(f"${env}: {exc}") from None
        if value is not None:
            values[field] = value
    return Limits(**values) if values else None



@contextlib.contextmanager
def _client(args: argparse.Namespace, retries: int | None = None) -> Iterator[KimiFiles]:
    from .._client import KimiFiles

    limits = _limits(args, os.environ)
    if args.emulator:
        try:
            from ..emulator import Emulator
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
        try:
            yield c
        finally:
            c.close()
            _tidy(c)


def _tidy(client: KimiFiles) -> None:
    """State for an ephemeral emulator must not pile up (one set per port): an account whose
    loopback server said it is one is marked, and the state, lock and cache of every marked
    account whose port no longer answers (its emulator gone, with all it stored) are removed;
    ours only, never while a run holds the lock. While it runs, re-runs resume and reuse as
    against any server; an explicit --state is the user's and stays."""
    import logging

    from .._cache import cache_path_for
    from .._state_files import mark_ephemeral, sweep_ephemeral

    where = client.state_path()
    if client.emulator is not None and (where.exists() or cache_path_for(where).exists()):
        mark_ephemeral(where, client.ephemeral_server)
    for path in sweep_ephemeral(where.parent):
        logging.getLogger("kimi_files").info("removed %s (kept for an emulator that is gone)",
                                             path)


class _Signalled(BaseException):
    """SIGTERM or SIGHUP outside an upload: raised where the command is, like Ctrl-C's
    KeyboardInterrupt, so it ends through its own clean-up (a half-written file removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _handling(names: Iterable[str],
              handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """For the length of the block, ``handler`` takes these signals (those this platform
    has), in the main thread only; the handlers before are put back after."""
    saved: list[tuple[int, Callable[[int, FrameType | None], object] | int | None]] = []
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

    def watch(self, worker: threading.Thread, first: Callable[[int], None],
              again: Callable[[], None]) -> None:
        """Until ``worker`` ends, the main thread takes the signals: ``first(signum)`` on the
        first (let what is in flight finish), ``again()`` on each one after (stop at once)."""
        told = 0
        while worker.is_alive():
            worker.join(0.05)
            if len(self.received) > told:
                told = len(self.received)
                if told == 1:
                    first(self.received[0])
                else:
                    again()

    @staticmethod
    def describe(signum: int) -> str:
        return _STOP_SIGNALS.get(signal.Signals(signum).name, signal.Signals(signum).name)


def _settling(prog: str, work: Callable[[], T]) -> T:
    """``work()`` (a command's requests, uploads among them) on a thread while the main
    thread takes Ctrl-C, SIGTERM and SIGHUP (:class:`_Stops`), as kimi-upload does: the
    first lets the upload in flight end and be recorded (the reuse cache: a re-run reuses
    it) and starts no new request; a second ends the process at once.

    Raises:
        _Signalled: the work was stopped by the first signal (the exit code is its).
    """
    from .._steps import halts_with

    halt = threading.Event()
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with halts_with(halt):
                done.append(work())
        except BaseException as exc:  # handed to the main thread, which raises it
            failed.append(exc)

    def first(signum: int) -> None:
        halt.set()
        _say(f"{prog}: {_Stops.describe(signum)}: no new request starts; waiting for the "
             "upload in flight to end and be recorded (again to stop at once)")

    def again() -> None:
        _say(f"{prog}: stopped at once: an upload in flight was abandoned (a re-run may "
             "store a second copy of it)")
        _exit_now(stops.code or EXIT_INTERRUPTED)

    with _Stops() as stops:
        worker = threading.Thread(target=run, name=f"{prog}-work", daemon=True)
        worker.start()
        stops.watch(worker, first, again)
    if done:
        return done[0]
    error = failed[0]
    if stops.received and isinstance(error, (KeyboardInterrupt, KimiError)):
        raise _Signalled(stops.received[0])
    raise error


def _exit_now(code: int) -> None:
    """End the process at once, without waiting for the upload threads still running."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)



def _when(ts: int) -> str:
    from .._quota import fmt_time

    return fmt_time(ts)


def add_walk_options(p: argparse.ArgumentParser) -> None:
    """The options of a folder walk, the same for every command that walks folders."""
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="only files the pattern matches, by gitignore rules (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="skip what the pattern matches, by gitignore rules: a name is a file "
                        "or folder at any depth (notes skips the folder notes/), ** spans "
                        "folders, !PATTERN takes back (repeatable; after --exclude-from)")
    p.add_argument("--exclude-from", action="append", default=[], metavar="FILE",
                   help="skip what the patterns of FILE match, one a line, as a .gitignore "
                        "(repeatable)")
    p.add_argument("--follow-links", action="store_true",
                   help="follow links that lead outside the folders given")


def exclude_patterns(args: argparse.Namespace) -> list[str]:
    """The exclude patterns of :func:`add_walk_options`: those of each --exclude-from file,
    then each --exclude (so the command line can take one back with ``!``).

    Raises:
        ConfigurationError: a patterns file cannot be read.
    """
    from .._scan import read_patterns

    given: list[str] = args.exclude
    return [p for f in args.exclude_from for p in read_patterns(f)] + given
