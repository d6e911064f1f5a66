"""An upload's request body: the file streamed from disk, framed, read ahead, hashed beside.

:class:`FileBody` reads an open file of a known size (and fails when it grows or shrinks),
:class:`MultipartBody` frames it as the upload's ``multipart/form-data`` request,
:class:`ReadAhead` reads it ahead of an async sending on a worker thread, and
:class:`PieceDigest` hashes the pieces beside the sending (``_Recheck``: the bytes of each
attempt, compared with a hash taken before). Used by :mod:`kimi_files._uploader`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, TYPE_CHECKING, Protocol

from ._adoption import wire_name
from .errors import LocalFileError

if TYPE_CHECKING:
    import asyncio
    import queue


__all__ = ["PIECE_BYTES", "QUEUED_PIECES", "READ_AHEAD", "FileBody", "MultipartBody",
           "PieceDigest", "ReadAhead"]

#: The file goes out in pieces of this size: one trip through httpx, httpcore and h11 per
#: MiB instead of per 64 KiB, and at most a few MiB in memory per upload.
PIECE_BYTES = 1024 * 1024


class FileBody:
    """A read-only view of an open file of a known size, for an upload to stream.

    The client sends it as a :class:`MultipartBody`, which reads it in :data:`PIECE_BYTES`
    pieces from its start on every attempt (the rewind before every attempt).
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
        if whence == os.SEEK_SET and offset == self._pos:
            return self._pos
        if whence != os.SEEK_SET or offset != 0:
            raise OSError("FileBody only rewinds to the start")
        self._fh.seek(0)
        had_read, self._pos = self._pos, 0
        if had_read and self._on_rewind:
            self._on_rewind()
        return 0

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
              hand: Callable[[bytes | Exception | None], None],
              loop: asyncio.AbstractEventLoop) -> None:
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


class _Digest(Protocol):
    """A hashlib hash object, as far as :class:`PieceDigest`'s thread uses it."""

    def update(self, data: bytes, /) -> None: ...


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
    def _work(digest: _Digest, pieces: queue.Queue[bytes | None]) -> None:
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
                 attempt: Callable[[], int]) -> Callable[[], None]:
        """What a rewind of the body does: forget what was hashed of it, and tell
        ``on_rewind`` the number of the attempt about to be sent (``attempt()``)."""
        def rewound() -> None:
            if self.digest is not None:
                self.digest.reset()
                self.seen = 0
            if on_rewind is not None:
                on_rewind(attempt())

        return rewound

    def differs(self) -> bool:
        return (self.expected is not None and self.digest is not None
                and self.digest.hexdigest() != self.expected)

    def close(self) -> None:
        if self.digest is not None:
            self.digest.close()
