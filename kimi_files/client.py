"""The HTTP clients for the five Files endpoints: :class:`KimiFiles` and :class:`AsyncKimiFiles`.

One httpx client (one connection pool) per kimi-files client. Transport and status errors
become kimi-files errors in exactly one place (:meth:`_ClientBase._translate` and
:meth:`_ClientBase._check`). Read-only calls and deletes are retried by the platform's rules
(:func:`call_steps`); the upload endpoint is a single attempt here (``create``) and gets its
careful retries in :mod:`kimi_files.uploader`. Both clients run the same steps: only the
transport (``request``) and the driver (``run``) differ.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import quote, unquote

import httpx

from . import retry as _retry
from ._steps import Request, Steps, Wait, run_async, run_sync
from ._version import __version__
from .adoption import AttemptRegistry, ServerClock
from .config import (
    DEFAULT_BASE_URL,
    DEFAULT_PURPOSE,
    Limits,
    RetryPolicy,
    is_loopback_url,
    resolve_api_key,
    resolve_base_url,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ConnectionLostError,
    KimiError,
    MalformedResponseError,
    NotFoundError,
    error_from_response,
)
from .models import FileContent, FileDeleted, FileList, FileObject
from .options import UploadKwargs, UploadOptions

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

    from .batch import BatchReport, IngestKwargs
    from .cache import ReuseCache
    from .chat import AsyncSession, Messages, Session
    from .models import UploadedFile
    from .pacing import Pacer
    from .uploader import FileBody, Preflight

__all__ = ["DEFAULT_TIMEOUT", "AsyncKimiFiles", "KimiFiles"]

log = logging.getLogger("kimi_files")
T = TypeVar("T")


#: Suits a 100 MB upload on a slow link: each write may take 2 minutes, and the answer
#: (after server-side extraction) may take 5. The read time-out is longer than the server's
#: own 5-minute limit, so its 504 is seen and handled rather than raced.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0, read=330.0, write=120.0, pool=600.0)


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
            from .pacing import Pacer

            pacer = Pacer()
        #: Paces every request of this client, for its lifetime (learns the account's limits).
        self.pacer = pacer
        #: The server's time, from the Date headers of its answers (see kimi_files.adoption).
        self.clock = ServerClock()
        #: This client's uploads that could own a stored copy, and the ids they claimed.
        self.attempts = AttemptRegistry()
        self._user_agent = f"kimi-files/{__version__} httpx/{httpx.__version__}"

    def _http_options(self, timeout: httpx.Timeout | float | None) -> dict[str, Any]:
        return {
            "timeout": timeout if timeout is not None else DEFAULT_TIMEOUT,
            "follow_redirects": False,
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20),
            # TLS is verified for every https base URL. A plain-http base URL (the emulator on
            # loopback, or --allow-http) never reaches a TLS host, since no redirect is
            # followed, so it skips building a certificate store it cannot use (~70 ms).
            "verify": not self.base_url.startswith("http://"),
            # Proxy settings from the environment (HTTP_PROXY, ...) never apply to a loopback
            # base URL: the key would travel in clear to the proxy.
            "trust_env": not is_loopback_url(self.base_url),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def state_path(self) -> Path:
        """Where batch state for this account (a hash of the key) and base URL lives."""
        from .state import default_state_path

        return default_state_path(self.base_url, self._key.get())

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
                from .cache import ReuseCache, cache_path_for

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
            _detached(APITimeoutError(f"{where}: timed out connecting ({exc})"))
        except httpx.TimeoutException as exc:
            _detached(APITimeoutError(
                f"{where}: timed out waiting for the server ({type(exc).__name__})",
                request_sent=True,
            ))
        except httpx.ConnectError as exc:
            _detached(APIConnectionError(f"{where}: could not connect ({exc})"))
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            _detached(ConnectionLostError(
                f"{where}: the connection was lost before a complete answer ({exc or type(exc).__name__})",
                request_sent=True,
            ))
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            _detached(ConfigurationError(f"{where}: {exc}"))
        except httpx.HTTPError as exc:
            _detached(APIConnectionError(
                f"{where}: {type(exc).__name__}: {exc}", request_sent=True
            ))
        except OSError as exc:  # e.g. a socket error httpx did not map
            _detached(ConnectionLostError(f"{where}: {exc}", request_sent=True))

    def _check(self, method: str, url: str, path: str, response: httpx.Response) -> httpx.Response:
        """The answer, or the kimi-files error it means (raised inside the pacer's slot, so
        the pacer learns from it)."""
        log.debug("%s %s -> %s", method, url, response.status_code)
        self.clock.observe_date(response.headers.get("date"))
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


class KimiFiles(_ClientBase):
    """A client of the Kimi Files API.

    ``api_key`` defaults to ``MOONSHOT_API_KEY`` (then ``KIMI_API_KEY``); ``base_url`` to
    ``MOONSHOT_BASE_URL`` (then ``KIMI_BASE_URL``) or the international platform;
    ``platform="china"`` picks ``https://api.moonshot.cn/v1``. ``cache``: the reuse cache
    (None: the account's default file beside its state; a path; False: none).
    :class:`AsyncKimiFiles` is its asyncio twin; both run the same steps
    (:mod:`kimi_files._steps`).

    Raises:
        ConfigurationError: a missing or malformed key or base URL.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        platform: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        limits: Limits | None = None,
        allow_http: bool = False,
        pacer: Pacer | None = None,
        http_client: httpx.Client | None = None,
        cache: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        super().__init__(api_key, base_url=base_url, platform=platform, retry=retry,
                         max_retries=max_retries, limits=limits, allow_http=allow_http,
                         pacer=pacer, cache=cache)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(**self._http_options(timeout))
        self._listing: cf.Future[FileList] | None = None  # a shared listing in flight
        self._listing_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (one passed in as ``http_client`` is left open).

        Raises:
            Nothing.
        """
        self._close_cache()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> KimiFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- transport ------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request (no retry), paced.

        Raises:
            APIStatusError: the service answered with an error (the class says which).
            APIConnectionError: no complete answer (time-out, refused, dropped).
        """
        url = self._url(path)
        with self.pacer.slot():
            with self._translate(method, url):
                response = self._http.request(method, url, headers=self._headers(
                    kwargs.pop("headers", None)), **kwargs)
            return self._check(method, url, path, response)

    def run(self, steps: Steps[T], stop: threading.Event | None = None) -> T:
        """Perform ``steps`` (see :mod:`kimi_files._steps`) with this client.

        Raises:
            KimiError: whatever the steps raise.
        """
        return run_sync(steps, self, stop)

    # --- endpoints -------------------------------------------------------------------------

    def list(self, *, shared: bool = False) -> FileList:
        """All files of the account.

        ``shared=True``: a listing already in flight on this client (started by another
        thread) may answer instead of a new request, as for a preflight, where any listing
        taken since the call began will do. A reconciliation never shares.

        Raises:
            APIStatusError: the service refused it (AuthenticationError for a bad key), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        if not shared:
            return self.run(list_steps(self.retry_policy))
        with self._listing_lock:
            joined = self._listing
            if joined is None:
                self._listing = cf.Future()
        if joined is not None:
            return joined.result()
        future = self._listing
        assert future is not None
        try:
            listing = self.run(list_steps(self.retry_policy))
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(listing)
            return listing
        finally:
            with self._listing_lock:
                self._listing = None

    def retrieve(self, file_id: str) -> FileObject:
        """One file's object.

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return self.run(retrieve_steps(self.retry_policy, file_id))

    def delete(self, file_id: str) -> FileDeleted:
        """Delete a file (a lost answer to an earlier attempt that did delete it is fine).

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return self.run(delete_file_steps(self.retry_policy, file_id))

    def content(self, file_id: str) -> FileContent:
        """The extracted text of an uploaded file (and the platform's JSON document).

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return self.run(content_steps(self.retry_policy, file_id))

    def create(self, file: IO[bytes] | FileBody, *, filename: str, purpose: str = DEFAULT_PURPOSE,
               content_type: str = "application/octet-stream") -> FileObject:
        """One upload request, streamed from ``file`` (a binary file object, read in chunks).

        No preflight and no retry: see :meth:`upload` for those.

        Raises:
            APIStatusError: the service refused it.
            APIConnectionError: no complete answer (the file may be stored all the same).
        """
        return self.run(create_steps(file, filename, purpose, content_type))

    # --- the uploader ----------------------------------------------------------------------

    def upload(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> UploadedFile:
        """Preflight, free quota if asked, stream with progress, retry safely: see
        :func:`kimi_files.upload`.

        Raises:
            KimiError: as :func:`kimi_files.upload`.
        """
        from .uploader import upload_steps

        return self.run(upload_steps(self, path, UploadOptions.of(options)))

    def preflight(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> Preflight:
        """Every check :meth:`upload` makes, and its room plan, without sending the file or
        deleting anything (one list call).

        Raises:
            PreflightError: the error the upload would raise for this file.
            APIStatusError: the account could not be listed.
        """
        from .uploader import preflight_steps

        return self.run(preflight_steps(self, path, UploadOptions.of(options)))

    def extract(self, path: str | os.PathLike[str] | None = None, *, file_id: str | None = None,
                **options: Unpack[UploadKwargs]) -> str:
        """The extracted text of a local file (uploading it first) or of ``file_id``.

        Raises:
            KimiError: as :func:`kimi_files.extract`.
        """
        from .uploader import extract_steps

        return self.run(extract_steps(self, path, file_id, UploadOptions.of(options)))

    def ingest(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
               **options: Unpack[IngestKwargs]) -> BatchReport:
        """A planned, paced, resumable batch with this client: see :func:`kimi_files.ingest`.

        Raises:
            KimiError: as :func:`kimi_files.ingest`.
        """
        from .batch import ingest

        return ingest(paths, client=self, **options)

    # --- from documents to a chat request --------------------------------------------------

    def messages(self, paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
                 strict: bool = False, **options: Unpack[UploadKwargs]) -> Messages:
        """The system messages for a chat request: see :func:`kimi_files.messages`.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        from .chat import messages_steps

        return self.run(messages_steps(self, paths, UploadOptions.of(options),
                                       max_chars=max_chars, strict=strict))

    def session(self, *, delete_on_exit: bool = True) -> Session:
        """Uploads and extractions cleaned up when the block ends:
        ``with client.session() as s: s.extract(path)``; see :class:`kimi_files.chat.Session`.

        Raises:
            Nothing (the session's own calls raise as theirs do).
        """
        from .chat import Session

        return Session(self, delete_on_exit=delete_on_exit)


class AsyncKimiFiles(_ClientBase):
    """The asyncio twin of :class:`KimiFiles`: the same arguments, methods and behaviour,
    each method a coroutine. ``async with AsyncKimiFiles() as client: ...``

    Uploads stream from disk in chunks (constant memory); local work that blocks (libmagic,
    hashing, SQLite) runs in a thread, off the event loop. Cancelling a task that awaits a
    method stops it cleanly.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        platform: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        limits: Limits | None = None,
        allow_http: bool = False,
        pacer: Pacer | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        super().__init__(api_key, base_url=base_url, platform=platform, retry=retry,
                         max_retries=max_retries, limits=limits, allow_http=allow_http,
                         pacer=pacer, cache=cache)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(**self._http_options(timeout))
        self._alisting: asyncio.Future[FileList] | None = None  # a shared listing in flight

    # --- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (one passed in as ``http_client`` is left open).

        Raises:
            Nothing.
        """
        self._close_cache()
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncKimiFiles:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- transport ------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request (no retry), paced.

        Raises:
            APIStatusError: the service answered with an error (the class says which).
            APIConnectionError: no complete answer (time-out, refused, dropped).
        """
        url = self._url(path)
        content = kwargs.get("content")
        if isinstance(content, Iterable) and isinstance(content, AsyncIterable):
            kwargs["content"] = content.__aiter__()  # read the async way (off the event loop)
        async with self.pacer.aslot():
            with self._translate(method, url):
                response = await self._http.request(method, url, headers=self._headers(
                    kwargs.pop("headers", None)), **kwargs)
            return self._check(method, url, path, response)

    async def run(self, steps: Steps[T], stop: threading.Event | None = None) -> T:
        """Perform ``steps`` (see :mod:`kimi_files._steps`) with this client.

        Raises:
            KimiError: whatever the steps raise.
        """
        return await run_async(steps, self, stop)

    # --- endpoints -------------------------------------------------------------------------

    async def list(self, *, shared: bool = False) -> FileList:
        """All files of the account (``shared``: see :meth:`KimiFiles.list`).

        Raises:
            APIStatusError: the service refused it (AuthenticationError for a bad key), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        import asyncio

        if not shared:
            return await self.run(list_steps(self.retry_policy))
        joined = self._alisting
        if joined is not None and not joined.done():
            return await asyncio.shield(joined)
        future: asyncio.Future[FileList] = asyncio.get_running_loop().create_future()
        self._alisting = future
        try:
            listing = await self.run(list_steps(self.retry_policy))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none joined
            raise
        else:
            future.set_result(listing)
            return listing
        finally:
            if self._alisting is future:
                self._alisting = None

    async def retrieve(self, file_id: str) -> FileObject:
        """One file's object.

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return await self.run(retrieve_steps(self.retry_policy, file_id))

    async def delete(self, file_id: str) -> FileDeleted:
        """Delete a file (a lost answer to an earlier attempt that did delete it is fine).

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return await self.run(delete_file_steps(self.retry_policy, file_id))

    async def content(self, file_id: str) -> FileContent:
        """The extracted text of an uploaded file (and the platform's JSON document).

        Raises:
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return await self.run(content_steps(self.retry_policy, file_id))

    async def create(self, file: IO[bytes] | FileBody, *, filename: str,
                     purpose: str = DEFAULT_PURPOSE,
                     content_type: str = "application/octet-stream") -> FileObject:
        """One upload request, streamed from ``file``; no preflight, no retry.

        Raises:
            APIStatusError: the service refused it.
            APIConnectionError: no complete answer (the file may be stored all the same).
        """
        return await self.run(create_steps(file, filename, purpose, content_type))

    # --- the uploader ----------------------------------------------------------------------

    async def upload(self, path: str | os.PathLike[str],
                     **options: Unpack[UploadKwargs]) -> UploadedFile:
        """:meth:`KimiFiles.upload`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.upload`.
        """
        from .uploader import upload_steps

        return await self.run(upload_steps(self, path, UploadOptions.of(options)))

    async def preflight(self, path: str | os.PathLike[str],
                        **options: Unpack[UploadKwargs]) -> Preflight:
        """:meth:`KimiFiles.preflight`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.preflight`.
        """
        from .uploader import preflight_steps

        return await self.run(preflight_steps(self, path, UploadOptions.of(options)))

    async def extract(self, path: str | os.PathLike[str] | None = None, *,
                      file_id: str | None = None, **options: Unpack[UploadKwargs]) -> str:
        """:meth:`KimiFiles.extract`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.extract`.
        """
        from .uploader import extract_steps

        return await self.run(extract_steps(self, path, file_id, UploadOptions.of(options)))

    async def ingest(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[IngestKwargs]) -> BatchReport:
        """:meth:`KimiFiles.ingest`, awaited: uploads run as tasks, not threads.

        Raises:
            KimiError: as :func:`kimi_files.ingest`.
        """
        from .batch import aingest

        return await aingest(paths, client=self, **options)

    # --- from documents to a chat request --------------------------------------------------

    async def messages(self, paths: Sequence[str | os.PathLike[str]], *,
                       max_chars: int | None = None, strict: bool = False,
                       **options: Unpack[UploadKwargs]) -> Messages:
        """:meth:`KimiFiles.messages`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        from .chat import messages_steps

        return await self.run(messages_steps(self, paths, UploadOptions.of(options),
                                             max_chars=max_chars, strict=strict))

    def session(self, *, delete_on_exit: bool = True) -> AsyncSession:
        """``async with client.session() as s:``; see :class:`kimi_files.chat.AsyncSession`.

        Raises:
            Nothing (the session's own calls raise as theirs do).
        """
        from .chat import AsyncSession

        return AsyncSession(self, delete_on_exit=delete_on_exit)


# --- the endpoints' steps, shared by both clients ---------------------------------------------------


def call_steps(method: str, path: str, parse: Callable[[httpx.Response], T], policy: RetryPolicy,
               *, delete: bool = False, **kwargs: Any) -> Steps[T]:
    """A request, its answer parsed by ``parse``, retried by the platform's rules (for
    idempotent calls; a malformed answer is retried too)."""
    started = time.monotonic()
    attempt = 0
    lost = False
    while True:
        attempt += 1
        try:
            response = yield Request(method, path, kwargs)
            return parse(response)
        except NotFoundError:
            if delete and lost:
                # an earlier attempt's answer was lost, and the file is gone now: it worked
                file_id = unquote(path.rsplit("/", 1)[-1])
                return parse(httpx.Response(200, json={"id": file_id, "deleted": True}))
            raise
        except KimiError as exc:
            if not _retry.should_retry(exc):
                raise
            lost = lost or _retry.may_have_stored(exc)
            wait = _retry.retry_wait(exc, attempt, policy)
            now = time.monotonic()
            if not _retry.attempts_left(attempt, started, wait, policy, now, error=exc):
                raise
            log.info("%s %s failed (%s); retry %d in %.1fs", method, path, exc, attempt, wait)
            yield Wait(wait, error=exc, attempt=attempt, what=f"{method} {path}",
                       left=_retry.remaining(started, policy, now))


def list_steps(policy: RetryPolicy) -> Steps[FileList]:
    return call_steps("GET", "files", lambda r: FileList.from_dict(_json(r)), policy)


def retrieve_steps(policy: RetryPolicy, file_id: str) -> Steps[FileObject]:
    return call_steps("GET", f"files/{_id(file_id)}", lambda r: FileObject.from_dict(_json(r)),
                      policy)


def delete_file_steps(policy: RetryPolicy, file_id: str) -> Steps[FileDeleted]:
    return call_steps("DELETE", f"files/{_id(file_id)}",
                      lambda r: FileDeleted.from_dict(_json(r)), policy, delete=True)


def content_steps(policy: RetryPolicy, file_id: str) -> Steps[FileContent]:
    return call_steps("GET", f"files/{_id(file_id)}/content", _content, policy)


def create_steps(file: IO[bytes] | FileBody, filename: str, purpose: str,
                 content_type: str) -> Steps[FileObject]:
    multipart = getattr(file, "multipart", None)
    if multipart is not None:  # a FileBody: the framing built once, the file in large pieces
        body = multipart(filename=filename, purpose=purpose, content_type=content_type)
        response = yield Request("POST", "files", {"content": body, "headers": body.headers})
    else:
        response = yield Request("POST", "files", {
            "data": {"purpose": purpose}, "files": {"file": (filename, file, content_type)}})
    return FileObject.from_dict(_json(response))


def _id(file_id: str) -> str:
    """A file id as one path segment: every character that could leave it is encoded, and
    ``.`` and ``..`` (which an HTTP client would resolve away) are encoded whole."""
    if not isinstance(file_id, str) or not file_id.strip():
        raise ConfigurationError(f"Invalid file id {file_id!r}")
    segment = quote(file_id.strip(), safe="")
    return segment.replace(".", "%2E") if set(segment) == {"."} else segment


def _content(response: httpx.Response) -> FileContent:
    return FileContent.from_body(response.text)


def _detached(error: KimiError) -> NoReturn:
    """Raise ``error`` with nothing chained to it. ``raise ... from None`` only hides the
    exception being handled: it stays reachable as ``__context__``, and an httpx exception
    holds its request, whose headers hold the API key (a JSON error, the body that may echo
    it)."""
    try:
        raise error
    except KimiError as exc:
        exc.__context__ = exc.__cause__ = None
        raise


def _json(response: httpx.Response) -> Any:
    from ._redact import redact, redact_value

    try:
        data = response.json()
    except ValueError:
        _detached(MalformedResponseError(
            f"{response.request.method} {response.request.url}: the server answered "
            f"{response.status_code} with a body that is not JSON",
            status_code=response.status_code,
            body=redact(response.text[:500]),  # a body may echo the key
        ))
    if not isinstance(data, dict):
        raise MalformedResponseError(
            "the server answered with JSON that is not an object",
            status_code=response.status_code,
            body=redact_value(data),
        )
    return data
