"""Progress bars: one tqdm wrapper for the whole package.

A bar is shown only when asked (``progress=True``) or, by default, when stderr is a
terminal. ``KIMI_FILES_NO_PROGRESS=1`` (or :func:`disable_progress_bars`) turns every bar off.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol, TypedDict

if TYPE_CHECKING:
    from tqdm import tqdm
    from typing_extensions import Unpack

__all__ = ["Heartbeat", "ProgressBar", "disable_progress_bars", "enable_progress_bars",
           "listing_status", "progress_enabled", "shown", "status_due", "status_line",
           "write_line"]

log = logging.getLogger("kimi_files")

ENV_VAR = "KIMI_FILES_NO_PROGRESS"
_switch: dict[str, bool] = {"off": False}


def disable_progress_bars() -> None:
    _switch["off"] = True


def enable_progress_bars() -> None:
    _switch["off"] = False


def progress_enabled(requested: bool | None) -> bool:
    """Whether to draw a bar: never when switched off; else as requested; else on a TTY."""
    if _switch["off"] or os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if requested is not None:
        return requested
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


#: Characters that move the cursor, end a line, start a terminal escape or reorder text:
#: C0 controls, DEL, C1 controls, the bidirectional marks and overrides, the Unicode line and
#: paragraph separators, and the lone surrogates of a file name that is not UTF-8.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: str) -> str:
    """One line of human output: control characters and the like escaped (``\\x1b``, ``\\n``,
    ``\\u202e``; a byte of a non-UTF-8 name as ``\\xe9``). Everything else is kept."""
    return _UNSAFE.sub(_escape, text)


class Stream(Protocol):
    """Where a line goes: a text stream (``sys.stdout``, ``sys.stderr``, a test's buffer)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class BarOptions(TypedDict, total=False):
    """What a :class:`ProgressBar` passes on to tqdm (with these defaults)."""

    unit: str  # "B"
    unit_scale: bool  # True
    unit_divisor: int  # 1024
    file: Stream  # sys.stderr
    dynamic_ncols: bool  # True
    leave: bool  # True
    position: int  # tqdm's own


def write_line(text: str, stream: Stream) -> None:
    """Print a line without tearing the bars: above them while bars are drawn."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None and getattr(tqdm_module.tqdm, "_instances", None):
        tqdm_module.tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()


def short_label(name: str) -> str:
    """A bar's label: the name, cut to 30 characters."""
    return name if len(name) <= 30 else name[:29] + "…"


class ProgressBar:
    """A byte-counting bar on stderr that never passes its total and can rewind.

    tqdm is imported only when a bar is actually drawn, so runs without a terminal (CI,
    pipes, ``--json``) do not pay for it.
    """

    def __init__(self, *, total: int | None, desc: str = "", enabled: bool | None = None,
                 files: int | None = None, part_of: ProgressBar | None = None,
                 **kwargs: Unpack[BarOptions]) -> None:
        self.total = total
        self.n = 0
        #: the bar that counts this one's file done when it closes (a batch's overall bar)
        self._part_of = part_of
        #: files done and in all (``files``: the bar counts them too, in its label)
        self.files_done = 0
        self.files = files
        if files is not None:
            desc = files_label(0, files)
        self._bar: tqdm[NoReturn] | None = None
        self._lock = threading.Lock()  # one bar may count for several upload threads
        if not progress_enabled(enabled):
            return
        from tqdm import tqdm

        kwargs.setdefault("unit", "B")
        kwargs.setdefault("unit_scale", True)
        kwargs.setdefault("unit_divisor", 1024)
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("leave", True)
        self._bar = tqdm(total=total, desc=shown(desc), **kwargs)

    def advance(self, n: int) -> None:
        """Move forward by ``n``, clamped to the total."""
        with self._lock:
            if self.total is not None:
                n = max(0, min(n, self.total - self.n))
            if n:
                self.n += n
                if self._bar is not None:
                    self._bar.update(n)

    def file_done(self) -> None:
        """One more file ended (uploaded or not): the label says so."""
        with self._lock:
            self.files_done += 1
            if self._bar is not None and self.files is not None:
                self._bar.set_description_str(files_label(self.files_done, self.files))

    def back(self, n: int) -> None:
        """Move back by ``n`` (bytes of an attempt that will be sent again)."""
        with self._lock:
            self.n = max(0, self.n - n)
            if self._bar is not None:
                self._bar.n = self.n
                self._bar.refresh()

    def rewind(self, note: str = "") -> None:
        """Go back to 0 (a retry starts the bytes again), visibly."""
        self.n = 0
        if self._bar is None:
            return
        self._bar.n = 0
        self._bar.last_print_n = 0
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.refresh()

    @property
    def drawn(self) -> bool:
        """Whether a bar is on the terminal (else progress is silent)."""
        return self._bar is not None

    def note(self, text: str) -> None:
        """Show ``text`` after the bar (a count beside the main one)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        """Take the bar off the terminal; the first time, count its file done in the bar it
        is part of."""
        if self._bar is not None:
            self._bar.close()
        part_of, self._part_of = self._part_of, None
        if part_of is not None:
            part_of.file_done()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def files_label(done: int, total: int) -> str:
    """A batch bar's label: files done of all, as ``3/12 files``. Pure."""
    return f"{done}/{total} file{'s' if total != 1 else ''}"


# --- the status line of a long run ---------------------------------------------------------------

#: With nothing else shown for this many seconds, a long run says where it is.
STATUS_EVERY = 30.0


def status_due(now: float, last_shown: float, every: float = STATUS_EVERY) -> bool:
    """Is a status line due: nothing shown for ``every`` seconds? Pure."""
    return now - last_shown >= every


def status_line(files_done: int, files: int, sent: int, total: int, elapsed: float,
                pacing: str = "") -> str:
    """The status line of a batch: files and bytes done, time so far and, when requests are
    being paced, how. Pure."""
    from ._quota import fmt_bytes

    line = (f"still working: {files_label(files_done, files)} done, {fmt_bytes(sent)} of "
            f"{fmt_bytes(total)} sent, {elapsed:.0f}s so far")
    return f"{line}; {pacing}" if pacing else line


def listing_status(pages: int, files: int, elapsed: float) -> str:
    """The status line of a listing that pages on. Pure."""
    return (f"still listing the account's files: {pages:,} page(s), {files:,} file(s) so far, "
            f"{elapsed:.0f}s so far")


#: A listing that pages on past this many pages is announced once.
ANNOUNCE_PAGES = 5


class Heartbeat:
    """Says :func:`status_line` (via ``describe``) at WARNING whenever nothing was shown for
    :data:`STATUS_EVERY` seconds: a line logged at WARNING by kimi-files, or :meth:`touch`
    (a result printed). A thread looks once a second (``start``); tests call :meth:`tick`
    with an injected ``clock``. Use as a context manager."""

    def __init__(self, describe: Callable[[], str], *, every: float = STATUS_EVERY,
                 clock: Callable[[], float] = time.monotonic, start: bool = True) -> None:
        self._describe = describe
        self._every = every
        self._clock = clock
        self._last = clock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = start

    def touch(self) -> None:
        """Something was shown just now."""
        self._last = self._clock()

    def filter(self, record: logging.LogRecord) -> bool:
        """A filter on kimi-files' logger (not a handler: one would stop Python's last-resort
        output to stderr for a program that set up no logging): a WARNING is news."""
        if record.levelno >= logging.WARNING:
            self.touch()
        return True

    def tick(self) -> bool:
        """Say the status if it is due; whether it was said."""
        if not status_due(self._clock(), self._last, self._every):
            return False
        log.warning("%s", self._describe())  # the filter touches
        self.touch()
        return True

    def _run(self) -> None:
        while not self._done.wait(1.0):
            try:
                self.tick()
            except Exception:  # a status line must never break the run
                log.debug("status line failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        log.addFilter(self)
        if self._start:
            self._thread = threading.Thread(target=self._run, name="kimi-status", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop looking, and stop taking kimi-files' lines as news."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        log.removeFilter(self)

    def __exit__(self, *exc: object) -> None:
        self.close()
