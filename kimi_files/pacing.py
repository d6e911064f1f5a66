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
from collections.abc import Iterator, Sequence

from .errors import ConcurrencyLimitError, KimiError, RPMLimitError
from .retry import sleep

__all__ = ["Pacer", "next_start"]


def next_start(starts: Sequence[float], rpm: int | None, period: float, now: float) -> float:
    """When the next request may start, given the start times of earlier ones (oldest first).

    With at most ``rpm`` starts in any ``period`` seconds, the next one waits until the
    ``rpm``-th most recent start has left the window. Pure.
    """
    if not rpm or len(starts) < rpm:
        return now
    return max(now, starts[-rpm] + period)


class Pacer:
    """Bounds concurrency and request rate for every request of a client (thread-safe)."""

    def __init__(
        self, concurrency: int | None = None, rpm: int | None = None, *, period: float = 60.0
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be at least 1")
        self.concurrency = concurrency
        self.rpm = rpm
        self.period = period
        self._active = 0
        self._starts: deque[float] = deque(maxlen=10_000)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request slot: waits for concurrency, then for the rate window."""
        with self._cond:
            while self.concurrency is not None and self._active >= self.concurrency:
                self._cond.wait(0.5)
            self._active += 1
        try:
            with self._cond:
                now = time.monotonic()
                start = next_start(self._starts, self.rpm, self.period, now)
                self._starts.append(start)  # reserved: later callers queue behind it
            if start > now:
                sleep(start - now)
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def learn(self, error: KimiError) -> None:
        """Tighten the limits from a 429 that names the account's limit."""
        limit = getattr(error, "limit", None)
        if limit is None or limit < 1:
            return
        with self._cond:
            if isinstance(error, ConcurrencyLimitError):
                if self.concurrency is None or limit < self.concurrency:
                    self.concurrency = int(limit)
            elif isinstance(error, RPMLimitError) and (self.rpm is None or limit < self.rpm):
                self.rpm = int(limit)
            self._cond.notify_all()

