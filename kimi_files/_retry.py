"""Retry decisions, as pure functions, and the one place that waits.

* :func:`should_retry` - may this error be retried?
* :func:`may_have_stored` - could the server have stored the upload despite this error?
* :func:`retry_wait` - how long to wait before the next attempt?
* :func:`attempts_left` - may another attempt start after that wait?
* :func:`is_slow_down` - does this error ask for fewer requests (for the pacer)?
* :func:`wait_notice` - the WARNING line a wait deserves, if any.
* :func:`connect_failure` and :func:`unreachable_message` - a first contact that found no
  server (refused, unknown host, TLS mismatch) fails at once, naming the URL and the fix.

:func:`sleep` is the one place that waits; given the error it waits for, it logs the line of
:func:`wait_notice` at WARNING (a long wait, or the first connection that could not be made).

Tests (and users' own test suites) switch waiting off with :func:`waiting_disabled`, which
also records every wait that would have happened, so "the wait was honoured" can be asserted
without sleeping.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator

from ._config import RetryPolicy
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InternalServerError,
    KimiError,
    MalformedResponseError,
    RateLimitError,
)

__all__ = [
    "asleep",
    "attempts_left",
    "connect_failure",
    "current_doing",
    "current_stop",
    "doing",
    "is_slow_down",
    "may_have_stored",
    "remaining",
    "retry_wait",
    "should_retry",
    "sleep",
    "stops_with",
    "unreachable_message",
    "wait_notice",
    "waiting_disabled",
]

log = logging.getLogger("kimi_files")

#: Waits of at least this many seconds are announced at WARNING.
LOUD_WAIT = 5.0


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


def is_slow_down(error: BaseException | None) -> bool:
    """True for errors that say the account or the service is overloaded: the retryable 429s
    (``engine_overloaded_error``, every rate limit) and a gateway's 503. Such an error is
    retried within the time budget alone, and tells a pacer to send fewer requests.

    Raises:
        Nothing: any value is judged, and only a :class:`~kimi_files.KimiError` can say so.
    """
    return isinstance(error, KimiError) and type(error).slow_down


def server_wait(error: BaseException) -> float | None:
    """The wait the server asked for, if it named one."""
    if isinstance(error, APIStatusError):
        return error.retry_after
    return None


#: A server's named wait below this many seconds ("please try again after 0 seconds") is no
#: figure to go by: the usual backoff is used instead, never shorter than this.
MIN_SERVER_WAIT = 0.5


def retry_wait(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based). Pure but for ``rand``.

    The server's own figure wins, plus ``jitter * rand()`` so that workers told the same
    figure do not wake together; a figure over ``policy.max_server_wait`` gives ``inf`` (no
    attempt can follow: :func:`attempts_left` says no at once). Otherwise capped exponential
    backoff with additive jitter: ``min(max_wait, initial * 2**(attempt-1)) + jitter * rand()``.
    A figure under :data:`MIN_SERVER_WAIT` (0, negative) counts as none, so a server that
    keeps saying "after 0 seconds" meets the growing backoff, at least
    :data:`MIN_SERVER_WAIT` before the jitter, instead of a retry at once every time.
    """
    base = min(policy.max_wait, policy.initial_wait * (2.0 ** max(attempt - 1, 0)))
    asked = server_wait(error)
    if asked is not None:
        if asked > policy.max_server_wait:
            return math.inf
        if asked >= MIN_SERVER_WAIT:
            return asked + policy.jitter * rand()
        base = max(MIN_SERVER_WAIT, base)
    return base + policy.jitter * rand()


def attempts_left(
    attempt: int,
    started: float,
    wait: float,
    policy: RetryPolicy,
    now: float,
    *,
    error: BaseException | None = None,
) -> bool:
    """May attempt ``attempt + 1`` start after waiting ``wait`` seconds?

    Never past ``policy.timeout`` seconds after ``started``. When ``error`` (the failure being
    retried) is an overload signal (:func:`is_slow_down`) only ``max_overload_attempts`` (None:
    no count) bounds the attempts; any other error, or none given, ``max_attempts``.
    """
    if (now - started) + wait > policy.timeout:
        return False
    cap = policy.max_overload_attempts if is_slow_down(error) else policy.max_attempts
    return cap is None or attempt < cap


def remaining(started: float, policy: RetryPolicy, now: float) -> float:
    """Seconds left of the policy's time budget."""
    return max(0.0, policy.timeout - (now - started))


def _reason(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        return f"HTTP {error.status_code} {error.type or type(error).__name__}"
    if isinstance(error, APITimeoutError):
        return "timed out"
    if isinstance(error, APIConnectionError):
        return "connection failed" if error.request_sent else "could not connect"
    return type(error).__name__


def wait_notice(
    error: BaseException, attempt: int, wait: float, left: float, what: str = ""
) -> str | None:
    """The WARNING line for waiting ``wait`` s after attempt ``attempt`` failed with
    ``error``, with ``left`` seconds of the budget remaining; None when it needs no line.

    A connection that could not be made is said at once (attempt 1); a wait of
    ``LOUD_WAIT`` seconds or more is always said. Pure."""
    prefix = f"{what}: " if what else ""
    if attempt == 1 and isinstance(error, APIConnectionError) and not error.request_sent:
        # the error names the method and URL already
        return f"{error}; will retry for up to {left:.0f}s more (next attempt in {wait:.0f}s)"
    if wait >= LOUD_WAIT:
        return (f"{prefix}waiting {wait:.0f}s before retrying ({_reason(error)}); "
                f"giving up after {left:.0f}s more")
    return None


# --- a first contact that finds no server ---------------------------------------------------------


def connect_failure(error: BaseException, answered: bool) -> str | None:
    """Why a connection could not be made, when that should end the run at once: "refused",
    "unknown host" or "tls" (the handshake failed), found in ``error``'s chain of causes; None
    once the server has ``answered`` this client (the failure is then likely passing and
    is retried), or for any other failure (a time-out may be a slow network). Pure."""
    import socket
    import ssl

    if answered:
        return None
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return None


def unreachable_message(method: str, url: str, base_url: str, reason: str, detail: str) -> str:
    """The error for a first contact that found no server at ``base_url``: what failed, and
    the likely fix. Pure."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    if reason == "refused":
        why = (f"nothing accepts connections at {parts.netloc}: is the base URL right (host "
               "and port), and is the server (or the emulator) running?")
    elif reason == "unknown host":
        why = (f"the host name {host!r} is unknown: check the spelling of the base URL "
               "(or this machine's network and DNS)")
    else:
        plain = "http://" + base_url[len("https://"):] if base_url.startswith("https://") else ""
        why = ("the TLS handshake failed: "
               + (f"if the server speaks plain http (the emulator does), use {plain}"
                  if plain else "the server's certificate or protocol does not match"))
    return (f"{method} {url}: could not connect ({detail}); {why}. Set it with --base-url or "
            f"MOONSHOT_BASE_URL (now {base_url}). Not retried: the server has not answered once.")


# --- the one place that waits ---------------------------------------------------------------------

_global: dict[str, list[float] | None] = {"waits": None}

#: The stop event of the run being driven here (set by the drivers of kimi_files._steps): a
#: wait given no stop of its own (the pacer's) ends when it is set, so Ctrl-C ends every wait.
_run_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "kimi_files_run_stop", default=None)


@contextlib.contextmanager
def stops_with(stop: threading.Event | None) -> Iterator[None]:
    """For the length of the block (in this thread or task), waits without a stop of their
    own end when ``stop`` is set (None: keep the one in force)."""
    if stop is None:
        yield
        return
    token = _run_stop.set(stop)
    try:
        yield
    finally:
        _run_stop.reset(token)


#: What the request being made is for, in words (an upload's file name), for the lines its
#: waits are announced with (set by the drivers, read by the pacer).
_doing: contextvars.ContextVar[str | None] = contextvars.ContextVar("kimi_files_doing",
                                                                  default=None)


@contextlib.contextmanager
def doing(label: str | None) -> Iterator[None]:
    """For the length of the block, requests are for ``label`` (None: keep the one in force)."""
    if label is None:
        yield
        return
    token = _doing.set(label)
    try:
        yield
    finally:
        _doing.reset(token)


def current_doing() -> str | None:
    """What the requests being made are for (see :func:`doing`), if said."""
    return _doing.get()


def current_stop() -> threading.Event | None:
    """The stop event in force (see :func:`stops_with`), if any."""
    return _run_stop.get()


def sleep(
    seconds: float,
    stop: threading.Event | None = None,
    *,
    error: BaseException | None = None,
    attempt: int = 0,
    left: float | None = None,
    what: str = "",
    real: bool = False,
) -> bool:
    """Wait ``seconds`` unless waiting is disabled; return False if ``stop`` was set.

    ``real``: a pause for other work to progress (not a retry's wait), taken even when
    waiting is disabled.

    Given the ``error`` a retry waits for (and its ``attempt`` number and the ``left``
    seconds of the budget), the line of :func:`wait_notice` is logged at WARNING first.
    With no ``stop``, the run's (:func:`stops_with`) ends the wait: every wait is an event's,
    so a stop ends it at once.
    """
    stop = stop or _run_stop.get()
    done = None if real else _begin_wait(seconds, stop, error, attempt, left, what)
    if done is not None:
        return done
    if stop is not None:
        return not stop.wait(seconds)
    time.sleep(seconds)
    return True


async def asleep(
    seconds: float,
    stop: threading.Event | None = None,
    *,
    error: BaseException | None = None,
    attempt: int = 0,
    left: float | None = None,
    what: str = "",
    real: bool = False,
) -> bool:
    """:func:`sleep` for asyncio: the same announcement and the same switch, without
    blocking the event loop (a cancellation ends it, as usual)."""
    import asyncio

    stop = stop or _run_stop.get()
    done = None if real else _begin_wait(seconds, stop, error, attempt, left, what)
    if done is not None:
        return done
    if stop is None:
        await asyncio.sleep(seconds)
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stop.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, 0.1))
    return False


def _begin_wait(seconds: float, stop: threading.Event | None, error: BaseException | None,
                attempt: int, left: float | None, what: str) -> bool | None:
    """Announce a wait; with waiting disabled, record it and say how it ended (else None)."""
    if error is not None:
        notice = wait_notice(error, attempt, seconds, seconds if left is None else left, what)
        if notice:
            log.warning("%s", notice)
    recorder = _global["waits"]
    if recorder is not None:
        recorder.append(seconds)
        return not (stop is not None and stop.is_set())
    return None


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
