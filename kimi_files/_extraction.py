"""Extracting a corpus of any size: a rolling upload → text → delete pipeline within the quota.

:func:`extract_many` (and :func:`aextract_many`, its asyncio twin on the same steps) takes
files and folders (walked as ``kimi-upload`` walks them) and yields one
:class:`ExtractResult` per document, in completion order, in constant memory:

* a document whose content was read before comes from the local text cache (no request);
* one the account already holds (the reuse cache, checked against the listing) is read from
  that file, which is never deleted;
* any other is uploaded (:func:`kimi_files._uploader.send_steps`: retries, lost answers
  adopted only when provably ours), its text fetched, saved in the text cache, and the file
  deleted (unless ``keep``). At most ``window`` of the run's files are on the server at once:
  by default what the account's free slots and bytes allow, never more
  (:mod:`kimi_files._extract_rules` decides).

Every file the run may store is recorded before its first byte is sent (the intent, in a
state store of its own per account: ``<state>.extract.sqlite3``), and with its id once
stored; the record goes when the file is deleted. A run killed at any moment leaves records
that the next run reads first: it deletes the files they prove its own (the id came in an
answer, or the adoption rules prove an interrupted attempt's copy) and reports, never
deletes, a file whose ownership cannot be proved. Closing the iterator early (or a stop)
starts nothing new and deletes what the run stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ._options import Paths, path_list
from ._state import StateStore
from .errors import (
    StateError,
)

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

    from ._client import AsyncKimiFiles, KimiFiles


from ._extract_models import (
    QUEUED_RESULTS,
    WINDOW_POLL,
    ExtractKwargs,
    ExtractOptions,
    ExtractResult,
    ExtractSummary,
    _open_state,
)
from ._extract_run import extract_steps

__all__ = ["AsyncExtraction", "ExtractKwargs", "ExtractOptions", "ExtractResult",
           "ExtractSummary", "Extraction", "aextract_many", "extract_many", "extract_steps"]

log = logging.getLogger("kimi_files")


# --- the iterators --------------------------------------------------------------------------------


class _Results:
    """The results between the run (a thread, or a task) and the caller: bounded, so the run
    pauses while the caller does not take them (constant memory)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[ExtractResult | _Outcome] = queue.Queue(QUEUED_RESULTS)
        self.closed = threading.Event()

    def offer(self, result: ExtractResult) -> bool:
        if self.closed.is_set():
            return True  # nobody takes results any more: dropped
        try:
            self.queue.put_nowait(result)
        except queue.Full:
            return False
        return True

    def finish(self, outcome: _Outcome) -> None:
        """The run's end (its summary or its error), after every result."""
        while not self.closed.is_set():
            try:
                self.queue.put(outcome, timeout=0.05)
                return
            except queue.Full:
                continue


@dataclass
class _Outcome:
    summary: ExtractSummary | None = None
    error: BaseException | None = None


class Extraction(Iterator[ExtractResult]):
    """The results of :func:`extract_many` as they come (an iterator, and a context
    manager). ``summary`` is set once the run ended. :meth:`close` (or leaving the ``with``
    block, or dropping it) stops the run: nothing new starts and what it stored is deleted.

    Raises (from ``next``):
        NotEnoughFileSlotsError: the account has no free slot at all (nothing was sent).
        StateError: the run's state cannot be used.
    """

    def __init__(self, client: KimiFiles, owned: bool, settings: ExtractOptions,
                 paths: Sequence[str | os.PathLike[str]]) -> None:
        self._client = client
        self._owned = owned
        self._settings = settings
        self._paths = paths
        self._results = _Results()
        self._stop = settings.stop or threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self.summary: ExtractSummary | None = None

    def _produce(self) -> None:
        outcome = _Outcome()
        store = None
        try:
            store = _open_state(self._settings.state, self._client, self._settings.wait)
            outcome.summary = self._client.run(extract_steps(
                self._client, store, self._settings, self._paths, self._stop,
                self._results.offer))
        except BaseException as exc:
            outcome.error = exc
        finally:
            if store is not None and not isinstance(self._settings.state, StateStore):
                with contextlib.suppress(StateError):
                    store.close()
            self._results.finish(outcome)

    def __iter__(self) -> Extraction:
        return self

    def __next__(self) -> ExtractResult:
        if self._ended:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="kimi-extract",
                                            daemon=True)
            self._thread.start()
        item = self._results.queue.get()
        if isinstance(item, _Outcome):
            self._end(item)
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def _end(self, outcome: _Outcome) -> None:
        self._ended = True
        self.summary = outcome.summary
        if self._thread is not None:
            self._thread.join()
        if self._owned:
            self._client.close()

    def close(self) -> None:
        """Stop the run (nothing new starts), delete what it stored, and wait for it."""
        if self._ended:
            return
        self._stop.set()
        if self._thread is None:
            self._ended = True
            if self._owned:
                self._client.close()
            return
        while True:
            item = self._results.queue.get()
            if isinstance(item, _Outcome):
                self._results.closed.set()
                self._end(item)
                return

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._ended and self._thread is not None:
                self.close()


class AsyncExtraction(AsyncIterator[ExtractResult]):
    """The results of :func:`aextract_many` as they come (``async for``; ``async with``).
    :meth:`aclose` stops the run and deletes what it stored. The run is a task on the
    caller's loop; its local work runs in threads."""

    def __init__(self, client: AsyncKimiFiles, owned: bool, settings: ExtractOptions,
                 paths: Sequence[str | os.PathLike[str]]) -> None:
        self._client = client
        self._owned = owned
        self._settings = settings
        self._paths = paths
        self._results = _Results()
        self._stop = settings.stop or threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self.summary: ExtractSummary | None = None

    async def _produce(self) -> None:
        import asyncio

        outcome = _Outcome()
        store = None
        try:
            store = await asyncio.to_thread(_open_state, self._settings.state, self._client,
                                            self._settings.wait)
            outcome.summary = await self._client.run(extract_steps(
                self._client, store, self._settings, self._paths, self._stop,
                self._results.offer))
        except BaseException as exc:
            outcome.error = exc
        finally:
            if store is not None and not isinstance(self._settings.state, StateStore):
                with contextlib.suppress(StateError):
                    await asyncio.to_thread(store.close)
            while not self._results.closed.is_set():
                try:
                    self._results.queue.put_nowait(outcome)
                    break
                except queue.Full:
                    await asyncio.sleep(WINDOW_POLL)

    def __aiter__(self) -> AsyncExtraction:
        return self

    async def _take(self) -> ExtractResult | _Outcome:
        import asyncio

        if self._task is None:
            self._task = asyncio.ensure_future(self._produce())
        while True:
            try:
                return self._results.queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(WINDOW_POLL)

    async def __anext__(self) -> ExtractResult:
        if self._ended:
            raise StopAsyncIteration
        item = await self._take()
        if isinstance(item, _Outcome):
            await self._end(item)
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def _end(self, outcome: _Outcome) -> None:
        self._ended = True
        self.summary = outcome.summary
        if self._task is not None:
            await self._task
        if self._owned:
            await self._client.aclose()

    async def aclose(self) -> None:
        """Stop the run (nothing new starts), delete what it stored, and wait for it."""
        if self._ended:
            return
        self._stop.set()
        if self._task is None:
            self._ended = True
            if self._owned:
                await self._client.aclose()
            return
        while True:
            item = await self._take()
            if isinstance(item, _Outcome):
                self._results.closed.set()
                await self._end(item)
                return

    async def __aenter__(self) -> AsyncExtraction:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def extract_many(paths: Paths, *, client: KimiFiles | None = None, api_key: str | None = None,
                 base_url: str | None = None,
                 **options: Unpack[ExtractKwargs]) -> Extraction:
    """The text of every document under ``paths``, one :class:`ExtractResult` each, in
    completion order, within the account's quota (see the module docstring).

    ``keep``: keep the stored files (default: each is deleted once its text is saved);
    ``window``: at most this many of the run's files on the server at once (default, and at
    most: the account's free slots); ``concurrency``: documents at once (default 4). The
    other options are :class:`ExtractKwargs`. Options are checked at once; the run starts
    with the first ``next``.

    Raises:
        ConfigurationError: an invalid option (at once).
        NotEnoughFileSlotsError: (from ``next``) the account has no free slot; nothing sent.
        StateError: (from ``next``) the run's state cannot be used.
    """
    from ._client import KimiFiles

    return Extraction(*_prepared(paths, client, KimiFiles, api_key, base_url, options))


def aextract_many(paths: Paths, *, client: AsyncKimiFiles | None = None,
                  api_key: str | None = None, base_url: str | None = None,
                  **options: Unpack[ExtractKwargs]) -> AsyncExtraction:
    """:func:`extract_many` for asyncio: ``async for result in aextract_many(...)``; the same
    steps, documents as tasks.

    Raises:
        KimiError: as :func:`extract_many`.
    """
    from ._client import AsyncKimiFiles

    return AsyncExtraction(*_prepared(paths, client, AsyncKimiFiles, api_key, base_url,
                                      options))


C = TypeVar("C", "KimiFiles", "AsyncKimiFiles")


def _prepared(paths: Paths, client: C | None, make: Callable[..., C], api_key: str | None,
              base_url: str | None, options: ExtractKwargs
              ) -> tuple[C, bool, ExtractOptions, list[str | os.PathLike[str]]]:
    """The client (made when none is given: then the run closes it), the options checked,
    the paths; the client's pacer bounded by the concurrency asked for."""
    settings = ExtractOptions.of(options)
    targets = path_list(paths)
    owned = client is None
    if client is None:
        client = make(api_key=api_key, base_url=base_url)
    if settings.concurrency is not None:
        client.pacer.restrict(settings.concurrency, None)
    return client, owned, settings, targets
