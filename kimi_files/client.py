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
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
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
    CONNECT_TIMEOUT,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_PURPOSE,
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
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ConnectionLostError,
    KimiError,
    MalformedResponseError,
    NotFoundError,
    ServerUnreachableError,
    error_from_response,
)
from .models import FileContent, FileDeleted, FileList, FileObject
from .options import UploadKwargs, UploadOptions

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

    from .batch import BatchReport, IngestKwargs
    from .batches import AsyncBatches, Batches
    from .cache import ReuseCache
    from .chat import AsyncSession, Messages, Session
    from .extraction import AsyncExtraction, Extraction, ExtractKwargs
    from .models import UploadedFile
    from .pacing import Pacer
    from .tokens import TokenReport
    from .uploader import FileBody, Preflight

__all__ = ["DEFAULT_TIMEOUT", "AsyncKimiFiles", "KimiFiles"]

log = logging.getLogger("kimi_files")
T = TypeVar("T")


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
            from .pacing import Pacer

            pacer = Pacer()
        #: Paces every request of this client, for its lifetime (learns the account's limits).
        self.pacer = pacer
        #: The server's time, from the Date headers of its answers (see kimi_files.adoption).
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
        from .state import default_state_path

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
            reason = _retry.connect_failure(exc, self.answered)
            if reason is not None:
                _detached(ServerUnreachableError(
                    _retry.unreachable_message(method, url, self.base_url, reason, str(exc)),
                    reason=reason))
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
        #: a shared listing in flight (None as its result: its leader was interrupted)
        self._listing: cf.Future[FileList | None] | None = None
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
        with self.pacer.slot(f"{method} {path}"):
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
        while True:
            with self._listing_lock:
                joined = future = self._listing
                if joined is None:
                    future = self._listing = cf.Future()
            assert future is not None
            if joined is not None:
                shared_listing = joined.result()
                if shared_listing is not None:
                    return shared_listing
                continue  # its leader was interrupted, not failed: list anew
            listing: FileList | None = None
            error: Exception | None = None
            try:
                listing = self.run(list_steps(self.retry_policy))
                return listing
            except Exception as exc:
                error = exc
                raise
            finally:
                with self._listing_lock:
                    self._listing = None
                # an interruption of this thread (KeyboardInterrupt...) is no answer for the
                # others: they get None and list anew; a failure of the listing they share
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(listing)

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

    def content(self, file_id: str, *, raw: bool = False) -> FileContent:
        """The extracted text of an uploaded file (and the platform's JSON document).
        ``raw=True``: the body as the service keeps it, for a ``batch`` file (its JSONL).

        Raises:
            MalformedResponseError: the answer was not the JSON document with a string
                ``content`` (cut-off JSON, an empty body, an HTML page), or with ``raw`` an
                empty body or an HTML page, every attempt.
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return self.run(content_steps(self.retry_policy, file_id, raw=raw))

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

    def extract_many(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[ExtractKwargs]) -> Extraction:
        """The text of a corpus of any size within the quota, with this client: see
        :func:`kimi_files.extract_many`.

        Raises:
            KimiError: as :func:`kimi_files.extract_many`.
        """
        from .extraction import extract_many

        return extract_many(paths, client=self, **options)

    # --- from documents to a chat request --------------------------------------------------

    def messages(self, paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
                 strict: bool = False, max_tokens: int | None = None, model: str | None = None,
                 **options: Unpack[UploadKwargs]) -> Messages:
        """The system messages for a chat request: see :func:`kimi_files.messages`.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        from .chat import messages_steps

        return self.run(messages_steps(self, paths, UploadOptions.of(options),
                                       max_chars=max_chars, strict=strict,
                                       max_tokens=max_tokens, model=model))

    def estimate_tokens(self, messages: Sequence[Mapping[str, Any]], *,
                        model: str = DEFAULT_MODEL) -> int:
        """The platform's estimate of a chat request's tokens
        (``POST /v1/tokenizers/estimate-token-count``).

        Raises:
            ModelNotFoundError: the platform does not know the model.
            APIStatusError: the platform refused it.
        """
        from .tokens import estimate_steps

        return self.run(estimate_steps(self.retry_policy, model, messages))

    def tokens(self, paths: Sequence[str | os.PathLike[str]], *, model: str = DEFAULT_MODEL,
               **options: Unpack[UploadKwargs]) -> TokenReport:
        """Each document's tokens, the total, and whether it fits the model's context window
        (each document estimated once per model, ever: the count is cached).

        Raises:
            KimiError: the estimate failed (ModelNotFoundError for an unknown model).
        """
        from .tokens import tokens_steps

        return self.run(tokens_steps(self, paths, model=model, options=UploadOptions.of(
            {"progress": False, **options})))

    @property
    def batches(self) -> Batches:
        """The platform's Batch API: ``client.batches.create/retrieve/list/cancel`` and the
        helpers ``build/check/submit/wait/results`` (see :mod:`kimi_files.batches`)."""
        from .batches import Batches

        return Batches(self)

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
        #: a shared listing in flight (None as its result: its leader was cancelled)
        self._alisting: asyncio.Future[FileList | None] | None = None

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
        reader = None
        if isinstance(content, Iterable) and isinstance(content, AsyncIterable):
            # read the async way (off the event loop); closed whatever happens (an answer, an
            # error, a cancellation), so no reading outlives the request and its file
            reader = kwargs["content"] = content.__aiter__()
        try:
            async with self.pacer.aslot(f"{method} {path}"):
                with self._translate(method, url):
                    response = await self._http.request(method, url, headers=self._headers(
                        kwargs.pop("headers", None)), **kwargs)
                return self._check(method, url, path, response)
        finally:
            aclose = getattr(reader, "aclose", None)
            if aclose is not None:
                await aclose()

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
        while True:
            joined = self._alisting
            if joined is not None and not joined.done():
                # shielded: cancelling this waiter never cancels the listing others wait for
                shared_listing = await asyncio.shield(joined)
                if shared_listing is not None:
                    return shared_listing
                continue  # its leader was cancelled, not failed: list anew
            future: asyncio.Future[FileList | None] = asyncio.get_running_loop().create_future()
            self._alisting = future
            listing: FileList | None = None
            error: Exception | None = None
            try:
                listing = await self.run(list_steps(self.retry_policy))
                return listing
            except Exception as exc:
                error = exc
                raise
            finally:
                if self._alisting is future:
                    self._alisting = None
                # this task's cancellation is no answer for the others: they get None and
                # list anew; a failure of the listing they share
                if error is not None:
                    future.set_exception(error)
                    future.exception()  # retrieved: no "never retrieved" warning
                else:
                    future.set_result(listing)

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

    async def content(self, file_id: str, *, raw: bool = False) -> FileContent:
        """The extracted text of an uploaded file (``raw``: see :meth:`KimiFiles.content`).

        Raises:
            MalformedResponseError: as :meth:`KimiFiles.content`.
            APIStatusError: the service refused it (NotFoundError for an unknown id), or kept
                failing until the retries ran out.
            APIConnectionError: the service could not be reached (after the retries).
        """
        return await self.run(content_steps(self.retry_policy, file_id, raw=raw))

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

    def extract_many(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[ExtractKwargs]) -> AsyncExtraction:
        """:meth:`KimiFiles.extract_many` for asyncio: ``async for r in
        client.extract_many(...)`` (not awaited: an async iterator).

        Raises:
            KimiError: as :func:`kimi_files.extract_many`.
        """
        from .extraction import aextract_many

        return aextract_many(paths, client=self, **options)

    # --- from documents to a chat request --------------------------------------------------

    async def messages(self, paths: Sequence[str | os.PathLike[str]], *,
                       max_chars: int | None = None, strict: bool = False,
                       max_tokens: int | None = None, model: str | None = None,
                       **options: Unpack[UploadKwargs]) -> Messages:
        """:meth:`KimiFiles.messages`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        from .chat import messages_steps

        return await self.run(messages_steps(self, paths, UploadOptions.of(options),
                                             max_chars=max_chars, strict=strict,
                                             max_tokens=max_tokens, model=model))

    async def estimate_tokens(self, messages: Sequence[Mapping[str, Any]], *,
                              model: str = DEFAULT_MODEL) -> int:
        """:meth:`KimiFiles.estimate_tokens`, awaited.

        Raises:
            APIStatusError: as :meth:`KimiFiles.estimate_tokens`.
        """
        from .tokens import estimate_steps

        return await self.run(estimate_steps(self.retry_policy, model, messages))

    async def tokens(self, paths: Sequence[str | os.PathLike[str]], *,
                     model: str = DEFAULT_MODEL, **options: Unpack[UploadKwargs]) -> TokenReport:
        """:meth:`KimiFiles.tokens`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.tokens`.
        """
        from .tokens import tokens_steps

        return await self.run(tokens_steps(self, paths, model=model, options=UploadOptions.of(
            {"progress": False, **options})))

    @property
    def batches(self) -> AsyncBatches:
        """:attr:`KimiFiles.batches`, awaited (:class:`kimi_files.batches.AsyncBatches`)."""
        from .batches import AsyncBatches

        return AsyncBatches(self)

    def session(self, *, delete_on_exit: bool = True) -> AsyncSession:
        """``async with client.session() as s:``; see :class:`kimi_files.chat.AsyncSession`.

        Raises:
            Nothing (the session's own calls raise as theirs do).
        """
        from .chat import AsyncSession

        return AsyncSession(self, delete_on_exit=delete_on_exit)


# --- the endpoints' steps, shared by both clients ---------------------------------------------------


def call_steps(method: str, path: str, parse: Callable[[httpx.Response], T], policy: RetryPolicy,
               *, delete: bool = False, once_sent: bool = False, **kwargs: Any) -> Steps[T]:
    """A request, its answer parsed by ``parse``, retried by the platform's rules (for
    idempotent calls; a malformed answer is retried too). ``once_sent``: a call that must
    not run twice (it creates something) is retried only when it surely did nothing."""
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
            if not _retry.should_retry(exc) or (once_sent and _retry.may_have_stored(exc)):
                raise
            lost = lost or _retry.may_have_stored(exc)
            wait = _retry.retry_wait(exc, attempt, policy)
            now = time.monotonic()
            if not _retry.attempts_left(attempt, started, wait, policy, now, error=exc):
                raise
            log.info("%s %s failed (%s); retry %d in %.1fs", method, path, exc, attempt, wait)
            yield Wait(wait, error=exc, attempt=attempt, what=f"{method} {path}",
                       left=_retry.remaining(started, policy, now))


#: The most pages one listing follows (1,000 files a page for 10,000 pages is far beyond any
#: account): a server that keeps saying ``has_more`` with new ids cannot loop forever.
MAX_LIST_PAGES = 10_000


def list_steps(policy: RetryPolicy) -> Steps[FileList]:
    """Every file of the account, each id once. The platform documents no paging; a server
    that pages (``has_more``, as openai-style servers and the emulator do) is followed with
    ``after`` the last id of each page, each page retried on its own.

    Raises:
        MalformedResponseError: a page says there is more but gives no way on (no files, or
            a last id already gone on from: the same page again), or the pages never end.
    """
    files: list[FileObject] = []
    after: set[str] = set()
    params: dict[str, Any] = {}
    url = "files"
    for _ in range(MAX_LIST_PAGES):
        page, more, url = yield from call_steps("GET", "files", _page, policy, **params)
        files.extend(page.data)
        if not more:
            return FileList.of(files, page.object)
        last = page.data[-1].id if page.data else None
        if last is None or last in after:
            way = "no files on the page" if last is None else f"the page ends at {last!r:.80} again"
            raise MalformedResponseError(
                f"GET {url}: the listing says it has more files (has_more) but gives no way on "
                f"({way}); the account's files cannot be listed whole from this server",
                status_code=200)
        after.add(last)
        params = {"params": {"after": last}}
    raise MalformedResponseError(
        f"GET {url.split('?')[0]}: the listing still says it has more files after "
        f"{MAX_LIST_PAGES:,} pages "
        f"({len(files):,} files); the account's files cannot be listed whole from this server",
        status_code=200)


def _page(response: httpx.Response) -> tuple[FileList, bool, str]:
    """One page of the listing, whether it says there is more, and its URL."""
    data = _json(response)
    return FileList.from_dict(data), data.get("has_more") is True, str(response.request.url)


def retrieve_steps(policy: RetryPolicy, file_id: str) -> Steps[FileObject]:
    return call_steps("GET", f"files/{_id(file_id)}", lambda r: FileObject.from_dict(_json(r)),
                      policy)


def delete_file_steps(policy: RetryPolicy, file_id: str) -> Steps[FileDeleted]:
    return call_steps("DELETE", f"files/{_id(file_id)}",
                      lambda r: FileDeleted.from_dict(_json(r)), policy, delete=True)


def content_steps(policy: RetryPolicy, file_id: str, *, raw: bool = False) -> Steps[FileContent]:
    """The content of a file: the platform's JSON document, or with ``raw`` any body but an
    empty one or an HTML page (a batch file's JSONL). Anything else is a malformed success,
    retried like one."""
    return call_steps("GET", f"files/{_id(file_id)}/content",
                      _raw_content if raw else _content, policy)


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
    content = FileContent.from_document(response.text)
    if content is None:
        raise _not_content(response, "not the content document (a JSON object with a string "
                                     "'content'; a batch file's JSONL is asked for raw)")
    return content


def _raw_content(response: httpx.Response) -> FileContent:
    if not response.content or "html" in response.headers.get("content-type", "").lower():
        raise _not_content(response, "empty" if not response.content else "an HTML page")
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


def _not_content(response: httpx.Response, what: str) -> MalformedResponseError:
    from ._answers import _summarise_text
    from ._redact import redact

    text = response.text
    seen = f": {_summarise_text(redact(text), 80)!r}" if text.strip() else " (empty)"
    return MalformedResponseError(
        f"{response.request.method} {response.request.url}: the server answered "
        f"{response.status_code} with a body that is {what}{seen}",
        status_code=response.status_code, body=redact(text[:500]))


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
