"""Uploading one file: preflight, room, a streamed request, safe retries, never the wrong file.

:func:`send_steps` is the retry loop every upload goes through (the batch too, sync and async
alike: see :mod:`kimi_files._steps`). Its rules:

* the file is streamed from disk in chunks (constant memory) and rewound before every attempt;
  a file that changes while it is sent (size, or a same-size rewrite seen in its mtime or
  ctime) fails, and the copy the server stored of it is deleted (its id came in our answer);
* an error is retried only when :func:`kimi_files._retry.should_retry` says so, after the wait
  :func:`kimi_files._retry.retry_wait` gives; attempts and total time are bounded;
* after an attempt that may have been stored although its answer was lost (a reset, a
  timeout, a 5xx, a malformed 200), the account is listed (again, after short pauses, when the
  server may still be working on it) and the copy is adopted only when
  :func:`kimi_files._adoption.resolve` proves it ours; otherwise the file is sent again, and
  whatever may be an extra copy of ours is reported in ``suspects``, never deleted;
* a stored file whose status says extraction failed (in our own answer) is deleted, then the
  upload is retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import _retry as _retry
from ._adoption import Attempt
from ._body import PIECE_BYTES, READ_AHEAD, FileBody, MultipartBody, PieceDigest, ReadAhead, _Recheck
from ._cache import ReuseCache, pick
from ._config import RetryPolicy
from ._hashing import sha256_of
from ._models import FileContent, FileList, FileObject, UploadedFile
from ._options import UploadOptions
from ._preflight import LocalFile, inspect_file
from ._progress import ProgressBar, short_label
from ._quota import RoomPlan, fmt_bytes, fmt_time, plan_room
from ._reconcile import Claims, _Reconciler, _without_siblings
from ._steps import (
    Blocking,
    ClientLike,
    CreateFile,
    DeleteFile,
    FileStat,
    GetContent,
    ListFiles,
    Now,
    Open,
    Progress,
    Say,
    Stat,
    Steps,
    Wait,
    closing,
)
from .errors import (
    APIConnectionError,
    ConfigurationError,
    ExtractionFailedError,
    GatewayError,
    KimiError,
    LocalFileError,
    MalformedResponseError,
    NotFoundError,
    UploadCancelledError,
)

# the request body (_body.py) and the lost-answer reconciliation (_reconcile.py) live apart;
# their public names stay importable from here
__all__ = ["PIECE_BYTES", "READ_AHEAD", "Claims", "FileBody", "MultipartBody", "PieceDigest",
           "Preflight", "ReadAhead", "Sent",
           "delete_steps", "extract_steps", "free_room_steps", "preflight_steps", "send_steps",
           "upload_steps"]

# --- preflight (public on its own) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preflight:
    """The verdict on one file: it passed the local checks, and this is the room plan."""

    file: LocalFile
    plan: RoomPlan
    listing: tuple[FileObject, ...]


def preflight_steps(client: ClientLike, path: str | os.PathLike[str],
                    options: UploadOptions) -> Steps[Preflight]:
    """Check ``path`` locally, then against the account (one list call). Sends no file.

    Raises a :class:`~kimi_files.PreflightError` subclass when the file would be refused or
    cannot fit; otherwise says what would be deleted to make room (``plan.deletions``).
    """
    local, listing = yield from _checked(client, path, options)
    plan = plan_room(listing, 1, local.size, client.limits, options.free_quota,
                     what=os.fsdecode(local.path))
    return Preflight(local, plan, listing)


def _checked(client: ClientLike, path: str | os.PathLike[str],
             options: UploadOptions) -> Steps[tuple[LocalFile, tuple[FileObject, ...]]]:
    """The local checks, then the account's listing."""
    local = yield Blocking(functools.partial(
        inspect_file, path, purpose=options.purpose, limits=client.limits,
        allow_any_type=options.allow_any_type))
    # any listing taken since this upload began will do: uploads at once share one
    listing: FileList = yield ListFiles(shared=True)
    return local, listing.data


# --- the retry loop ---------------------------------------------------------------------------


def _unchanged_steps(local: LocalFile) -> Steps[None]:
    """The path still has the size and mtime the preflight saw."""
    try:
        now: FileStat = yield Stat(local.path)
    except OSError as exc:
        raise LocalFileError(f"{local.path}: gone since the preflight ({exc.strerror})",
                             path=str(local.path), rule="exists") from None
    _check_unchanged(local, now.seen)


def _check_unchanged(local: LocalFile, now: tuple[int, int]) -> None:
    """``now`` (a size and an mtime) is what the preflight saw of the file."""
    if now != (local.size, local.mtime_ns):
        raise LocalFileError(
            f"{local.path}: changed since the preflight (now {now[0]:,} bytes, was "
            f"{local.size:,}); upload it again once it is complete",
            path=str(local.path), rule="unchanged")


def delete_steps(file_id: str) -> Steps[None]:
    """Delete a file; one already gone is fine."""
    with contextlib.suppress(NotFoundError):
        yield DeleteFile(file_id)


def free_room_steps(plan: RoomPlan, *, what: str, stop: threading.Event | None = None,
                    deleted: list[FileObject] | None = None) -> Steps[list[FileObject]]:
    """Delete the files of a room plan, in its order; each deletion is logged. Returns them.

    Each file is appended to ``deleted`` (when given) as soon as it is gone, so a caller
    still knows what was deleted when this stops half-way (Ctrl-C, an error). Call it only
    once every local check passed: it is the one place kimi-files deletes to make room."""
    deleted = [] if deleted is None else deleted
    for victim in plan.deletions:
        if stop is not None and stop.is_set():
            raise UploadCancelledError(f"cancelled while freeing room for {what}")
        yield from delete_steps(victim.id)
        deleted.append(victim)
        yield Say.warning("deleted %s (%s, %s, made %s) to make room for %s", victim.id,
                          victim.filename, fmt_bytes(victim.bytes),
                          fmt_time(victim.created_at), what)
    return deleted


@dataclass(frozen=True, slots=True)
class Sent:
    """What :func:`send_steps` achieved: the stored file, and what may be extra copies of it."""

    file: FileObject
    attempts: int
    adopted: bool
    #: Files that may be copies an earlier attempt stored, which cannot be proven ours:
    #: reported, never adopted or deleted (``kimi-files delete ID`` removes one).
    suspects: tuple[FileObject, ...] = ()
    #: False when an attempt lost its answer and its copy was never identified: one may
    #: still land, so the attempt stays on record (see :class:`AttemptRegistry`).
    settled: bool = True
    #: The SHA-256 of the bytes the stored attempt sent, when asked for (``hash_sent``).
    sha256: str | None = None


def _answer_fits(obj: FileObject, local: LocalFile) -> None:
    """A 200 answer must name the stored file; else it is malformed (and its copy unknown).
    Its size is checked once it is owned (:func:`_size_lie`): the id came in our answer."""
    if not obj.id.strip():
        raise MalformedResponseError(
            f"{os.fsdecode(local.path)}: the server answered the upload with a file object "
            "that has no id; looking for the stored copy", status_code=200, body=obj.to_dict())


def _size_lie(obj: FileObject, local: LocalFile) -> MalformedResponseError | None:
    """The error for a 200 answer whose size disagrees with the bytes sent (its copy, ours
    by its id, is deleted by the caller), or None when the sizes agree."""
    if obj.bytes == local.size:
        return None
    return MalformedResponseError(
        f"{os.fsdecode(local.path)}: the server answered the upload with a file object that "
        f"has {obj.bytes:,} bytes where {local.size:,} were sent; the copy it stored "
        f"({obj.id}) was deleted", status_code=200, body=obj.to_dict())


def _unfit_copy(local: LocalFile, obj: FileObject) -> Steps[KimiError | None]:
    """A stored attempt that is ours (its id came in our answer) but unfit to keep: its size
    is not what was sent, or its extraction failed. Deleted; the error to retry (None: a
    good copy, kept)."""
    error: KimiError | None = _size_lie(obj, local)
    if error is None and obj.failed:
        error = ExtractionFailedError(
            f"{os.fsdecode(local.path)}: the server stored the file as {obj.id} but extraction "
            f"failed ({obj.status_details or obj.status}); deleted it",
            status_code=200, type="file_status_failed")
    if error is not None:
        yield from delete_steps(obj.id)
    return error


def _may_store_later(error: KimiError) -> bool:
    """An answer lost in transit, or a gateway's: the server may still be working on it."""
    return isinstance(error, (APIConnectionError, GatewayError))


def send_steps(
    client: ClientLike,
    local: LocalFile,
    *,
    purpose: str,
    claims: Claims,
    policy: RetryPolicy | None = None,
    on_read: Callable[[bytes], None] | None = None,
    on_rewind: Callable[[int], None] | None = None,
    on_begin: Callable[[int | None], None] | None = None,
    stop: threading.Event | None = None,
    ghosts: Mapping[int, Attempt] | None = None,
    sha256: str | None = None,
    hash_sent: bool = False,
) -> Steps[Sent]:
    """Upload ``local`` with the platform's retry rules; see the module docstring.

    ``on_begin(since)`` is called once (as blocking work, off an event loop), right before the
    first byte is sent, with the server's time then (a lower bound, Unix seconds; None if
    never seen, or when the server's clocks disagree): the batch records its intent there.
    ``ghosts``: interrupted uploads on record that could own a stored copy too (never
    adopted for this one). ``sha256``: the
    content's hash as taken before; the bytes sent are hashed again and must agree (a file
    rewritten since, even with its mtime put back, fails and its copy is deleted).
    ``hash_sent``: hash the bytes as they are sent, for :attr:`Sent.sha256`.

    Raises:
        KimiError: the last error, when the upload cannot be completed;
            :class:`UploadCancelledError` when ``stop`` was set.
    """
    shown = os.fsdecode(local.path)
    fh: IO[bytes] = yield Open(local.path)
    before: FileStat = yield Stat(fh)
    _check_unchanged(local, before.seen)
    lost = _Reconciler(client, Attempt(local.filename, local.size, purpose,
                                       client.clock.since()),
                       claims, shown, stop, ghosts or {})
    check = _Recheck(sha256, hash_sent)
    body = FileBody(fh, local.size, shown, check.reader(on_read),
                    check.rewinder(on_rewind, lambda: lost.attempts))
    try:
        sent = yield from closing(fh, _attempts(
            client, local, body, fh, before, lost, check, purpose=purpose,
            policy=policy or client.retry_policy, on_begin=on_begin, stop=stop))
    except BaseException:
        lost.registry.finish(lost.token)
        # a copy may be on the server (a lost answer, or a request cut off in flight by a
        # cancellation or Ctrl-C): the attempt stays registered as a possible owner
        if not (lost.maybe_stored or lost.in_flight):
            lost.registry.settle(lost.token)
        raise
    finally:
        check.close()
    lost.registry.finish(lost.token)
    if sent.settled:
        lost.registry.settle(lost.token)
    suspects = yield from _without_siblings(lost, sent.suspects, stop)
    return dataclasses.replace(sent, suspects=suspects)


def _attempts(client: ClientLike, local: LocalFile, body: FileBody, fh: IO[bytes],
              before: FileStat, lost: _Reconciler, check: _Recheck, *,
              purpose: str, policy: RetryPolicy,
              on_begin: Callable[[int | None], None] | None,
              stop: threading.Event | None) -> Steps[Sent]:
    """The attempts of :func:`send_steps`, until one is stored or the retries run out."""
    started: float = yield Now()
    shown = lost.shown

    def sent(obj: FileObject, attempts: int, adopted: bool) -> Sent:
        return Sent(obj, attempts, adopted, tuple(lost.suspects.values()),
                    settled=not lost.unresolved,
                    sha256=None if adopted else (check.expected or check.sent(local.size)))

    if on_begin is not None:
        yield Blocking(on_begin, (lost.attempt.since,))
    while True:
        if stop is not None and stop.is_set():
            raise UploadCancelledError(f"{shown}: cancelled before it was uploaded")
        lost.attempts += 1
        if lost.pending is not None:
            adopted = yield from lost.look(relist=_may_store_later(lost.pending))
            if adopted is not None:
                return sent(adopted, lost.attempts - 1, True)
            lost.unresolved, lost.pending = True, None
        yield from _unchanged_steps(local)
        error: KimiError
        try:
            lost.in_flight = True
            obj: FileObject = yield CreateFile(body, local.filename, purpose, local.mime_type)
            lost.in_flight = False
            _answer_fits(obj, local)
        except KimiError as exc:
            lost.in_flight = False
            error = exc
            if _retry.may_have_stored(exc):
                lost.pending = exc
        else:
            yield from _own_unchanged(client, local, fh, before, lost, check, obj)
            unfit = yield from _unfit_copy(local, obj)
            if unfit is None:
                if lost.unresolved:
                    yield from lost.late_twins()
                return sent(obj, lost.attempts, False)
            error = unfit
        wait = _retry.retry_wait(error, lost.attempts, policy)
        now: float = yield Now()
        if not (_retry.should_retry(error) and _retry.attempts_left(
                lost.attempts, started, wait, policy, now, error=error)):
            return sent((yield from _adopted_or_raise(lost, error)), lost.attempts, True)
        yield Say.info("%s: attempt %d failed (%s); retrying in %.1fs", shown, lost.attempts,
                       error, wait)
        if not (yield Wait(wait, error=error, attempt=lost.attempts, stop=stop,
                           left=_retry.remaining(started, policy, now), what=shown)):
            raise UploadCancelledError(f"{shown}: cancelled while waiting to retry") from error


def _own_unchanged(client: ClientLike, local: LocalFile, fh: IO[bytes],
                   before: FileStat, lost: _Reconciler, check: _Recheck,
                   obj: FileObject) -> Steps[None]:
    """A stored attempt of :func:`_attempts`: its file is ours (its id came in our answer);
    kept only when the file sent is the one checked, else deleted (and the upload fails)."""
    shown = lost.shown
    lost.registry.own(obj.id)
    lost.claims.add(obj.id)
    apart = client.clock.observe_stored(obj.created_at, lost.attempt.since)
    if apart is not None:  # said once: it costs an extra copy after a lost answer
        yield Say.warning(
            "the server's clock disagrees with itself: %s stored at created_at %d, "
            "%s its Date headers allow (by about %ds); no copy is adopted by time "
            "from now on: after a lost answer or a crash the file is sent again and "
            "what may be its copy is reported", obj.id, obj.created_at,
            "later than" if apart > 0 else "earlier than", abs(apart))
    if ((yield Stat(fh)) != before or (yield from _path_changed(local, before))
            or (check.digest is not None and (yield Blocking(check.differs)))):
        # ours (its id came in our answer), and not what was checked: remove it
        yield from delete_steps(obj.id)
        raise LocalFileError(
            f"{shown}: the file changed while it was sent (or since it was hashed); "
            f"the copy the server stored ({obj.id}) was deleted. Upload it again once "
            "it is complete", path=shown, rule="unchanged")


def _adopted_or_raise(lost: _Reconciler, error: KimiError) -> Steps[FileObject]:
    """No retry is left: the copy a lost answer stored, when proven ours; else ``error``."""
    if lost.pending is not None:
        adopted = yield from lost.look(relist=_may_store_later(lost.pending))
        if adopted is not None:
            return adopted
    raise error


def _path_changed(local: LocalFile, before: FileStat) -> Steps[bool]:
    """Was the path replaced (or rewritten in place) while it was sent?"""
    try:
        now: FileStat = yield Stat(local.path)
    except OSError:
        return True
    return now != before


def upload_steps(client: ClientLike, path: str | os.PathLike[str], options: UploadOptions,
                 sha256: str | None = None) -> Steps[UploadedFile]:
    """Check ``path``, hand back the account's copy of the same content when there is one
    (``reuse``), else free room if asked and send it (:func:`send_steps`) with a progress
    bar; every upload is recorded in the reuse cache. ``sha256``: the content's hash, when
    the caller took it already."""
    local, listing = yield from _checked(client, path, options)
    for warning in local.warnings:
        yield Say.warning("%s", warning)
    cache = (yield Blocking(client.reuse_cache)) if options.reuse else None
    if cache is not None:
        hit = yield from _reusable(cache, local, listing, options.purpose, sha256)
        if hit is not None:
            sha256, found = hit
            yield Blocking(cache.note_reused, (found.id,))  # --replace keeps it from now on
            yield Say.info("%s: the account holds this content as %s (%s); reused",
                           os.fsdecode(local.path), found.id, found.filename)
            return UploadedFile.of(found, path=os.fsdecode(local.path), attempts=0,
                                   mime_type=local.mime_type, warnings=local.warnings,
                                   reused=True, sha256=sha256)
    plan = plan_room(listing, 1, local.size, client.limits, options.free_quota,
                     what=os.fsdecode(local.path))
    claims = Claims(f.id for f in listing)
    listing = ()  # the ids are all it needs from here: many uploads at once hold no listing
    deleted = yield from free_room_steps(plan, what=local.filename)
    policy = client.retry_policy.with_retries(options.max_retries)
    bar: ProgressBar = yield Progress(local.size, short_label(local.filename),
                                      options.progress)
    sent = yield from closing(bar, send_steps(
        client, local, purpose=options.purpose, claims=claims, policy=policy,
        on_read=lambda chunk: bar.advance(len(chunk)),  # called by the driver, as it sends
        on_rewind=lambda n: bar.rewind(f"retry {n}"),
        sha256=sha256, hash_sent=cache is not None,
    ))
    if cache is not None and sent.sha256 is not None:
        yield Blocking(cache.remember, (sent.sha256, options.purpose, sent.file.id,
                                        sent.file.filename, local.size))
    return UploadedFile.of(
        sent.file, path=os.fsdecode(local.path), attempts=sent.attempts, adopted=sent.adopted,
        deleted=tuple(deleted), mime_type=local.mime_type, warnings=local.warnings,
        suspects=sent.suspects, sha256=sent.sha256,
    )


#: Files up to this size are hashed at once to look for a copy to reuse; larger ones only when
#: the cache holds a listed file of their very size.
HASH_AT_ONCE = 1024 * 1024


def _reusable(cache: ReuseCache, local: LocalFile, listing: Sequence[FileObject], purpose: str,
              sha256: str | None) -> Steps[tuple[str, FileObject] | None]:
    """The account's copy of this content (its hash, the file), if the cache knows one that
    is still listed with this size and purpose."""
    if sha256 is None and local.size > HASH_AT_ONCE:
        same_size = yield Blocking(cache.ids_of_size, (local.size, purpose))
        if not same_size & {f.id for f in listing}:
            return None  # nothing of this size to reuse: the hash is taken while sending
    if sha256 is None:
        sha256 = yield Blocking(sha256_of, (local.path,))
    entries = yield Blocking(cache.lookup, (sha256, purpose))
    hit = pick(entries, listing, size=local.size, purpose=purpose)
    return None if hit is None else (sha256, hit[1])


def content_steps_for(client: ClientLike, path: str | os.PathLike[str],
                      options: UploadOptions) -> Steps[tuple[FileContent, UploadedFile | None]]:
    """The content document of a local file: from the reuse cache when this content was
    extracted before (no request at all), else uploaded (or reused) and fetched, and then
    cached. The upload is None when the text came from the cache.

    Only the platform's JSON document with a string ``content`` is cached or taken from the
    cache (anything else was a malformed answer, retried by the content call); a ``batch``
    file's content is its JSONL as stored, fetched raw and never cached."""
    raw = options.purpose == "batch"
    cache = (yield Blocking(client.reuse_cache)) if options.reuse else None
    sha256 = None
    if cache is not None:
        sha256 = yield Blocking(_hash_if_readable, (path,))
        if sha256 is not None and not raw:
            body = yield Blocking(cache.text, (sha256,))
            cached = FileContent.from_document(body) if body is not None else None
            if cached is not None:  # this very content was read before: no request at all
                return cached, None
    uploaded = yield from upload_steps(client, path, options, sha256)
    content: FileContent = yield GetContent(uploaded.id, raw=raw, name=uploaded.stored_as,
                                            max_retries=options.max_retries)
    digest = sha256 or uploaded.sha256
    if cache is not None and digest is not None and content.document is not None and not raw:
        yield Blocking(cache.remember_text, (digest, uploaded.id, content.raw or content.text))
    return content, uploaded


def _hash_if_readable(path: str | os.PathLike[str]) -> str | None:
    """The content's hash, or None when the path is no readable regular file (the checks of
    the upload then say why, in their own words)."""
    try:
        if not os.path.isfile(path):
            return None
        return sha256_of(Path(path))
    except OSError:
        return None


def extract_steps(client: ClientLike, path: str | os.PathLike[str] | None, file_id: str | None,
                  options: UploadOptions) -> Steps[str]:
    """The extracted text of a local file (uploaded first, or reused, or from the cache) or of
    an uploaded file's id.

    Raises:
        ConfigurationError: not exactly one of ``path`` and ``file_id`` was given.
    """
    if file_id is not None and path is None:
        fetched: FileContent = yield GetContent(file_id)
        return fetched.text
    if path is None or file_id is not None:
        raise ConfigurationError("extract() takes a path, or file_id=..., and not both")
    content, _ = yield from content_steps_for(client, path, options)
    return content.text
