"""Uploading one file: preflight, room, a streamed request, safe retries, never a duplicate.

:func:`send_file` is the retry loop every upload goes through (the batch too). Its rules:

* the file is streamed from disk in chunks (constant memory) and rewound before every attempt;
* an error is retried only when :func:`kimi_files.retry.should_retry` says so, after the wait
  :func:`kimi_files.retry.retry_wait` gives; attempts and total time are bounded;
* after an attempt that may have been stored although its answer was lost (a reset, a
  timeout, a 5xx), the account is listed and a file with the same name and size that was not
  there before the upload is adopted instead of sending again: a lost response never leaves
  two copies;
* a stored file whose status says extraction failed is deleted, then the upload is retried.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import retry as _retry
from .config import DEFAULT_PURPOSE, RetryPolicy
from .errors import (
    ExtractionFailedError,
    KimiError,
    LocalFileError,
    NotFoundError,
    UploadCancelledError,
)
from .models import FileObject, UploadedFile
from .preflight import LocalFile, inspect_file
from .progress import ProgressBar, short_label
from .quota import FreeQuota, RoomPlan, plan_room

if TYPE_CHECKING:
    from .client import KimiFiles

__all__ = ["Claims", "Preflight", "extract_text", "find_adoptable", "free_room", "preflight",
           "send_file", "upload_path"]

log = logging.getLogger("kimi_files")


# --- pure rules -------------------------------------------------------------------------------


def find_adoptable(
    files: Iterable[FileObject], filename: str, size: int, known_ids: Collection[str]
) -> list[FileObject]:
    """Files that may be the copy a lost upload stored: same name and size, not known before.

    Oldest first. Pure.
    """
    names = {filename, form_encoded(filename)}
    return sorted(
        (f for f in files if f.filename in names and f.bytes == size and f.id not in known_ids),
        key=lambda f: (f.created_at, f.id),
    )


def form_encoded(filename: str) -> str:
    """The name as multipart clients send it (`"` and line breaks percent-encoded); a server
    that does not decode them stores this form."""
    return filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Claims:
    """File ids known before an upload began or taken by uploads of this run (thread-safe).

    A lost-response reconciliation may only adopt a file nobody else has claimed.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids = set(ids)
        self._lock = threading.Lock()

    def snapshot(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def add(self, file_id: str) -> None:
        with self._lock:
            self._ids.add(file_id)

    def claim_first(self, candidates: Iterable[FileObject]) -> FileObject | None:
        """Atomically claim the first candidate not yet claimed."""
        with self._lock:
            for f in candidates:
                if f.id not in self._ids:
                    self._ids.add(f.id)
                    return f
        return None


# --- the streamed body ------------------------------------------------------------------------


class FileBody:
    """A read-only view of an open file of a known size, for httpx to stream.

    httpx reads it in 64 KiB chunks and seeks to 0 before each send (the rewind before every
    attempt). ``on_read`` sees every chunk sent (progress, hashing), ``on_rewind`` each
    rewind. Reads stop at ``size``: a file that shrinks or grows during the upload raises
    :class:`LocalFileError` instead of sending something else than was checked.
    """

    def __init__(
        self,
        fh: IO[bytes],
        size: int,
        path: str,
        on_read: Callable[[bytes], None] | None = None,
        on_rewind: Callable[[], None] | None = None,
    ) -> None:
        self._fh = fh
        self._size = size
        self._pos = 0
        self._path = path
        self._on_read = on_read
        self._on_rewind = on_rewind

    def read(self, n: int = -1) -> bytes:
        remaining = self._size - self._pos
        if remaining <= 0:
            if self._fh.read(1):
                raise LocalFileError(
                    f"{self._path}: the file grew during the upload; upload it again once "
                    "it is complete", path=self._path, rule="unchanged")
            return b""
        chunk = self._fh.read(remaining if n is None or n < 0 else min(n, remaining))
        if not chunk:
            raise LocalFileError(
                f"{self._path}: the file shrank during the upload ({self._pos:,} of "
                f"{self._size:,} bytes read); upload it again once it is complete",
                path=self._path, rule="unchanged")
        self._pos += len(chunk)
        if self._on_read:
            self._on_read(chunk)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END and offset == 0:
            return self._size  # httpx asks for the length this way; nothing moves
        if whence == os.SEEK_SET and offset == self._pos:
            return self._pos
        if whence != os.SEEK_SET or offset != 0:
            raise OSError("FileBody only rewinds to the start")
        self._fh.seek(0)
        had_read, self._pos = self._pos, 0
        if had_read and self._on_rewind:
            self._on_rewind()
        return 0

    def tell(self) -> int:
        return self._pos


# --- preflight (public on its own) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preflight:
    """The verdict on one file: it passed the local checks, and this is the room plan."""

    file: LocalFile
    plan: RoomPlan
    listing: tuple[FileObject, ...]


def preflight(
    client: KimiFiles,
    path: str | os.PathLike[str],
    *,
    purpose: str = DEFAULT_PURPOSE,
    free_quota: FreeQuota = "never",
    allow_any_type: bool = False,
) -> Preflight:
    """Check ``path`` locally, then against the account (one list call). Sends no file.

    Raises a :class:`~kimi_files.PreflightError` subclass when the file would be refused or
    cannot fit; otherwise says what would be deleted to make room (``plan.deletions``).
    """
    local = inspect_file(path, purpose=purpose, limits=client.limits,
                         allow_any_type=allow_any_type)
    listing = client.list().data
    plan = plan_room(listing, 1, local.size, client.limits, free_quota,
                     what=os.fsdecode(local.path))
    return Preflight(local, plan, listing)


# --- the retry loop ---------------------------------------------------------------------------


def _check_unchanged(local: LocalFile) -> None:
    try:
        st = os.stat(local.path)
    except OSError as exc:
        raise LocalFileError(f"{local.path}: gone since the preflight ({exc.strerror})",
                             path=str(local.path), rule="exists") from None
    if st.st_size != local.size or st.st_mtime_ns != local.mtime_ns:
        raise LocalFileError(
            f"{local.path}: changed since the preflight (now {st.st_size:,} bytes, was "
            f"{local.size:,}); upload it again once it is complete",
            path=str(local.path), rule="unchanged")


def _delete_quietly(client: KimiFiles, file_id: str) -> None:
    with contextlib.suppress(NotFoundError):
        client.delete(file_id)


def free_room(client: KimiFiles, plan: RoomPlan, *, what: str,
              stop: threading.Event | None = None) -> list[FileObject]:
    """Delete the files of a room plan, in its order; each deletion is logged. Returns them.

    Call it only once every local check passed: it is the one place kimi-files deletes to
    make room."""
    deleted = []
    for victim in plan.deletions:
        if stop is not None and stop.is_set():
            raise UploadCancelledError(f"cancelled while freeing room for {what}")
        _delete_quietly(client, victim.id)
        deleted.append(victim)
        log.warning("deleted %s (%s, %d bytes, created_at %d) to make room for %s",
                    victim.id, victim.filename, victim.bytes, victim.created_at, what)
    return deleted


@dataclass(frozen=True, slots=True)
class Sent:
    file: FileObject
    attempts: int
    adopted: bool


def _reconcile(client: KimiFiles, local: LocalFile, claims: Claims) -> FileObject | None:
    """After a lost answer: adopt the copy the server stored, if it did; leave no extra."""
    listing = client.list().data
    matches = find_adoptable(listing, local.filename, local.size, claims.snapshot())
    good = [f for f in matches if not f.failed]
    for bad in (f for f in matches if f.failed):
        if claims.claim_first([bad]):
            _delete_quietly(client, bad.id)
    adopted = claims.claim_first(good)
    if adopted is not None:
        # more than one lost answer may have stored more than one copy: keep one
        for extra in good:
            if extra.id != adopted.id and claims.claim_first([extra]):
                _delete_quietly(client, extra.id)
        log.info("%s: the answer was lost but the server stored it as %s; adopted",
                 local.path, adopted.id)
    return adopted


def send_file(
    client: KimiFiles,
    local: LocalFile,
    *,
    purpose: str,
    claims: Claims,
    policy: RetryPolicy | None = None,
    on_read: Callable[[bytes], None] | None = None,
    on_rewind: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Sent:
    """Upload ``local`` with the platform's retry rules; see the module docstring."""
    policy = policy or client.retry_policy
    started = time.monotonic()
    attempt = 0
    suspect = False  # an earlier attempt may have been stored
    shown = os.fsdecode(local.path)
    with open(local.path, "rb") as fh:

        def rewound() -> None:
            if on_rewind:
                on_rewind(attempt)

        body = FileBody(fh, local.size, shown, on_read, rewound)
        while True:
            if stop is not None and stop.is_set():
                raise UploadCancelledError(f"{shown}: cancelled before it was uploaded")
            attempt += 1
            if suspect:
                adopted = _reconcile(client, local, claims)
                if adopted is not None:
                    return Sent(adopted, attempt - 1, True)
                suspect = False
            _check_unchanged(local)
            error: KimiError
            try:
                obj = client.create(body, filename=local.filename, purpose=purpose,
                                    content_type=local.mime_type)
            except KimiError as exc:
                error = exc
                suspect = suspect or _retry.may_have_stored(exc)
            else:
                claims.add(obj.id)
                if not obj.failed:
                    return Sent(obj, attempt, False)
                # stored, but extraction failed: remove it, then try again
                _delete_quietly(client, obj.id)
                error = ExtractionFailedError(
                    f"{shown}: the server stored the file as {obj.id} but extraction failed "
                    f"({obj.status_details or obj.status}); deleted it",
                    status_code=200, type="file_status_failed")
            if not _retry.should_retry(error):
                raise error
            wait = _retry.retry_wait(error, attempt, policy)
            if not _retry.attempts_left(attempt, started, wait, policy, time.monotonic()):
                if suspect and (adopted := _reconcile(client, local, claims)) is not None:
                    return Sent(adopted, attempt, True)
                raise error
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", shown, attempt, error, wait)
            if not _retry.sleep(wait, stop):
                raise UploadCancelledError(f"{shown}: cancelled while waiting to retry") from error


def upload_path(
    client: KimiFiles,
    path: Path,
    *,
    purpose: str = DEFAULT_PURPOSE,
    free_quota: FreeQuota = "never",
    progress: bool | None = None,
    max_retries: int | None = None,
    allow_any_type: bool = False,
) -> UploadedFile:
    """Preflight ``path``, free room if asked, then :func:`send_file` it with a progress bar."""
    check = preflight(client, path, purpose=purpose, free_quota=free_quota,
                      allow_any_type=allow_any_type)
    local = check.file
    for warning in local.warnings:
        log.warning("%s", warning)
    deleted = free_room(client, check.plan, what=local.filename)
    policy = client.retry_policy.with_retries(max_retries)
    claims = Claims(f.id for f in check.listing)
    with ProgressBar(total=local.size, desc=short_label(local.filename), enabled=progress) as bar:
        sent = send_file(
            client, local, purpose=purpose, claims=claims, policy=policy,
            on_read=lambda chunk: bar.advance(len(chunk)),
            on_rewind=lambda n: bar.rewind(f"retry {n}"),
        )
    return UploadedFile.of(
        sent.file, path=os.fsdecode(local.path), attempts=sent.attempts, adopted=sent.adopted,
        deleted=tuple(deleted), mime_type=local.mime_type, warnings=local.warnings,
    )


def extract_text(client: KimiFiles, target: str | os.PathLike[str], **upload_options: Any) -> str:
    """The extracted text of a local path (uploaded first) or of an uploaded file's id."""
    if isinstance(target, os.PathLike) or os.path.lexists(target) or _looks_like_path(target):
        uploaded = upload_path(client, Path(target), **upload_options)
        file_id = uploaded.id
    else:
        file_id = target
    return client.content(file_id).text


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or os.path.splitext(value)[1] != ""
