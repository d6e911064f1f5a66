"""Pacing to the account's limits: at most N requests at once and M a minute.

The limits start from what the caller configured and tighten as 429s reveal the account's
real tier ("max concurrency: N", "max RPM: N"). :func:`next_start` is the pure rule; the
:class:`Pacer` applies it across threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import ConcurrencyLimitError, KimiError, RPMLimitError
from .retry import asleep, is_slow_down, sleep

if TYPE_CHECKING:  # asyncio loads only for async use: it costs 40 ms of start-up
    import asyncio

__all__ = ["Pacer", "next_start"]


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


def next_window(window: int, ceiling: int | None, succeeded: bool, used: int | None = None) -> int:
    """Slow start: the concurrency window doubles with each success up to the ceiling, and
    never drops below one. A success proves the account takes ``used`` requests at once, so
    the window grows only when the request ran with the window full (``used >= window``;
    None: assume it was). Pure."""
    full = used is None or used >= window
    grown = window * 2 if succeeded and full else window
    return max(1, min(grown, ceiling) if ceiling is not None else grown)


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

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request slot (threads): waits for concurrency, then for the rate window."""
        with self._cond:
            while self._active >= self._allowed():
                self._cond.wait(0.5)
            self._active += 1
            used = self._active
        failure: BaseException | None = None
        try:
            delay = self._reserve_start()
            if delay > 0:
                self._wait(delay)
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._release(failure, used)

    @contextlib.asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
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
            delay = self._reserve_start()
            if delay > 0:
                if self._wait is sleep:
                    await asleep(delay)
                else:
                    self._wait(delay)  # an injected (test) clock
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._release(failure, used)

    def _reserve_start(self) -> float:
        """Reserve the next start in the rate window; the seconds to wait for it."""
        with self._cond:
            now = self._clock()
            start = next_start(self._starts, self.rpm, self.period, now)
            self._starts.append(start)  # reserved: later callers queue behind it
        return start - now

    def _release(self, failure: BaseException | None, used: int) -> None:
        with self._cond:
            self._active -= 1
            if isinstance(failure, KimiError) and is_slow_down(failure):
                self._learn_locked(failure)
            elif failure is None:
                self.window = next_window(self.window, self.concurrency, True, used)
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
