"""Retry decisions, as pure functions, and the one place that waits.

* :func:`should_retry` - may this error be retried?
* :func:`may_have_stored` - could the server have stored the upload despite this error?
* :func:`retry_wait` - how long to wait before the next attempt?

Tests (and users' own test suites) switch waiting off with :func:`waiting_disabled`, which
also records every wait that would have happened, so "the wait was honoured" can be asserted
without sleeping.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator

from .config import RetryPolicy
from .errors import (
    APIConnectionError,
    APIStatusError,
    InternalServerError,
    KimiError,
    MalformedResponseError,
    RateLimitError,
)

__all__ = ["may_have_stored", "retry_wait", "should_retry", "sleep", "waiting_disabled"]


def should_retry(error: BaseException) -> bool:
    """True for errors another identical attempt can cure.

    Retried: extraction failures and ``unexpected_output`` (500), ``engine_overloaded_error``
    and rate limits (429), gateway errors (502/503/504 and non-JSON 5xx), and transport
    failures. Never: other 4xx, 401, 403, 404, ``exceeded_current_quota_error``.
    """
    return isinstance(error, KimiError) and type(error).retryable


def may_have_stored(error: BaseException) -> bool:
    """True when an upload that failed this way may nevertheless be stored on the server.

    A 429 is refused at the door and a connect error sent nothing; a timeout, a dropped
    connection or a 5xx after the body went out may hide a stored file.
    """
    if isinstance(error, APIConnectionError):
        return error.request_sent
    if isinstance(error, RateLimitError):
        return False
    return isinstance(error, (InternalServerError, MalformedResponseError))


def server_wait(error: BaseException) -> float | None:
    """The wait the server asked for, if it named one."""
    if isinstance(error, APIStatusError):
        return error.retry_after
    return None


def retry_wait(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based). Pure but for ``rand``.

    The server's own figure wins (capped at ``policy.max_server_wait``); otherwise capped
    exponential backoff with additive jitter: ``min(max_wait, initial * 2**(attempt-1)) +
    jitter * rand()``.
    """
    asked = server_wait(error)
    if asked is not None:
        return min(max(asked, 0.0), policy.max_server_wait)
    base = policy.initial_wait * (2.0 ** max(attempt - 1, 0))
    return min(policy.max_wait, base) + policy.jitter * rand()


def attempts_left(attempt: int, started: float, wait: float, policy: RetryPolicy, now: float) -> bool:
    """May attempt ``attempt + 1`` start after waiting ``wait`` seconds?"""
    return attempt < policy.max_attempts and (now - started) + wait <= policy.timeout


# --- the one place that waits ---------------------------------------------------------------------

_global: dict[str, list[float] | None] = {"waits": None}


def sleep(seconds: float, stop: threading.Event | None = None) -> bool:
    """Wait ``seconds`` unless waiting is disabled; return False if ``stop`` was set."""
    recorder = _global["waits"]
    if recorder is not None:
        recorder.append(seconds)
        return not (stop is not None and stop.is_set())
    if stop is not None:
        return not stop.wait(seconds)
    time.sleep(seconds)
    return True


@contextlib.contextmanager
def waiting_disabled() -> Iterator[list[float]]:
    """Within this block no retry or pacing wait sleeps; each is appended to the list yielded."""
    previous = _global["waits"]
    waits: list[float] = []
    _global["waits"] = waits
    try:
        yield waits
    finally:
        _global["waits"] = previous
