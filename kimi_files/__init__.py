"""kimi-files: get documents into the Kimi (Moonshot AI) Files API safely and fast.

::

    import kimi_files

    uploaded = kimi_files.upload("report.pdf")          # preflight, stream, retry, no duplicate
    text = kimi_files.extract("report.pdf")             # upload, then the extracted text
    with kimi_files.KimiFiles() as client:              # the rest of the API
        for f in client.list():
            print(f.id, f.filename)

The key comes from ``api_key=`` or ``MOONSHOT_API_KEY``; the base URL from ``base_url=``,
``MOONSHOT_BASE_URL`` or the international platform. Every failure is a :class:`KimiError`.

Importing this package is light: the HTTP client, progress bars and batch machinery load on
first use, and the emulator only when imported itself (``kimi_files.emulator``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._config import (
    CHINA_BASE_URL,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KNOWN_PURPOSES,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    Limits,
    RetryPolicy,
)
from ._models import FileContent, FileDeleted, FileList, FileObject, UploadedFile
from ._version import __version__
from .errors import *  # noqa: F403  (the whole tree is public)
from .errors import __all__ as _error_names

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._batch import BatchReport, FileResult, IngestKwargs, aingest, ingest
    from ._batch_build import BuildReport
    from ._batch_flow import Manifest
    from ._batch_input import BATCH_INPUT_RULES
    from ._batch_models import Batch, BatchList
    from ._batch_results import ResultsReport
    from ._batches import AsyncBatches, Batches
    from ._chat import AsyncSession, Messages, Session
    from ._client import AsyncKimiFiles, KimiFiles
    from ._extraction import (
        AsyncExtraction,
        Extraction,
        ExtractKwargs,
        ExtractResult,
        ExtractSummary,
        aextract_many,
        extract_many,
    )
    from ._options import UploadKwargs, UploadOptions
    from ._pacing import Pacer
    from ._preflight import LocalFile
    from ._progress import disable_progress_bars, enable_progress_bars
    from ._quota import FreeQuota, RoomPlan, Usage
    from ._retry import is_slow_down, waiting_disabled
    from ._state import StateStore
    from ._state_files import sweep_ephemeral
    from ._tokens import CONTEXT_WINDOWS, TokenReport
    from ._uploader import Preflight

#: Public names that load their module on first use, so ``import kimi_files`` stays light.
_LAZY = {
    "KimiFiles": "_client",
    "AsyncKimiFiles": "_client",
    "ingest": "_batch",
    "extract_many": "_extraction",
    "aextract_many": "_extraction",
    "Extraction": "_extraction",
    "AsyncExtraction": "_extraction",
    "ExtractResult": "_extraction",
    "ExtractSummary": "_extraction",
    "ExtractKwargs": "_extraction",
    "aingest": "_batch",
    "BatchReport": "_report",
    "FileResult": "_report",
    "IngestKwargs": "_batch",
    "UploadKwargs": "_options",
    "UploadOptions": "_options",
    "Preflight": "_uploader",
    "LocalFile": "_preflight",
    "RoomPlan": "_quota",
    "FreeQuota": "_quota",
    "Usage": "_quota",
    "Pacer": "_pacing",
    "Messages": "_chat",
    "Session": "_chat",
    "AsyncSession": "_chat",
    "StateStore": "_state",
    "waiting_disabled": "_retry",
    "disable_progress_bars": "_progress",
    "enable_progress_bars": "_progress",
    "Batch": "_batch_models",
    "BatchList": "_batch_models",
    "Batches": "_batches",
    "AsyncBatches": "_batches",
    "Manifest": "_batch_flow",
    "BuildReport": "_batch_build",
    "ResultsReport": "_batch_results",
    "TokenReport": "_tokens",
    "CONTEXT_WINDOWS": "_tokens",
    "BATCH_INPUT_RULES": "_batch_input",
    "is_slow_down": "_retry",
    "sweep_ephemeral": "_state_files",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kimi_files' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _own_client(api_key: str | None, base_url: str | None,
            client: KimiFiles | None) -> tuple[KimiFiles, bool]:
    if client is not None:
        return client, False
    from ._client import KimiFiles

    return KimiFiles(api_key=api_key, base_url=base_url), True


def _own_aclient(api_key: str | None, base_url: str | None,
             client: AsyncKimiFiles | None) -> tuple[AsyncKimiFiles, bool]:
    if client is not None:
        return client, False
    from ._client import AsyncKimiFiles

    return AsyncKimiFiles(api_key=api_key, base_url=base_url), True


def upload(path: str | os.PathLike[str], *, api_key: str | None = None,
           base_url: str | None = None, client: KimiFiles | None = None,
           **options: Unpack[UploadKwargs]) -> UploadedFile:
    """Upload one file safely; returns the stored file (an :class:`UploadedFile`).

    * Preflight before any byte is sent: the path, the purpose, zero size, the per-file cap,
      the content type (python-magic) and the account's free slots and bytes (one list call).
    * ``free_quota="oldest"`` (or a predicate, or ids in order) deletes the fewest files, in
      that order, that make room; only after every local check passed. ``"never"`` (the
      default) refuses with :class:`NoRoomError` instead. Deleted files are in ``.deleted``.
    * The file is streamed in constant memory with a progress bar (``progress=None``: when
      stderr is a terminal; ``KIMI_FILES_NO_PROGRESS=1`` turns bars off).
    * Retries follow the platform's rules (see :mod:`kimi_files._retry`); after a lost
      response the stored copy is adopted only when it is provably this upload's; otherwise
      the file is sent again and possible extra copies are listed in ``.suspects``.

    The options are :class:`UploadKwargs`.

    Raises:
        ConfigurationError: a missing key, a malformed base URL or an invalid option.
        PreflightError: the file is refused locally (:class:`LocalFileError`,
            :class:`UnsupportedFileTypeError`, :class:`NoRoomError`, ...), before any byte.
        APIStatusError: the service refused it, or kept failing until the retries ran out.
        APIConnectionError: the service could not be reached.
    """
    c, owned = _own_client(api_key, base_url, client)
    try:
        return c.upload(path, **options)
    finally:
        if owned:
            c.close()


async def aupload(path: str | os.PathLike[str], *, api_key: str | None = None,
                  base_url: str | None = None, client: AsyncKimiFiles | None = None,
                  **options: Unpack[UploadKwargs]) -> UploadedFile:
    """:func:`upload` for asyncio (the same checks, retries and result).

    Raises:
        KimiError: as :func:`upload`.
    """
    c, owned = _own_aclient(api_key, base_url, client)
    try:
        return await c.upload(path, **options)
    finally:
        if owned:
            await c.aclose()


def messages(paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
             strict: bool = False, max_tokens: int | None = None, model: str | None = None,
             api_key: str | None = None, base_url: str | None = None,
             client: KimiFiles | None = None, **options: Unpack[UploadKwargs]) -> Messages:
    """The system messages a chat request needs for these documents, in input order: one
    ``{"role": "system", "content": <the whole JSON text of files.content>}`` each, as the
    platform's docs put them. Each document is uploaded at most once per account (reused when
    the account holds its content) and its text fetched at most once (cached by content).

    ``max_chars`` keeps the total under a budget by cutting the largest documents first, with
    a visible marker; ``.cut`` says which. ``max_tokens`` does the same in tokens, as the
    platform estimates them for ``model`` (default ``kimi-k2.5``): each document is estimated
    once per model (the count is cached) and the final list checked once. The same documents
    give byte-identical messages, in input order, so the platform's prefix cache hits. A
    document the service cannot read is left out and named in ``.failed`` with its reason,
    unless ``strict=True``.

    Raises:
        ConfigurationError: a missing key, a malformed base URL or an invalid option.
        KimiError: with ``strict``, the first document that failed.
    """
    c, owned = _own_client(api_key, base_url, client)
    try:
        return c.messages(paths, max_chars=max_chars, strict=strict, max_tokens=max_tokens,
                          model=model, **options)
    finally:
        if owned:
            c.close()


async def amessages(paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
                    strict: bool = False, max_tokens: int | None = None,
                    model: str | None = None, api_key: str | None = None,
                    base_url: str | None = None, client: AsyncKimiFiles | None = None,
                    **options: Unpack[UploadKwargs]) -> Messages:
    """:func:`messages` for asyncio.

    Raises:
        KimiError: as :func:`messages`.
    """
    c, owned = _own_aclient(api_key, base_url, client)
    try:
        return await c.messages(paths, max_chars=max_chars, strict=strict,
                                max_tokens=max_tokens, model=model, **options)
    finally:
        if owned:
            await c.aclose()


def extract(path: str | os.PathLike[str] | None = None, *, file_id: str | None = None,
            api_key: str | None = None, base_url: str | None = None,
            client: KimiFiles | None = None, **options: Unpack[UploadKwargs]) -> str:
    """The extracted text of a local file (uploaded first, with :func:`upload`'s options), or
    of an uploaded file: ``extract(file_id="...")``. A file id is never taken for a path.

    Raises:
        ConfigurationError: not exactly one of ``path`` and ``file_id``; as :func:`upload`.
        KimiError: as :func:`upload`, or the content call failed.
    """
    c, owned = _own_client(api_key, base_url, client)
    try:
        return c.extract(path, file_id=file_id, **options)
    finally:
        if owned:
            c.close()


async def aextract(path: str | os.PathLike[str] | None = None, *, file_id: str | None = None,
                   api_key: str | None = None, base_url: str | None = None,
                   client: AsyncKimiFiles | None = None, **options: Unpack[UploadKwargs]) -> str:
    """:func:`extract` for asyncio.

    Raises:
        KimiError: as :func:`extract`.
    """
    c, owned = _own_aclient(api_key, base_url, client)
    try:
        return await c.extract(path, file_id=file_id, **options)
    finally:
        if owned:
            await c.aclose()


__all__ = [
    "CHINA_BASE_URL", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "KNOWN_PURPOSES", "MAX_FILES", "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES", "AsyncKimiFiles", "AsyncSession", "Messages", "Session", "amessages",
    "messages", "BatchReport", "FileContent", "FileDeleted", "FileList",
    "FileObject", "FileResult", "FreeQuota", "IngestKwargs", "KimiFiles", "Limits", "LocalFile",
    "Pacer", "Preflight", "RetryPolicy", "RoomPlan", "StateStore", "UploadKwargs",
    "UploadOptions", "UploadedFile", "Usage", "__version__", "aextract", "aingest", "aupload",
    "AsyncExtraction", "ExtractKwargs", "ExtractResult", "ExtractSummary", "Extraction",
    "aextract_many", "extract_many",
    "disable_progress_bars", "enable_progress_bars", "extract", "ingest", "upload",
    "waiting_disabled", "AsyncBatches", "Batch", "BatchList", "Batches", "BuildReport",
    "Manifest", "ResultsReport", "TokenReport", "CONTEXT_WINDOWS", "BATCH_INPUT_RULES",
    "is_slow_down", "sweep_ephemeral", *_error_names,
]
