"""The asyncio client, :class:`AsyncKimiFiles`: every method of :class:`~kimi_files.KimiFiles`
as a coroutine, over the same steps (:mod:`kimi_files._steps`) and transport."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx

from ._config import (
    DEFAULT_MODEL,
    DEFAULT_PURPOSE,
    Limits,
    RetryPolicy,
)
from ._endpoints import (
    content_steps,
    create_steps,
    delete_file_steps,
    list_steps,
    retrieve_steps,
)
from ._models import FileContent, FileDeleted, FileList, FileObject
from ._options import UploadKwargs, UploadOptions
from ._steps import Steps, run_async
from ._transport import _ClientBase

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

    from ._batch import BatchReport, IngestKwargs
    from ._batches import AsyncBatches
    from ._chat import AsyncSession, Messages
    from ._extraction import AsyncExtraction, ExtractKwargs
    from ._models import UploadedFile
    from ._pacing import Pacer
    from ._tokens import TokenReport
    from ._uploader import FileBody, Preflight


__all__ = ["AsyncKimiFiles"]

log = logging.getLogger("kimi_files")
T = TypeVar("T")


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
        return await self._content(file_id, raw=raw)

    async def _content(self, file_id: str, *, raw: bool = False, name: str | None = None,
                       max_retries: int | None = None) -> FileContent:
        """:meth:`KimiFiles._content`, awaited."""
        return await self.run(content_steps(self.retry_policy.with_retries(max_retries),
                                            file_id, raw=raw, name=name))

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
        from ._uploader import upload_steps

        return await self.run(upload_steps(self, path, UploadOptions.of(options)))

    async def preflight(self, path: str | os.PathLike[str],
                        **options: Unpack[UploadKwargs]) -> Preflight:
        """:meth:`KimiFiles.preflight`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.preflight`.
        """
        from ._uploader import preflight_steps

        return await self.run(preflight_steps(self, path, UploadOptions.of(options)))

    async def extract(self, path: str | os.PathLike[str] | None = None, *,
                      file_id: str | None = None, **options: Unpack[UploadKwargs]) -> str:
        """:meth:`KimiFiles.extract`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.extract`.
        """
        from ._uploader import extract_steps

        return await self.run(extract_steps(self, path, file_id, UploadOptions.of(options)))

    async def ingest(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[IngestKwargs]) -> BatchReport:
        """:meth:`KimiFiles.ingest`, awaited: uploads run as tasks, not threads.

        Raises:
            KimiError: as :func:`kimi_files.ingest`.
        """
        from ._batch import aingest

        return await aingest(paths, client=self, **options)

    def extract_many(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[ExtractKwargs]) -> AsyncExtraction:
        """:meth:`KimiFiles.extract_many` for asyncio: ``async for r in
        client.extract_many(...)`` (not awaited: an async iterator).

        Raises:
            KimiError: as :func:`kimi_files.extract_many`.
        """
        from ._extraction import aextract_many

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
        from ._chat import messages_steps

        return await self.run(messages_steps(self, paths, UploadOptions.of(options),
                                             max_chars=max_chars, strict=strict,
                                             max_tokens=max_tokens, model=model))

    async def estimate_tokens(self, messages: Sequence[Mapping[str, object]], *,
                              model: str = DEFAULT_MODEL) -> int:
        """:meth:`KimiFiles.estimate_tokens`, awaited.

        Raises:
            APIStatusError: as :meth:`KimiFiles.estimate_tokens`.
        """
        from ._tokens import estimate_steps

        return await self.run(estimate_steps(self.retry_policy, model, messages))

    async def tokens(self, paths: Sequence[str | os.PathLike[str]], *,
                     model: str = DEFAULT_MODEL, **options: Unpack[UploadKwargs]) -> TokenReport:
        """:meth:`KimiFiles.tokens`, awaited.

        Raises:
            KimiError: as :meth:`KimiFiles.tokens`.
        """
        from ._tokens import tokens_steps

        return await self.run(tokens_steps(self, paths, model=model, options=UploadOptions.of(
            {"progress": False, **options})))

    @property
    def batches(self) -> AsyncBatches:
        """:attr:`KimiFiles.batches`, awaited (:class:`kimi_files._batches.AsyncBatches`)."""
        from ._batches import AsyncBatches

        return AsyncBatches(self)

    def session(self, *, delete_on_exit: bool = True) -> AsyncSession:
        """``async with client.session() as s:``; see :class:`kimi_files._chat.AsyncSession`.

        Raises:
            Nothing (the session's own calls raise as theirs do).
        """
        from ._chat import AsyncSession

        return AsyncSession(self, delete_on_exit=delete_on_exit)
