"""The clients for the Files API: :class:`KimiFiles` here, :class:`AsyncKimiFiles` (in
``_async_client.py``) its asyncio twin.

One httpx client (one connection pool) per kimi-files client, built in ``_transport.py``, where
transport and status errors become kimi-files errors in exactly one place
(:meth:`_ClientBase._translate` and :meth:`_ClientBase._check`). Read-only calls and deletes are
retried by the platform's rules (``_endpoints.call_steps``); the upload endpoint is a single
attempt here (``create``) and gets its careful retries in :mod:`kimi_files._uploader`. Both
clients run the same steps: only the transport (``request``) and the driver (``run``) differ.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx

from ._async_client import AsyncKimiFiles
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
from ._steps import Steps, run_sync
from ._transport import _ClientBase

if TYPE_CHECKING:

    from typing_extensions import Unpack

    from ._batch import BatchReport, IngestKwargs
    from ._batches import Batches
    from ._chat import Messages, Session
    from ._extraction import Extraction, ExtractKwargs
    from ._models import UploadedFile
    from ._pacing import Pacer
    from ._tokens import TokenReport
    from ._uploader import FileBody, Preflight


__all__ = ["AsyncKimiFiles", "KimiFiles"]

log = logging.getLogger("kimi_files")
T = TypeVar("T")



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
        return self._content(file_id, raw=raw)

    def _content(self, file_id: str, *, raw: bool = False, name: str | None = None,
                 max_retries: int | None = None) -> FileContent:
        """:meth:`content`, checked to be the document of the file ``name`` (when given),
        with ``max_retries`` retries (None: the client's policy): the steps' GetContent."""
        return self.run(content_steps(self.retry_policy.with_retries(max_retries), file_id,
                                      raw=raw, name=name))

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
        from ._uploader import upload_steps

        return self.run(upload_steps(self, path, UploadOptions.of(options)))

    def preflight(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> Preflight:
        """Every check :meth:`upload` makes, and its room plan, without sending the file or
        deleting anything (one list call).

        Raises:
            PreflightError: the error the upload would raise for this file.
            APIStatusError: the account could not be listed.
        """
        from ._uploader import preflight_steps

        return self.run(preflight_steps(self, path, UploadOptions.of(options)))

    def extract(self, path: str | os.PathLike[str] | None = None, *, file_id: str | None = None,
                **options: Unpack[UploadKwargs]) -> str:
        """The extracted text of a local file (uploading it first) or of ``file_id``.

        Raises:
            KimiError: as :func:`kimi_files.extract`.
        """
        from ._uploader import extract_steps

        return self.run(extract_steps(self, path, file_id, UploadOptions.of(options)))

    def ingest(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
               **options: Unpack[IngestKwargs]) -> BatchReport:
        """A planned, paced, resumable batch with this client: see :func:`kimi_files.ingest`.

        Raises:
            KimiError: as :func:`kimi_files.ingest`.
        """
        from ._batch import ingest

        return ingest(paths, client=self, **options)

    def extract_many(self, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                     **options: Unpack[ExtractKwargs]) -> Extraction:
        """The text of a corpus of any size within the quota, with this client: see
        :func:`kimi_files.extract_many`.

        Raises:
            KimiError: as :func:`kimi_files.extract_many`.
        """
        from ._extraction import extract_many

        return extract_many(paths, client=self, **options)

    # --- from documents to a chat request --------------------------------------------------

    def messages(self, paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
                 strict: bool = False, max_tokens: int | None = None, model: str | None = None,
                 **options: Unpack[UploadKwargs]) -> Messages:
        """The system messages for a chat request: see :func:`kimi_files.messages`.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        from ._chat import messages_steps

        return self.run(messages_steps(self, paths, UploadOptions.of(options),
                                       max_chars=max_chars, strict=strict,
                                       max_tokens=max_tokens, model=model))

    def estimate_tokens(self, messages: Sequence[Mapping[str, object]], *,
                        model: str = DEFAULT_MODEL) -> int:
        """The platform's estimate of a chat request's tokens
        (``POST /v1/tokenizers/estimate-token-count``).

        Raises:
            ModelNotFoundError: the platform does not know the model.
            APIStatusError: the platform refused it.
        """
        from ._tokens import estimate_steps

        return self.run(estimate_steps(self.retry_policy, model, messages))

    def tokens(self, paths: Sequence[str | os.PathLike[str]], *, model: str = DEFAULT_MODEL,
               **options: Unpack[UploadKwargs]) -> TokenReport:
        """Each document's tokens, the total, and whether it fits the model's context window
        (each document estimated once per model, ever: the count is cached).

        Raises:
            KimiError: the estimate failed (ModelNotFoundError for an unknown model).
        """
        from ._tokens import tokens_steps

        return self.run(tokens_steps(self, paths, model=model, options=UploadOptions.of(
            {"progress": False, **options})))

    @property
    def batches(self) -> Batches:
        """The platform's Batch API: ``client.batches.create/retrieve/list/cancel`` and the
        helpers ``build/check/submit/wait/results`` (see :mod:`kimi_files._batches`)."""
        from ._batches import Batches

        return Batches(self)

    def session(self, *, delete_on_exit: bool = True) -> Session:
        """Uploads and extractions cleaned up when the block ends:
        ``with client.session() as s: s.extract(path)``; see :class:`kimi_files._chat.Session`.

        Raises:
            Nothing (the session's own calls raise as theirs do).
        """
        from ._chat import Session

        return Session(self, delete_on_exit=delete_on_exit)
