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
from typing import TYPE_CHECKING, Any

from .config import (
    CHINA_BASE_URL,
    DEFAULT_BASE_URL,
    KNOWN_PURPOSES,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    Limits,
    RetryPolicy,
)
from .errors import *  # noqa: F403  (the whole tree is public)
from .errors import __all__ as _error_names
from .models import FileContent, FileDeleted, FileList, FileObject, UploadedFile

if TYPE_CHECKING:
    from .batch import BatchReport, FileResult, ingest
    from .client import KimiFiles
    from .progress import disable_progress_bars, enable_progress_bars
    from .quota import FreeQuota, RoomPlan
    from .uploader import Preflight

__version__ = "0.1.0"

_LAZY = {
    "KimiFiles": ("client", "KimiFiles"),
    "ingest": ("batch", "ingest"),
    "BatchReport": ("batch", "BatchReport"),
    "FileResult": ("batch", "FileResult"),
    "Preflight": ("uploader", "Preflight"),
    "RoomPlan": ("quota", "RoomPlan"),
    "FreeQuota": ("quota", "FreeQuota"),
    "disable_progress_bars": ("progress", "disable_progress_bars"),
    "enable_progress_bars": ("progress", "enable_progress_bars"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kimi_files' has no attribute {name!r}")


def _client(api_key: str | None, base_url: str | None, client: KimiFiles | None) -> tuple[KimiFiles, bool]:
    if client is not None:
        return client, False
    from .client import KimiFiles

    return KimiFiles(api_key=api_key, base_url=base_url), True


def upload(
    path: str | os.PathLike[str],
    *,
    purpose: str = "file-extract",
    api_key: str | None = None,
    base_url: str | None = None,
    free_quota: FreeQuota = "never",
    progress: bool | None = None,
    max_retries: int | None = None,
    allow_any_type: bool = False,
    client: KimiFiles | None = None,
) -> UploadedFile:
    """Upload one file safely; returns the stored file (an :class:`UploadedFile`).

    * Preflight before any byte is sent: the path, the purpose, zero size, the per-file cap,
      the content type (python-magic) and the account's free slots and bytes (one list call).
    * ``free_quota="oldest"`` (or a predicate, or ids in order) deletes the fewest files, in
      that order, that make room; only after every local check passed. ``"never"`` (the
      default) refuses with :class:`NoRoomError` instead. Deleted files are in ``.deleted``.
    * The file is streamed in constant memory with a progress bar (``progress=None``: when
      stderr is a terminal; ``KIMI_FILES_NO_PROGRESS=1`` turns bars off).
    * Retries follow the platform's rules (see :mod:`kimi_files.retry`); a lost response is
      resolved by adopting the stored copy, never by sending a second one.
    """
    c, owned = _client(api_key, base_url, client)
    try:
        return c.upload(path, purpose=purpose, free_quota=free_quota, progress=progress,
                        max_retries=max_retries, allow_any_type=allow_any_type)
    finally:
        if owned:
            c.close()


def extract(
    path_or_file_id: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    client: KimiFiles | None = None,
    **upload_options: Any,
) -> str:
    """The extracted text of a local file (uploading it first) or of an uploaded file id."""
    c, owned = _client(api_key, base_url, client)
    try:
        return c.extract(path_or_file_id, **upload_options)
    finally:
        if owned:
            c.close()


__all__ = [
    "CHINA_BASE_URL", "DEFAULT_BASE_URL", "KNOWN_PURPOSES", "MAX_FILES", "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES", "BatchReport", "FileContent", "FileDeleted", "FileList", "FileObject",
    "FileResult", "FreeQuota", "KimiFiles", "Limits", "Preflight", "RetryPolicy", "RoomPlan",
    "UploadedFile", "disable_progress_bars", "enable_progress_bars", "extract", "ingest",
    "upload", *_error_names,
]
