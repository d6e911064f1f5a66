"""The steps' local actions (:mod:`kimi_files._steps`): the clock, a file's stat, an open
handle, a progress bar and its news, a status line, a line for the user; and
:class:`Holder`, which performs them for a driver (both drivers: each is a metadata call or a
terminal update, done on the driver's own thread) and closes what they opened.

Kept apart from the drivers and the Files API actions, which :mod:`kimi_files._steps`
re-exports these beside."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._progress import Heartbeat, ProgressBar

__all__ = ["Advance", "Close", "FileStat", "Held", "Holder", "Local", "Now", "Open", "Progress",
           "Say", "Stat", "Status"]

log = logging.getLogger("kimi_files")

@dataclass(frozen=True, slots=True)
class Now:
    """The monotonic clock's reading, in seconds (what retry budgets are measured with); with
    ``wall``, the local wall clock's (Unix seconds: only for what is recorded for people,
    never to decide what is ours; the server's time is :class:`~kimi_files._adoption.ServerClock`)."""

    wall: bool = False


@dataclass(frozen=True, slots=True)
class FileStat:
    """What :class:`Stat` answers: a file's size and its modification and change times."""

    size: int
    mtime_ns: int
    ctime_ns: int

    @property
    def seen(self) -> tuple[int, int]:
        """Size and mtime: what a preflight records of a file."""
        return self.size, self.mtime_ns


@dataclass(frozen=True, slots=True)
class Stat:
    """A :class:`FileStat` of ``target``: a path, or a handle :class:`Open` gave (the file
    as opened, even when its path was replaced since). An OSError is thrown in when the
    path cannot be looked at."""

    target: str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True, slots=True)
class Open:
    """Open ``path`` to read bytes: a handle the driver owns (closed at :class:`Close`, or
    when the steps end however they end). An OSError is thrown in when it cannot be."""

    path: str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress bar of ``total`` bytes (a :class:`~kimi_files._progress.ProgressBar`, quiet
    when ``enabled`` is False, or None and stderr is not a terminal); the driver owns it as
    it owns an :class:`Open` handle. ``files``: it counts them too, in its label; ``position``
    and ``leave``: tqdm's (its row, and whether it stays drawn once closed)."""

    total: int
    desc: str
    enabled: bool | None = None
    #: what the bar counts when not bytes (``"doc"``): whole items, shown unscaled
    unit: str | None = None
    files: int | None = None
    position: int | None = None
    leave: bool = True
    #: a bar of files that counts this one's file done when it closes (a batch's overall bar)
    part_of: ProgressBar | None = None


@dataclass(frozen=True, slots=True)
class Advance:
    """News for the user: ``bar`` (a :class:`Progress` bar) moves on by ``n`` (bytes, or
    items), counts ``files`` more files done and shows ``note`` after it; or, when ``bar`` is
    a :class:`Status` line, a result was shown just now (the line waits its turn again)."""

    bar: ProgressBar | Heartbeat
    n: int = 0
    files: int = 0
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """A status line said at WARNING whenever nothing was shown for a while (a
    :class:`~kimi_files._progress.Heartbeat`): ``describe(seconds since it began)`` gives the
    line. The driver owns it as it owns a :class:`Progress` bar, until :class:`Close`."""

    describe: Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Close:
    """Close what an :class:`Open`, a :class:`Progress` or a :class:`Status` gave, now."""

    resource: Held


@dataclass(frozen=True, slots=True)
class Say:
    """A line for the user, through the ``kimi_files`` logger (``msg % args``; ``exc_info``: with
    its traceback)."""

    level: int
    msg: str
    args: tuple[object, ...] = ()
    #: an error whose traceback goes with the line (a bug's)
    exc_info: BaseException | None = None

    @classmethod
    def info(cls, msg: str, *args: object) -> Say:
        return cls(logging.INFO, msg, args)

    @classmethod
    def warning(cls, msg: str, *args: object) -> Say:
        return cls(logging.WARNING, msg, args)

    @classmethod
    def error(cls, msg: str, *args: object, exc_info: BaseException | None = None) -> Say:
        return cls(logging.ERROR, msg, args, exc_info)


#: What the driver holds for the steps until :class:`Close` (or their end).
Held: TypeAlias = "IO[bytes] | ProgressBar | Heartbeat"
Local = Now | Stat | Open | Progress | Advance | Status | Close | Say


class Holder:
    """The local actions of one run of steps, and the handles and bars they opened: closed
    at :class:`Close`, or all when the steps end. Opening, looking at a file and drawing a
    bar are metadata calls, shorter than the chunk reads that follow on the same thread (under
    asyncio, the loop's): not worth a hop to a worker thread."""

    def __init__(self) -> None:
        self._open: list[Held] = []

    def perform(self, action: Local) -> object:
        match action:
            case Now(wall=wall):
                return time.time() if wall else time.monotonic()
            case Stat(target=target):
                st = (os.fstat(target.fileno()) if not isinstance(target, (str, os.PathLike))
                      else os.stat(target))
                return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            case Open(path=path):
                fh = open(path, "rb")  # noqa: SIM115 - closed at Close, or by close_all
                self._open.append(fh)
                return fh
            case Progress(total=total, desc=desc, enabled=enabled, unit=unit, files=files,
                          position=position, leave=leave, part_of=part_of):
                from ._progress import BarOptions, ProgressBar

                options = BarOptions(leave=leave)
                if unit is not None:
                    options["unit"], options["unit_scale"] = unit, False
                if position is not None:
                    options["position"] = position
                bar = ProgressBar(total=total, desc=desc, enabled=enabled, files=files,
                                  part_of=part_of, **options)
                self._open.append(bar)
                return bar
            case Advance(bar=bar, n=n, files=files, note=note):
                _advance(bar, n, files, note)
                return None
            case Status(describe=describe):
                from ._progress import Heartbeat

                began = time.monotonic()
                beat = Heartbeat(lambda: describe(time.monotonic() - began))
                self._open.append(beat.__enter__())
                return beat
            case Close(resource=resource):
                if resource in self._open:
                    self._open.remove(resource)
                resource.close()
                return None
            case Say(level=level, msg=msg, args=args, exc_info=exc_info):
                log.log(level, msg, *args, exc_info=exc_info)
                return None

    def close_all(self) -> None:
        while self._open:
            self._open.pop().close()


def _advance(bar: ProgressBar | Heartbeat, n: int, files: int, note: str | None) -> None:
    from ._progress import Heartbeat

    if isinstance(bar, Heartbeat):
        bar.touch()
        return
    if n:
        bar.advance(n)
    for _ in range(files):
        bar.file_done()
    if note is not None:
        bar.note(note)
