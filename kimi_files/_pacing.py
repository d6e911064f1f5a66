"""Pacing to the account's limits: at most N requests at once and M a minute.

The limits start from what the caller configured and tighten as 429s reveal the account's
real tier ("max concurrency: N", "max RPM: N"). :func:`next_start` is the pure rule; the
:class:`Pacer` applies it across threads. Every ceiling it learns (:func:`ceiling_notice`) and
every wait of ``LOUD_WAIT`` seconds or more (:func:`pacing_notice`) is said at WARNING; a stop
(Ctrl-C) ends its waits at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from ._retry import LOUD_WAIT, asleep, current_doing, current_stop, is_slow_down, sleep
from .errors import APIStatusError, ConcurrencyLimitError, KimiError, RPMLimitError

if TYPE_CHECKING:  # asyncio loads only for async use: it costs 40 ms of start-up
    import asyncio

__all__ = ["Pacer", "ceiling_notice", "next_start", "pacing_notice"]

log = logging.getLogger("kimi_files")


#: Extra room on the rate window (2% and 0.2 s), for the time between our start of a request
#: and the server's count of it.
WINDOW_MARGIN = 0.02
WINDOW_SLACK = 0.2


def next_start(starts: Sequence[float], rpm: int | None, period: float, now: float) -> float:
    """When the next request may start, given the start times of earlier ones (oldest first).

    With at most ``rpm`` starts in any ``period`` seconds, the next one waits until the
    ``rpm``-th most recent start has left the window (plus the margin). Pure.
    """
    if not rpm or len(starts) < rpm:
        return now
    return max(now, starts[-rpm] + period * (1 + WINDOW_MARGIN) + WINDOW_SLACK)


def next_window(window: int, ceiling: int | None, used: int | None = None) -> int:
    """Slow start: the concurrency window after a success, doubled up to the ceiling, and
    never below one. A success proves the account takes ``used`` requests at once, so the
    window grows only when the request ran with the window full (``used >= window``; None:
    assume it was). Pure."""
    full = used is None or used >= window
    grown = window * 2 if full else window
    return max(1, min(grown, ceiling) if ceiling is not None else grown)


def _rate(rpm: int, period: float) -> str:
    per = "a minute" if period == 60 else f"every {period:g}s"
    return f"{rpm} request{'s' if rpm != 1 else ''} {per}"


def pacing_notice(delay: float, rpm: int | None, period: float, what: str = "") -> str | None:
    """The WARNING line for a request held ``delay`` seconds by the rate limit, or None when
    the wait is shorter than ``LOUD_WAIT``. Pure."""
    if delay < LOUD_WAIT:
        return None
    pace = f"at most {_rate(rpm, period)}" if rpm else "the account's limits"
    return f"{what + ': ' if what else ''}waiting {delay:.0f}s for its turn (pacing: {pace})"


def _answer(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        message = error.message if len(error.message) <= 120 else error.message[:119] + "…"
        return f"HTTP {error.status_code} {error.type or type(error).__name__} ({message!r})"
    return type(error).__name__


def ceiling_notice(error: BaseException, before: tuple[int | None, int | None],
                   after: tuple[int | None, int | None], period: float = 60.0) -> str | None:
    """The WARNING line for a ceiling learned from ``error``: ``before`` and ``after`` are the
    (concurrency, rpm) ceilings (None: none). None when nothing changed. Pure."""
    said = []
    if after[0] != before[0] and after[0] is not None:
        was = f"was {before[0]}" if before[0] is not None else "no ceiling before"
        said.append(f"at most {after[0]} request{'s' if after[0] != 1 else ''} at once ({was})")
    if after[1] != before[1] and after[1] is not None:
        was = f"was {_rate(before[1], period)}" if before[1] is not None else "no ceiling before"
        said.append(f"at most {_rate(after[1], period)} ({was})")
    if not said:
        return None
    return f"the server answered {_answer(error)}: from now on " + " and ".join(said)


def window_notice(error: BaseException, allowed: int, told: int | None) -> str | None:
    """The WARNING line for a 429 that lowered the requests at once to ``allowed`` (the slow
    start's window), said only below the lowest said before (``told``). Pure."""
    if told is not None and allowed >= told:
        return None
    return (f"the server answered {_answer(error)}: slowing down to {allowed} request"
            f"{'s' if allowed != 1 else ''} at once for now (more again as requests succeed)")


class Pacer:
    """Bounds concurrency and request rate for every request of a client (thread-safe).

    Concurrency starts at two requests and doubles with each success up to ``concurrency``
    (slow start), so an account whose tier allows one request at a time sees one 429 before
    the pacer knows; a 429 that names a limit lowers the ceiling for good.
    """

    def __init__(
        self, concurrency: int | None = None, rpm: int | None = None, *, period: float = 60.0,
        slow_start: bool = True, clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = sleep,
    ) -> None:
        check_limits(concurrency, rpm, period)
        self._clock = clock
        self._wait = wait
        self.concurrency = concurrency
        # two at first: a one-at-a-time account still sees a single 429 before the pacer knows
        # (as it would after the first success anyway), and every other account gains a round
        self.window = min(2, concurrency or 2) if slow_start else (concurrency or 1)
        self.rpm = rpm
        self.period = period
        self._active = 0
        self._starts: deque[float] = deque(maxlen=10_000)
        self._cond = threading.Condition()
        self._waiters: list[asyncio.Future[None]] = []  # tasks waiting in aslot()
        self._told_window: int | None = None  # the lowest slow-down window said

    @contextlib.contextmanager
    def slot(self, what: str = "") -> Iterator[None]:
        """Hold one request slot (threads): waits for concurrency, then for the rate window.
        ``what``: the request, for the line a long wait is announced with. A stop of the run
        (Ctrl-C) ends either wait: :class:`UploadCancelledError`."""
        stop = current_stop()
        with self._cond:
            while self._active >= self._allowed():
                if stop is not None and stop.is_set():
                    raise _cancelled(what)
                self._cond.wait(0.5)
            self._active += 1
            used = self._active
        failure: BaseException | None = None
        try:
            if stop is not None and stop.is_set():  # stopped: no turn taken, no wait said
                raise _cancelled(what)
            delay = self._reserve_start(what)
            if delay > 0 and self._wait(delay) is False:
                raise _cancelled(what)
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._release(failure, used)

    @contextlib.asynccontextmanager
    async def aslot(self, what: str = "") -> AsyncIterator[None]:
        """:meth:`slot` for asyncio tasks: the same rules, waiting without blocking the loop."""
        import asyncio

        while True:
            with self._cond:
                if self._active < self._allowed():
                    self._active += 1
                    used = self._active
                    break
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
            await waiter  # a release (or a lesson) wakes every waiter to try again
        failure: BaseException | None = None
        try:
            stop = current_stop()
            if stop is not None and stop.is_set():
                raise _cancelled(what)
            delay = self._reserve_start(what)
            if delay > 0:
                if self._wait is sleep:
                    if not await asleep(delay):
                        raise _cancelled(what)
                elif self._wait(delay) is False:  # an injected (test) clock
                    raise _cancelled(what)
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._release(failure, used)

    def describe(self) -> str:
        """How requests are paced now, for a status line ("" when no rate is known)."""
        with self._cond:
            rpm = self.rpm
        return f"pacing at most {_rate(rpm, self.period)}" if rpm else ""

    def _reserve_start(self, what: str = "") -> float:
        """Reserve the next start in the rate window; the seconds to wait for it (a long wait
        is said here, as it is decided)."""
        with self._cond:
            now = self._clock()
            start = next_start(self._starts, self.rpm, self.period, now)
            self._starts.append(start)  # reserved: later callers queue behind it
            rpm = self.rpm
        notice = pacing_notice(start - now, rpm, self.period, current_doing() or what)
        if notice:
            log.warning("%s", notice)
        return start - now

    def _release(self, failure: BaseException | None, used: int) -> None:
        with self._cond:
            self._active -= 1
            if isinstance(failure, KimiError) and is_slow_down(failure):
                self._learn_locked(failure)
            elif failure is None:
                self.window = next_window(self.window, self.concurrency, used)
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.get_loop().call_soon_threadsafe(_wake, w)

    def _allowed(self) -> int:
        return self.window if self.concurrency is None else min(self.window, self.concurrency)

    def learn(self, error: KimiError) -> None:
        """Back off on a 429 (halve the window) and keep any limit it names as a ceiling.

        :meth:`slot` does this itself for an error raised inside it."""
        if not is_slow_down(error):
            return
        with self._cond:
            self._learn_locked(error)
            self._wake_locked()

    def _learn_locked(self, error: KimiError) -> None:
        before = (self.concurrency, self.rpm)
        allowed = self._allowed()
        self._learn_limits_locked(error)
        notice = ceiling_notice(error, before, (self.concurrency, self.rpm), self.period)
        if notice is None and self._allowed() < allowed:
            notice = window_notice(error, self._allowed(), self._told_window)
            if notice is not None:
                self._told_window = self._allowed()
        if notice is not None:
            log.warning("%s", notice)

    def _learn_limits_locked(self, error: KimiError) -> None:
        self.window = max(1, self.window // 2)
        limit = getattr(error, "limit", None)
        if limit is None or limit < 1:
            return
        if isinstance(error, ConcurrencyLimitError):
            if self.concurrency is None or limit < self.concurrency:
                self.concurrency = int(limit)
            self.window = min(self.window, self.concurrency)
        elif isinstance(error, RPMLimitError) and (self.rpm is None or limit < self.rpm):
            self.rpm = int(limit)

    def restrict(self, concurrency: int | None = None, rpm: int | None = None) -> None:
        """Lower the ceilings (never raise them): for a caller that wants fewer requests at
        once or a minute than the pacer allows."""
        check_limits(concurrency, rpm, self.period)
        with self._cond:
            if concurrency is not None and (self.concurrency is None
                                            or concurrency < self.concurrency):
                self.concurrency = concurrency
                self.window = min(self.window, concurrency)
            if rpm is not None and (self.rpm is None or rpm < self.rpm):
                self.rpm = rpm
            self._wake_locked()


def _cancelled(what: str) -> KimiError:
    from .errors import UploadCancelledError

    return UploadCancelledError(f"{what + ': ' if what else ''}cancelled while waiting for "
                                "its turn (pacing)")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def check_limits(concurrency: int | None, rpm: int | None, period: float) -> None:
    """Refuse pacing limits that make no sense, before anything is sent."""
    from .errors import ConfigurationError

    if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be a whole number of at least 1, "
                                 f"not {concurrency!r}")
    if rpm is not None and (isinstance(rpm, bool) or rpm < 1):
        raise ConfigurationError(f"rpm (requests a minute) must be at least 1, not {rpm!r}")
    if not period > 0 or period == float("inf"):
        raise ConfigurationError(f"the rate period must be a positive number of seconds, "
                                 f"not {period!r}")
