"""Uploading one file: preflight, room, a streamed request, safe retries, never the wrong file.

:func:`send_steps` is the retry loop every upload goes through (the batch too, sync and async
alike: see :mod:`kimi_files._steps`). Its rules:

* the file is streamed from disk in chunks (constant memory) and rewound before every attempt;
  a file that changes while it is sent (size, or a same-size rewrite seen in its mtime or
  ctime) fails, and the copy the server stored of it is deleted (its id came in our answer);
* an error is retried only when :func:`kimi_files.retry.should_retry` says so, after the wait
  :func:`kimi_files.retry.retry_wait` gives; attempts and total time are bounded;
* after an attempt that may have been stored although its answer was lost (a reset, a
  timeout, a 5xx, a malformed 200), the account is listed (again, after short pauses, when the
  server may still be working on it) and the copy is adopted only when
  :func:`kimi_files.adoption.resolve` proves it ours; otherwise the file is sent again, and
  whatever may be an extra copy of ours is reported in ``suspects``, never deleted;
* a stored file whose status says extraction failed (in our own answer) is deleted, then the
  upload is retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import retry as _retry
from ._hashing import sha256_of
from ._steps import Blocking, ClientLike, CreateFile, DeleteFile, GetContent, ListFiles, Steps, Wait
from .adoption import Attempt, Verdict, could_be_loosely, resolve, wire_name
from .cache import ReuseCache, pick
from .config import RetryPolicy
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
from .models import FileContent, FileList, FileObject, UploadedFile
from .options import UploadOptions
from .preflight import LocalFile, inspect_file
from .progress import ProgressBar, short_label
from .quota import RoomPlan, fmt_bytes, fmt_time, plan_room

if TYPE_CHECKING:
    import queue

__all__ = ["PIECE_BYTES", "READ_AHEAD", "Claims", "FileBody", "MultipartBody", "PieceDigest",
           "Preflight", "ReadAhead", "Sent",
           "delete_steps", "extract_steps", "free_room_steps", "preflight_steps", "send_steps",
           "upload_steps"]

#: Pauses between the listings that look for the copy of an attempt whose answer was lost in
#: transit (a time-out, a dropped connection, a gateway error): the server may still be
#: extracting it, and stores it only then.
RELIST_WAITS = (1.0, 2.0, 4.0)

log = logging.getLogger("kimi_files")


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



# --- the streamed body ------------------------------------------------------------------------


#: The file goes out in pieces of this size: one trip through httpx, httpcore and h11 per
#: MiB instead of per 64 KiB, and at most a few MiB in memory per upload.
PIECE_BYTES = 1024 * 1024


class FileBody:
    """A read-only view of an open file of a known size, for an upload to stream.

    The client sends it as a :class:`MultipartBody`, which reads it in :data:`PIECE_BYTES`
    pieces from its start on every attempt (the rewind before every attempt); as a plain file
    object (``read``/``seek``), httpx reads 64 KiB chunks and seeks to 0 before each send.
    ``on_read`` sees every chunk sent (progress, hashing), ``on_rewind`` each
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

    @property
    def size(self) -> int:
        return self._size

    def pieces(self, size: int = PIECE_BYTES) -> Iterator[bytes]:
        """Rewind, then the file in pieces of ``size`` bytes (the last one shorter), each read
        and checked as :meth:`read` does (``on_read`` sees each; a file that grew or shrank
        raises). Every iteration re-reads the file from its start."""
        self.seek(0)
        while chunk := self.read(size):
            yield chunk

    def multipart(self, *, filename: str, purpose: str, content_type: str) -> MultipartBody:
        """The whole upload request body for this file: see :class:`MultipartBody`."""
        return MultipartBody(self, filename=filename, purpose=purpose, content_type=content_type)


class MultipartBody:
    """The upload's ``multipart/form-data`` body, framed as httpx frames it (the ``purpose``
    field, then the file part), with the framing built once.

    An iterable of bytes (httpx sends each item as it comes): each iteration rewinds the file
    (:meth:`FileBody.pieces`) and yields the framing's head, the file in
    :data:`PIECE_BYTES` pieces and the tail; a file of one piece goes out as one buffer.
    ``headers`` hold the Content-Type (with the boundary) and the exact Content-Length. The
    async iteration reads off the event loop: a file of one piece in one hop to a thread, a
    larger one on a worker thread that reads ahead of the sending (:class:`ReadAhead`)."""

    def __init__(self, body: FileBody, *, filename: str, purpose: str,
                 content_type: str) -> None:
        boundary = os.urandom(16).hex()
        self._body = body
        self._head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f'filename="{wire_name(filename)}"\r\nContent-Type: {content_type}'
            "\r\n\r\n").encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self.headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(self._head) + body.size + len(self._tail)),
        }

    def __iter__(self) -> Iterator[bytes]:
        pieces = self._body.pieces()
        first = next(pieces, b"")
        if len(first) == self._body.size:
            next(pieces, None)  # one piece: its end is checked (the file did not grow)
            yield self._head + first + self._tail
            return
        yield self._head
        yield first
        yield from pieces
        yield self._tail

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._body.size > PIECE_BYTES:
            return ReadAhead(iter(self))
        return self._at_once()

    async def _at_once(self) -> AsyncIterator[bytes]:
        """A file of one piece: the whole body read in one hop to a thread."""
        import asyncio

        for piece in await asyncio.to_thread(list, iter(self)):
            yield piece


#: Pieces an async upload reads ahead of the sending, at most: the one httpx is sending
#: included (memory: this many MiB).
READ_AHEAD = 2


class ReadAhead:
    """The pieces of a (blocking) iterator, for an event loop: one worker thread reads them
    at most ``depth`` pieces ahead of the consumer, so the disk read (and everything the
    iterator does per piece: the unchanged-file checks, progress, hashing) overlaps the send,
    and the loop never waits for a thread when the next piece is already read.

    A piece counts against ``depth`` from its read until the consumer asks for the one after
    it. An exception of the iterator is raised to the consumer in its place. :meth:`aclose`
    (the async client calls it after every request, whatever happened: an answer, an error,
    a cancellation) stops the worker, waiting for the read it may be in (one piece at most),
    so the file can be closed once it returns. A reader dropped without it (or whose loop
    closed) stops its worker all the same, once its read is done; the worker holds no
    reference to the reader.
    """

    def __init__(self, pieces: Iterator[bytes], depth: int = READ_AHEAD) -> None:
        import asyncio

        self._pieces = pieces
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._ready: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
        self._thread: threading.Thread | None = None
        self._holding = False  # the consumer holds a piece: its room is freed at the next ask
        self._ended = False

    def __aiter__(self) -> ReadAhead:
        return self

    async def __anext__(self) -> bytes:
        import asyncio

        if self._ended:
            raise StopAsyncIteration
        if self._thread is None:
            self._thread = threading.Thread(
                target=ReadAhead._work, name="kimi-read", daemon=True,
                args=(self._pieces, self._room, self._stop, self._ready.put_nowait,
                      asyncio.get_running_loop()))
            self._thread.start()
        if self._holding:
            self._holding = False
            self._room.release()
        item = await self._ready.get()
        if item is None or isinstance(item, Exception):
            self.close()
            if item is None:
                raise StopAsyncIteration
            raise item
        self._holding = True
        return item

    @staticmethod
    def _work(pieces: Iterator[bytes], room: threading.Semaphore, stop: threading.Event,
              hand: Callable[[bytes | Exception | None], None], loop: Any) -> None:
        while True:
            room.acquire()
            if stop.is_set():
                return
            item: bytes | Exception | None
            try:
                item = next(pieces, None)
            except Exception as exc:  # the consumer raises it
                item = exc
            try:
                loop.call_soon_threadsafe(hand, item)
            except RuntimeError:  # the loop is closed: nobody is waiting
                return
            if not isinstance(item, bytes):
                return

    def close(self) -> None:
        """Stop the worker (after the read it may be in) and close the iterator."""
        self._ended = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._room.release()  # a worker waiting for room wakes, and sees the stop
            thread.join()
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """:meth:`close`, for ``aclosing`` and the async client."""
        self.close()

    def __del__(self) -> None:
        if self._thread is not None:  # dropped unclosed: let the worker end (no join here)
            self._stop.set()
            self._room.release()


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


def _check_unchanged(local: LocalFile, now: tuple[int, int] | None = None) -> None:
    """The file still has the size and mtime the preflight saw (``now``: its size and mtime,
    when already known; else the path is looked at)."""
    if now is None:
        try:
            st = os.stat(local.path)
        except OSError as exc:
            raise LocalFileError(f"{local.path}: gone since the preflight ({exc.strerror})",
                                 path=str(local.path), rule="exists") from None
        now = (st.st_size, st.st_mtime_ns)
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
        log.warning("deleted %s (%s, %s, made %s) to make room for %s", victim.id,
                    victim.filename, fmt_bytes(victim.bytes), fmt_time(victim.created_at), what)
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


def _may_store_later(error: KimiError) -> bool:
    """An answer lost in transit, or a gateway's: the server may still be working on it."""
    return isinstance(error, (APIConnectionError, GatewayError))


def _file_stat(fh: IO[bytes]) -> tuple[int, int, int]:
    st = os.fstat(fh.fileno())
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Reconciler:
    """Looks for the copy a lost attempt stored and adopts it only when it is provably ours:
    every other attempt that could own it (the client's other uploads in flight or never
    identified, and ``ghosts``: interrupted uploads on record) is counted against it."""

    def __init__(self, client: ClientLike, attempt: Attempt, claims: Claims, shown: str,
                 stop: threading.Event | None, ghosts: Mapping[Any, Attempt]) -> None:
        self.registry = client.attempts
        self.clock = client.clock
        self.token = self.registry.open(attempt, client.clock.now())
        self.attempt = attempt
        self.claims = claims
        self.shown = shown
        self.stop = stop
        self.ghosts = ghosts
        self.suspects: dict[str, FileObject] = {}
        self.attempts = 0  # attempts made
        #: the error of an attempt whose answer was lost: its copy may be on the server
        self.pending: KimiError | None = None
        #: an attempt lost its answer and its copy was never identified
        self.unresolved = False
        #: a request is being sent (a cancellation now may leave a copy on the server)
        self.in_flight = False

    @property
    def maybe_stored(self) -> bool:
        """May a copy of this upload be on the server (or land there) unaccounted for?"""
        return self.unresolved or self.pending is not None

    def _verdict(self, listing: Sequence[FileObject]) -> Verdict:
        owners: dict[Any, Attempt] = {("ghost", k): a for k, a in self.ghosts.items()}
        owners.update({("other", k): a for k, a in self.registry.others(self.token).items()})
        # clocks found to disagree since the attempt began: its start proves nothing
        owners[self] = (self.attempt if self.clock.agrees is not False
                        else dataclasses.replace(self.attempt, since=None))
        claimed = self.claims.snapshot() | self.registry.claimed()
        return resolve(owners, listing, claimed)[self]

    def claim(self, file_id: str) -> bool:
        """Claim a file for this upload (client-wide and in this run's claims)."""
        if not self.registry.claim(file_id):
            return False
        self.claims.add(file_id)
        return True

    def look(self, *, relist: bool) -> Steps[FileObject | None]:
        """List the account (again after short pauses when ``relist``); the adopted file."""
        for looks, pause in enumerate((0.0, *(RELIST_WAITS if relist else ()))):
            if looks == 1:  # said once, before the first pause: it costs the user time
                log.warning("%s: looking for the copy a lost answer may have stored: listing "
                            "again for up to %g s", self.shown, sum(RELIST_WAITS))
            if pause and not (yield Wait(pause, stop=self.stop)):
                raise UploadCancelledError(f"{self.shown}: cancelled while looking for the "
                                           "copy a lost answer may have stored")
            listing: FileList = yield ListFiles()
            verdict = self._verdict(listing.data)
            if verdict.adopted is not None and self.claim(verdict.adopted.id):
                log.info("%s: the answer was lost but the server stored it as %s; adopted",
                         self.shown, verdict.adopted.id)
                return verdict.adopted
            if verdict.suspects:
                self.suspect(verdict.suspects)
                return None  # ambiguous: upload again; waiting longer proves nothing more
        return None

    def suspect(self, files: Iterable[FileObject]) -> None:
        """Note files that may be copies of this upload: never adopted by it (they join its
        own claims), but not claimed client-wide, so that another upload of this client whose
        answer brings one of these ids still owns it, and it is not reported then."""
        owned = self.registry.owned()
        for f in files:
            if f.id not in self.suspects and f.id not in owned:
                self.claims.add(f.id)
                self.suspects[f.id] = f
                log.warning(
                    "%s: %s (%s, %d bytes, created_at %d) may be a copy an earlier attempt "
                    "stored, or someone else's file; it cannot be proven ours, so it is kept "
                    "and the file is uploaded again (remove it with: kimi-files delete %s)",
                    self.shown, f.id, f.filename, f.bytes, f.created_at, f.id)

    def late_twins(self) -> Steps[None]:
        """After the upload succeeded: report copies an earlier lost attempt stored late."""
        listing: FileList = yield ListFiles()
        verdict = self._verdict(listing.data)
        self.suspect(c for c in (verdict.adopted, *verdict.suspects) if c is not None)


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
    ghosts: Mapping[Any, Attempt] | None = None,
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
    # opening is a metadata call, shorter than the chunk reads that follow on the same thread
    # (under asyncio, the loop's): not worth a hop to a worker thread
    with open(local.path, "rb") as fh:
        before = _file_stat(fh)
        _check_unchanged(local, before[:2])
        lost = _Reconciler(client, Attempt(local.filename, local.size, purpose,
                                           client.clock.since()),
                           claims, shown, stop, ghosts or {})
        check = _Recheck(sha256, hash_sent)
        body = FileBody(fh, local.size, shown, check.reader(on_read),
                        check.rewinder(on_rewind, lost))
        try:
            sent = yield from _attempts(client, local, body, fh, before, lost, check,
                                        purpose=purpose, policy=policy or client.retry_policy,
                                        on_begin=on_begin, stop=stop)
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


#: How long an upload waits, at most, for the client's other uploads still going to prove
#: their own the files it suspects, before it reports them.
SIBLING_PATIENCE = 10.0


def _without_siblings(lost: _Reconciler, suspects: tuple[FileObject, ...],
                      stop: threading.Event | None) -> Steps[tuple[FileObject, ...]]:
    """The suspects, less those another upload of this client proves its own (by its
    answer); while one that may still do so is running, wait for it (bounded)."""
    waited = 0.0
    while True:
        owned = lost.registry.owned()
        left = tuple(f for f in suspects if f.id not in owned)
        rivals = lost.registry.running_others(lost.token).values()
        undecided = [f for f in left if any(could_be_loosely(f, a) for a in rivals)]
        if not undecided or waited >= SIBLING_PATIENCE:
            return left
        if not (yield Wait(0.05, stop=stop, real=True)):
            return left
        waited += 0.05


class PieceDigest:
    """SHA-256 of an upload's pieces as they are sent, computed beside the sending.

    A file of one piece is hashed at once; the pieces of a larger file go to a thread of
    their own (``hashlib`` releases the GIL over large buffers, so hashing and sending
    overlap on two cores), at most :data:`QUEUED_PIECES` waiting. :meth:`reset` starts over
    (a rewind), :meth:`hexdigest` waits for the pieces given so far, :meth:`close` ends the
    thread (always call it)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, piece: bytes) -> None:
        if self._queue is None:
            if len(piece) < PIECE_BYTES:
                self._hash.update(piece)
                return
            import queue  # here: a file of one piece (the common case) never needs it

            self._queue = queue.Queue(QUEUED_PIECES)
            self._thread = threading.Thread(target=self._work, args=(self._hash, self._queue),
                                            name="kimi-hash", daemon=True)
            self._thread.start()
        self._queue.put(piece)

    @staticmethod
    def _work(digest: Any, pieces: queue.Queue[bytes | None]) -> None:
        while (piece := pieces.get()) is not None:
            digest.update(piece)

    def close(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._queue = self._thread = None

    def reset(self) -> None:
        self.close()
        self._hash = hashlib.sha256()

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


#: Pieces waiting for :class:`PieceDigest`'s thread at most (memory: this many MiB).
QUEUED_PIECES = 1


class _Recheck:
    """The bytes sent, hashed when a hash was taken before (to compare at the end) or when
    the caller wants the content's hash (``wanted``), over each attempt from its start
    (beside the sending: see :class:`PieceDigest`)."""

    def __init__(self, expected: str | None, wanted: bool = False) -> None:
        self.expected = expected
        self.digest = PieceDigest() if expected or wanted else None
        self.seen = 0

    def sent(self, size: int) -> str | None:
        """The hash of the last attempt's bytes, if it sent them all."""
        if self.digest is None or self.seen != size:
            return None
        return self.digest.hexdigest()

    def reader(self, on_read: Callable[[bytes], None] | None) -> Callable[[bytes], None] | None:
        digest = self.digest
        if digest is None:
            return on_read

        def read(chunk: bytes) -> None:
            digest.update(chunk)
            self.seen += len(chunk)
            if on_read is not None:
                on_read(chunk)

        return read

    def rewinder(self, on_rewind: Callable[[int], None] | None,
                 lost: _Reconciler) -> Callable[[], None]:
        def rewound() -> None:
            if self.digest is not None:
                self.digest.reset()
                self.seen = 0
            if on_rewind is not None:
                on_rewind(lost.attempts)

        return rewound

    def differs(self) -> bool:
        return (self.expected is not None and self.digest is not None
                and self.digest.hexdigest() != self.expected)

    def close(self) -> None:
        if self.digest is not None:
            self.digest.close()


def _attempts(client: ClientLike, local: LocalFile, body: FileBody, fh: IO[bytes],
              before: tuple[int, int, int], lost: _Reconciler, check: _Recheck, *,
              purpose: str, policy: RetryPolicy,
              on_begin: Callable[[int | None], None] | None,
              stop: threading.Event | None) -> Steps[Sent]:
    """The attempts of :func:`send_steps`, until one is stored or the retries run out."""
    started = time.monotonic()
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
        _check_unchanged(local)
        error: KimiError
        try:
            lost.in_flight = True
            obj: FileObject = yield CreateFile(body, local.filename, purpose,
                                                local.mime_type)
            lost.in_flight = False
            _answer_fits(obj, local)
        except KimiError as exc:
            lost.in_flight = False
            error = exc
            if _retry.may_have_stored(exc):
                lost.pending = exc
        else:
            lost.registry.own(obj.id)
            lost.claims.add(obj.id)
            apart = client.clock.observe_stored(obj.created_at, lost.attempt.since)
            if apart is not None:  # said once: it costs an extra copy after a lost answer
                log.warning(
                    "the server's clock disagrees with itself: %s stored at created_at %d, "
                    "%s its Date headers allow (by about %ds); no copy is adopted by time "
                    "from now on: after a lost answer or a crash the file is sent again and "
                    "what may be its copy is reported", obj.id, obj.created_at,
                    "later than" if apart > 0 else "earlier than", abs(apart))
            if (_file_stat(fh) != before or _path_changed(local, before)
                    or (check.digest is not None and (yield Blocking(check.differs)))):
                # ours (its id came in our answer), and not what was checked: remove it
                yield from delete_steps(obj.id)
                raise LocalFileError(
                    f"{shown}: the file changed while it was sent (or since it was hashed); "
                    f"the copy the server stored ({obj.id}) was deleted. Upload it again once "
                    "it is complete", path=shown, rule="unchanged")
            lie = _size_lie(obj, local)
            if lie is not None:
                # ours (its id came in our answer), but its size is not what was sent
                yield from delete_steps(obj.id)
                error = lie
            elif not obj.failed:
                if lost.unresolved:
                    yield from lost.late_twins()
                return sent(obj, lost.attempts, False)
            else:
                # stored, but extraction failed: ours (its id came in our answer): remove it
                yield from delete_steps(obj.id)
                error = ExtractionFailedError(
                    f"{shown}: the server stored the file as {obj.id} but extraction failed "
                    f"({obj.status_details or obj.status}); deleted it",
                    status_code=200, type="file_status_failed")
        wait = _retry.retry_wait(error, lost.attempts, policy)
        now = time.monotonic()
        if not (_retry.should_retry(error) and _retry.attempts_left(
                lost.attempts, started, wait, policy, now, error=error)):
            if lost.pending is not None:
                adopted = yield from lost.look(relist=_may_store_later(lost.pending))
                if adopted is not None:
                    return sent(adopted, lost.attempts, True)
            raise error
        log.info("%s: attempt %d failed (%s); retrying in %.1fs", shown, lost.attempts, error,
                 wait)
        if not (yield Wait(wait, error=error, attempt=lost.attempts, stop=stop,
                           left=_retry.remaining(started, policy, now), what=shown)):
            raise UploadCancelledError(f"{shown}: cancelled while waiting to retry") from error


def _path_changed(local: LocalFile, before: tuple[int, int, int]) -> bool:
    """Was the path replaced (or rewritten in place) while it was sent?"""
    try:
        st = os.stat(local.path)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != before


def upload_steps(client: ClientLike, path: str | os.PathLike[str], options: UploadOptions,
                 sha256: str | None = None) -> Steps[UploadedFile]:
    """Check ``path``, hand back the account's copy of the same content when there is one
    (``reuse``), else free room if asked and send it (:func:`send_steps`) with a progress
    bar; every upload is recorded in the reuse cache. ``sha256``: the content's hash, when
    the caller took it already."""
    local, listing = yield from _checked(client, path, options)
    for warning in local.warnings:
        log.warning("%s", warning)
    cache = (yield Blocking(client.reuse_cache)) if options.reuse else None
    if cache is not None:
        hit = yield from _reusable(cache, local, listing, options.purpose, sha256)
        if hit is not None:
            sha256, found = hit
            yield Blocking(cache.note_reused, (found.id,))  # --replace keeps it from now on
            log.info("%s: the account holds this content as %s (%s); reused",
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
    with ProgressBar(total=local.size, desc=short_label(local.filename),
                     enabled=options.progress) as bar:
        sent = yield from send_steps(
            client, local, purpose=options.purpose, claims=claims, policy=policy,
            on_read=lambda chunk: bar.advance(len(chunk)),
            on_rewind=lambda n: bar.rewind(f"retry {n}"),
            sha256=sha256, hash_sent=cache is not None,
        )
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
