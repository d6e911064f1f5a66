"""The transport both clients share: one httpx client (one connection pool), the key kept
out of reprs, and the one place transport and status errors become kimi-files errors
(:meth:`_ClientBase._translate` and :meth:`_ClientBase._check`)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from . import _retry as _retry
from ._adoption import AttemptRegistry, ServerClock
from ._config import (
    CONNECT_TIMEOUT,
    DEFAULT_BASE_URL,
    EMULATOR_HEADER,
    POOL_TIMEOUT,
    READ_TIMEOUT,
    WRITE_TIMEOUT,
    Limits,
    RetryPolicy,
    is_loopback_url,
    resolve_api_key,
    resolve_base_url,
)
from ._version import __version__
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ConnectionLostError,
    KimiError,
    ServerUnreachableError,
    error_from_response,
)

if TYPE_CHECKING:


    from ._cache import ReuseCache
    from ._pacing import Pacer


__all__ = ["DEFAULT_TIMEOUT", "detached"]

log = logging.getLogger("kimi_files")



#: Suits a 100 MB upload on a slow link: each write may take 2 minutes, and the answer
#: (after server-side extraction) may take 5. The read time-out is longer than the server's
#: own 5-minute limit, so its 504 is seen and handled rather than raced.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT,
                                pool=POOL_TIMEOUT)


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class _ClientBase:
    """What the sync and the async client share: configuration, the key, the pacer, the
    server's clock, URLs, and the one place answers become errors (:meth:`_check`)."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None,
        platform: str | None,
        retry: RetryPolicy | None,
        max_retries: int | None,
        limits: Limits | None,
        allow_http: bool,
        pacer: Pacer | None,
        cache: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url, platform=platform, allow_http=allow_http)
        self._cache_option = cache
        self._cache: ReuseCache | None = None
        self._cache_lock = threading.Lock()
        self._key = _Secret(resolve_api_key(api_key))
        self.retry_policy = (retry or RetryPolicy()).with_retries(max_retries)
        self.limits = limits or Limits()
        if pacer is None:
            from ._pacing import Pacer

            pacer = Pacer()
        #: Paces every request of this client, for its lifetime (learns the account's limits).
        self.pacer = pacer
        #: The server's time, from the Date headers of its answers (see kimi_files._adoption).
        self.clock = ServerClock()
        #: This client's uploads that could own a stored copy, and the ids they claimed.
        self.attempts = AttemptRegistry()
        #: Whether the server has answered this client at least once (any status): until it
        #: has, a connection that finds no server fails at once (ServerUnreachableError).
        self.answered = False
        #: What a loopback server said of itself in ``X-Kimi-Files-Emulator`` (the bundled
        #: emulator: ``ephemeral`` or ``persistent``); None for any other server.
        self.emulator: str | None = None
        self._loopback = is_loopback_url(self.base_url)
        self._user_agent = f"kimi-files/{__version__} httpx/{httpx.__version__}"

    def _http_options(self, timeout: httpx.Timeout | float | None) -> dict[str, Any]:
        return {
            "timeout": timeout if timeout is not None else DEFAULT_TIMEOUT,
            "follow_redirects": False,
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20),
            # TLS is verified for every https base URL. A plain-http base URL (the emulator on
            # loopback, or --allow-http) never reaches a TLS host, since no redirect is
            # followed, so it builds no TLS context at all: not the certificate store (~70 ms),
            # nor the unverified context verify=False would build. httpx hands None on to
            # httpcore, which would build its default context, verifying, only if an https
            # connection were ever opened.
            "verify": None if self.base_url.startswith("http://") else True,
            # Proxy settings from the environment (HTTP_PROXY, ...) never apply to a loopback
            # base URL: the key would travel in clear to the proxy.
            "trust_env": not is_loopback_url(self.base_url),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def state_path(self) -> Path:
        """Where batch state for this account (a hash of the key) and base URL lives."""
        from ._state import default_state_path

        return default_state_path(self.base_url, self._key.get())

    @property
    def ephemeral_server(self) -> bool:
        """True once a loopback server answered as the bundled emulator with nothing it
        stores outliving it: state and cache kept for it would only pile up."""
        return self.emulator == "ephemeral"

    def reuse_cache(self) -> ReuseCache | None:
        """The reuse cache of this account (opened on first use), or None when the client
        was made with ``cache=False``.

        Raises:
            CacheError: the cache file cannot be used.
        """
        if self._cache_option is False:
            return None
        with self._cache_lock:
            if self._cache is None:
                from ._cache import ReuseCache, cache_path_for

                where = self._cache_option
                path = (cache_path_for(self.state_path()) if where is None or where is True
                        else Path(where))
                self._cache = ReuseCache(path)
            return self._cache

    def _close_cache(self) -> None:
        with self._cache_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None

    # --- the one place errors are translated ----------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # built per request so the key lives only in its _Secret holder
        headers = {"Authorization": f"Bearer {self._key.get()}", "User-Agent": self._user_agent}
        if extra:
            headers.update(extra)
        return headers

    @contextlib.contextmanager
    def _translate(self, method: str, url: str) -> Iterator[None]:
        where = f"{method} {url}"
        try:
            yield
        except KimiError:
            raise
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            detached(APITimeoutError(f"{where}: timed out connecting ({exc})"))
        except httpx.TimeoutException as exc:
            detached(APITimeoutError(
                f"{where}: timed out waiting for the server ({type(exc).__name__})",
                request_sent=True,
            ))
        except httpx.ConnectError as exc:
            reason = _retry.connect_failure(exc, self.answered)
            if reason is not None:
                detached(ServerUnreachableError(
                    _retry.unreachable_message(method, url, self.base_url, reason, str(exc)),
                    reason=reason))
            detached(APIConnectionError(f"{where}: could not connect ({exc})"))
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            detached(ConnectionLostError(
                f"{where}: the connection was lost before a complete answer ({exc or type(exc).__name__})",
                request_sent=True,
            ))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            detached(ConfigurationError(f"{where}: {exc}"))
        except httpx.HTTPError as exc:
            detached(APIConnectionError(
                f"{where}: {type(exc).__name__}: {exc}", request_sent=True
            ))
        except OSError as exc:  # e.g. a socket error httpx did not map
            detached(ConnectionLostError(f"{where}: {exc}", request_sent=True))

    def _check(self, method: str, url: str, path: str, response: httpx.Response) -> httpx.Response:
        """The answer, or the kimi-files error it means (raised inside the pacer's slot, so
        the pacer learns from it)."""
        log.debug("%s %s -> %s", method, url, response.status_code)
        self.answered = True
        self.clock.observe_date(response.headers.get("date"))
        if self._loopback:
            self.emulator = response.headers.get(EMULATOR_HEADER) or self.emulator
        if response.is_success:
            return response
        if response.is_redirect:
            from ._redact import redact

            # a server may put anything in the Location, the key included (it saw it)
            location = redact(response.headers.get("location", "?"), self._key.get())
            raise APIStatusError(
                f"{method} {url} was redirected to {location}; kimi-files follows no redirect "
                "so the API key never goes to another host: use the final base URL directly",
                status_code=response.status_code,
                base_url=self.base_url,
            )
        error = error_from_response(
            response.status_code, response.content, response.headers,
            base_url=self.base_url, secret=self._key.get(),
        )
        if response.status_code == 404 and path.strip("/") == "files":
            error.message = (
                f"{method} {url} answered 404 ({error.message}): is the base URL right? It "
                f"should end in /v1, for example {DEFAULT_BASE_URL}"
            )
        raise error


def detached(error: KimiError) -> NoReturn:
    """Raise ``error`` with nothing chained to it. ``raise ... from None`` only hides the
    exception being handled: it stays reachable as ``__context__``, and an httpx exception
    holds its request, whose headers hold the API key (a JSON error, the body that may echo
    it)."""
    try:
        raise error
    except KimiError as exc:
        exc.__context__ = exc.__cause__ = None
        raise
