"""The extract pipeline as steps (one logic for both clients): see :mod:`kimi_files._extraction`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import _retry as _retry
from ._adoption import Attempt
from ._cache import ReuseCache, pick
from ._extract_rules import (
    Cleanup,
    Origin,
    admit,
    deletes_after_text,
    leftovers,
    no_room_message,
    status_of,
    window_for,
)
from ._hashing import sha256_of
from ._models import FileContent, FileList, FileObject
from ._preflight import LocalFile, inspect_file_head
from ._progress import ProgressBar
from ._quota import Usage, fmt_bytes
from ._scan import collect
from ._state import OpenAttempt, Record, StateStore
from ._steps import (
    Advance,
    Blocking,
    ClientLike,
    CreateFile,
    DeleteFile,
    GetContent,
    ListFiles,
    Now,
    Parallel,
    Progress,
    Request,
    Say,
    Steps,
    Wait,
    closing,
)
from ._uploader import Claims, delete_steps, send_steps
from .errors import (
    KimiError,
    LocalFileError,
    NotEnoughFileSlotsError,
    NotEnoughStorageError,
    NotFoundError,
    StateError,
    UploadCancelledError,
)

if TYPE_CHECKING:

    from ._steps import Action


from ._extract_models import (
    WINDOW_POLL,
    ExtractOptions,
    ExtractResult,
    ExtractSummary,
)

__all__ = ["extract_steps"]

T = TypeVar("T")


# --- the run, as steps (one logic for both clients) ---------------------------------------------


#: The actions that are API calls (for the summary's count).
_CALLS = (Request, ListFiles, CreateFile, DeleteFile, GetContent)


class _Window:
    """The run's files on the server now, against the window and the free bytes."""

    def __init__(self, window: int, free_bytes: int, releases: bool) -> None:
        self.window = window
        self.free_bytes = free_bytes
        self.releases = releases
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> str:
        with self._lock:
            verdict = admit(size, held_files=self.files, held_bytes=self.bytes,
                            window=self.window, free_bytes=self.free_bytes,
                            releases=self.releases)
            if verdict == "now":
                self.files += 1
                self.bytes += size
            return verdict

    def give_back(self, size: int, *, stays: bool = False) -> None:
        """A file of the run is gone from the server; or ``stays`` (its deletion failed):
        it no longer counts as the run's to release, and takes its room for good."""
        with self._lock:
            self.files -= 1
            self.bytes -= size
            if stays:
                self.window -= 1
                self.free_bytes -= size


class _Run:
    """One extract run: its settings, what it holds on the server, its results."""

    def __init__(self, client: ClientLike, store: StateStore | None, settings: ExtractOptions,
                 stop: threading.Event, sink: Callable[[ExtractResult], bool]) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.options = settings.upload
        self.purpose = settings.upload.purpose
        self.stop = stop
        self.sink = sink
        self.summary = ExtractSummary(counts={s: 0 for s in ("ok", "no_text", "refused",
                                                             "failed")})
        self.cache: ReuseCache | None = None
        self.listing: tuple[FileObject, ...] = ()
        self.claims = Claims()
        self.ghosts: dict[int, Attempt] = {}
        self.window: _Window | None = None
        self.usage: Usage | None = None
        #: files stored and not yet deleted: id -> (path, size)
        self.held: dict[str, tuple[str, int]] = {}
        #: every file a document of this run was read from (stored, adopted, reused)
        self.used: set[str] = set()
        self.bar: ProgressBar | None = None
        #: the state store broke: the run stops and raises it
        self.fatal: StateError | None = None
        self._todo: Iterator[Path] = iter(())
        self._lock = threading.Lock()

    def next_path(self) -> Path | None:
        with self._lock:
            return None if self.stop.is_set() else next(self._todo, None)

    def count(self, action: Action) -> None:
        """Count an API call (each retry inside it is not counted again)."""
        if not isinstance(action, _CALLS):
            return
        with self._lock:
            self.summary.calls += 1
            if isinstance(action, CreateFile):
                self.summary.uploads += 1
            elif isinstance(action, GetContent):
                self.summary.contents += 1

    def hold(self, file_id: str, path: str, size: int) -> None:
        with self._lock:
            self.held[file_id] = (path, size)
            self.used.add(file_id)

    def release(self, file_id: str) -> None:
        with self._lock:
            self.held.pop(file_id, None)

    def ended(self, result: ExtractResult) -> int:
        """Count ``result`` in the summary; the bytes of the documents ended so far."""
        with self._lock:
            self.summary.counts[result.status] = self.summary.counts.get(result.status, 0) + 1
            self.summary.bytes += result.bytes
            return self.summary.bytes


def _counted(steps: Steps[T], run: _Run) -> Steps[T]:
    """``steps`` as they are, with every API call counted."""
    result: object = None
    error: BaseException | None = None
    try:
        while True:
            try:
                action = steps.throw(error) if error is not None else steps.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            run.count(action)
            result, error = None, None
            try:
                result = yield action
            except Exception as exc:
                error = exc
    finally:
        steps.close()


def extract_steps(client: ClientLike, store: StateStore | None, settings: ExtractOptions,
                  paths: Sequence[str | os.PathLike[str]], stop: threading.Event,
                  sink: Callable[[ExtractResult], bool]) -> Steps[ExtractSummary]:
    """The whole run (see the module docstring), as steps for either client. ``sink(result)``
    takes each result as it ends, without blocking: False when it cannot take it yet.

    Run them without a driver's stop: ``stop`` is passed where the steps wait for their own
    work, and the deletions after a stop must not end with it (the driver's stop ends every
    wait for a turn, the pacer's included)."""
    run = _Run(client, store, settings, stop, sink)
    return (yield from _counted(_run_steps(run, paths), run))


def _run_steps(run: _Run, paths: Sequence[str | os.PathLike[str]]) -> Steps[ExtractSummary]:
    settings, summary = run.settings, run.summary
    started: float = yield Now()
    closed = False
    try:
        cache = (yield Blocking(run.client.reuse_cache)) if run.options.reuse else None
        run.cache = cache
        skip = [*(run.store.files if run.store is not None else ()),
                *(cache.files if cache is not None else ())]
        files, rejected = yield Blocking(functools.partial(
            collect, paths, include=settings.include, exclude=settings.exclude, skip=skip,
            follow_links=settings.follow_links))
        done = settings.skip
        for r in rejected:
            if r.path not in done and r.error is not None:
                yield from _emit(run, ExtractResult(r.path, status_of(r.error), error=r.error))
        todo = [p for p in files if os.fsdecode(p) not in done]
        records, ledger = yield Blocking(_read_state, (run.store,))
        if not todo and not records and not ledger:
            return summary  # nothing to do: not one request
        listing: FileList = yield ListFiles()
        yield from _clean_up(run, listing.data, records, ledger)
        if not todo:
            yield from _late_look(run)
            return summary
        yield from _open_window(run, todo)
        run.bar = yield Progress(len(todo), "documents", run.options.progress, unit="doc")
        workers = min(settings.workers, len(todo))
        yield from closing(run.bar, _workers(run, workers))
        if run.fatal is not None:
            raise run.fatal
        if run.stop.is_set():
            summary.interrupted = True
        else:
            yield from _late_look(run)
        return summary
    except GeneratorExit:  # closed where it waited (a cancelled task): nothing can be sent
        closed = True
        raise
    finally:
        if run.held and not closed:
            yield from _delete_held(run)
        summary.left = [*summary.left, *run.held]
        if not closed:
            summary.elapsed = (yield Now()) - started


def _workers(run: _Run, workers: int) -> Steps[None]:
    yield Parallel([_counted(_worker(run), run) for _ in range(workers)], workers)


def _open_window(run: _Run, todo: Sequence[Path]) -> list[Say]:
    """The run's window from the account's free slots and bytes; the lines that say it (and
    when it is small).

    Raises:
        NotEnoughFileSlotsError: not one free slot: nothing can be sent.
    """
    settings = run.settings
    usage = Usage.of(run.listing, run.client.limits)
    run.usage = usage
    window = window_for(usage, settings.window)
    run.summary.window = window
    if window == 0:
        raise NotEnoughFileSlotsError(no_room_message(usage, f"{len(todo):,} document(s)"),
                                      files_to_free=1)
    said = []
    if settings.window is not None and window < settings.window:
        said.append(Say.warning("window lowered from %d to %d: the account has %d free file "
                                "slot(s)", settings.window, window, usage.free_files))
    elif window < min(settings.workers, len(todo)):
        said.append(Say.warning("the account has %d free file slot(s) (it holds %d of %d): at "
                                "most %d document(s) at once", usage.free_files, usage.files,
                                usage.max_files, window))
    said.append(Say.info("extracting %d document(s), at most %d of this run's files on the "
                         "server at once", len(todo), window))
    run.window = _Window(window, usage.free_bytes, releases=not settings.keep)
    run._todo = iter(todo)
    return said


def _read_state(store: StateStore | None) -> tuple[list[Record], list[OpenAttempt]]:
    if store is None:
        return [], []
    return store.records(), store.attempts()


#: A request a killed run had in flight may land this long (seconds, by the server's clock)
#: after it began: a run's last look for such copies waits until then.
LATE_WAIT = 5


def _late_look(run: _Run) -> Steps[None]:
    """Look once more for what killed runs had in flight when this run began (a copy that
    lands after the first listing): delete it when provably theirs, as at the start."""
    if run.store is None or not run.ghosts:
        return
    records, ledger = yield Blocking(_read_state, (run.store,))
    held = {path for path, _ in run.held.values()}
    records = [r for r in records if r.path not in held]
    now = run.client.clock.now()
    starts = [a.server_time for a in ledger if a.server_time is not None]
    if now is not None and starts and max(starts) > now - LATE_WAIT:
        pause = LATE_WAIT - (now - max(starts))
        yield Say.warning("waiting %d s for uploads an interrupted run had in flight to land, "
                          "to delete them", pause)
        if not (yield Wait(pause, stop=run.stop)):
            return
    listing: FileList = yield ListFiles()
    yield from _clean_up(run, listing.data, records, ledger)


def _clean_up(run: _Run, listing: Sequence[FileObject], records: Sequence[Record],
              ledger: Sequence[OpenAttempt]) -> Steps[None]:
    """Delete what killed runs left and can be proven theirs; report the rest."""
    run.listing = tuple(listing)
    if not records and not ledger:
        run.claims = Claims(f.id for f in listing)
        return
    claimed: set[str] = set(run.used)  # the files this run holds, reused or kept
    if run.cache is not None:
        claimed.update(e.file_id for e in (yield Blocking(run.cache.entries)))
    wall_now: float = yield Now(wall=True)
    plan: Cleanup = leftovers(records, ledger, listing, claimed,
                              server_now=run.client.clock.now(), wall_now=wall_now)
    gone: set[str] = set()
    for f in plan.delete:
        try:
            yield from delete_steps(f.id)
        except KimiError as exc:
            yield Say.error("could not delete %s (%s), left by an interrupted run: %s", f.id,
                            f.filename, exc)
            run.summary.left.append(f.id)
            continue
        gone.add(f.id)
        yield Say.warning("deleted %s (%s, %d bytes), which an interrupted run stored", f.id,
                          f.filename, f.bytes)
    run.summary.cleaned += len(gone)
    for path, f in plan.suspects:
        if f.id not in {s.id for s in run.summary.suspects}:
            run.summary.suspects.append(f)
            yield Say.warning("%s: %s (%s, %d bytes) may be a copy an interrupted run stored, "
                              "or someone else's; it cannot be proven ours, so it is kept", path,
                              f.id, f.filename, f.bytes)
    if run.store is not None:
        left_ids = {f.id for f in plan.delete} - gone
        forget = [p for p in plan.forget
                  if not any(r.path == p and r.file_id in left_ids for r in records)]
        yield Blocking(_settle_state, (run.store, plan.settle, forget))
    run.ghosts = {a.id: a.attempt for a in plan.open}
    run.listing = tuple(f for f in listing if f.id not in gone)
    run.claims = Claims(f.id for f in run.listing)


def _settle_state(store: StateStore, settle: Sequence[int], forget: Sequence[str]) -> None:
    if settle:
        store.settle(settle)
    for path in forget:
        store.forget(path)


def _delete_held(run: _Run) -> Steps[None]:
    """Delete the files the run stored whose documents did not end (a stop, an error)."""
    for file_id, (path, _) in list(run.held.items()):
        try:
            yield from delete_steps(file_id)
        except KimiError as exc:
            yield Say.error("%s: could not delete %s: %s; a re-run deletes it", path, file_id,
                            exc)
            continue
        run.release(file_id)
        if run.store is not None:
            with contextlib.suppress(StateError):
                yield Blocking(run.store.forget, (path,))


def _emit(run: _Run, result: ExtractResult) -> Steps[None]:
    """Hand a result over (waiting while the caller has not taken the ones before)."""
    ended = run.ended(result)
    if run.bar is not None:
        yield Advance(run.bar, 1, note=fmt_bytes(ended))
    while not run.sink(result):
        yield Wait(WINDOW_POLL, real=True)


def _worker(run: _Run) -> Steps[None]:
    while (path := run.next_path()) is not None:
        result = yield from _document(run, path)
        if result is not None:
            yield from _emit(run, result)


def _document(run: _Run, path: Path) -> Steps[ExtractResult | None]:
    """One document, start to end; every outcome a result, never an exception (None: the
    run was stopped before it started)."""
    shown = os.fsdecode(path)
    sha256: str | None = None
    size = 0
    try:
        local, head = yield Blocking(functools.partial(
            inspect_file_head, path, purpose=run.purpose, limits=run.client.limits,
            allow_any_type=run.options.allow_any_type))
        size = local.size
        for warning in local.warnings:
            yield Say.warning("%s", warning)
        sha256 = (hashlib.sha256(head).hexdigest() if len(head) == local.size
                  else (yield Blocking(sha256_of, (local.path,))))
        return (yield from _text_of(run, local, shown, sha256))
    except UploadCancelledError:
        return None
    except StateError as exc:
        run.fatal = exc  # nothing more can be recorded: the run stops, loudly
        run.stop.set()
        return None
    except KimiError as exc:
        return ExtractResult(shown, status_of(exc), sha256=sha256, bytes=size, error=exc)
    except OSError as exc:
        error = LocalFileError(f"{shown}: {exc.strerror or exc}", path=shown)
        return ExtractResult(shown, "refused", sha256=sha256, bytes=size, error=error)
    except Exception as exc:  # a bug: say so, never lose the document silently
        yield Say.error("%s: unexpected %s", shown, type(exc).__name__, exc_info=exc)
        bug = KimiError(f"{shown}: unexpected error {type(exc).__name__}: {exc}")
        return ExtractResult(shown, "failed", sha256=sha256, bytes=size, error=bug)


def _text_of(run: _Run, local: LocalFile, shown: str, sha256: str) -> Steps[ExtractResult]:
    cache = run.cache
    if cache is not None:
        body = yield Blocking(cache.text, (sha256,))
        if body is not None:  # read before: no request at all
            return ExtractResult(shown, "ok", FileContent.from_body(body).text, sha256,
                                 local.size, origin="cached")
        entries = yield Blocking(cache.lookup, (sha256, run.purpose))
        hit = pick(entries, run.listing, size=local.size, purpose=run.purpose)
        if hit is not None:
            found = hit[1]
            try:
                content: FileContent = yield GetContent(found.id)
            except NotFoundError:  # deleted since the listing: upload it after all
                yield Blocking(cache.forget, ([found.id],))
            else:
                run.used.add(found.id)
                yield Blocking(cache.remember_text, (sha256, found.id,
                                                     content.raw or content.text))
                yield Say.info("%s: the account holds this content as %s; read from it", shown,
                               found.id)
                return ExtractResult(shown, "ok", content.text, sha256, local.size, found.id,
                                     origin="reused")
    return (yield from _upload_and_read(run, local, shown, sha256))


def _room(run: _Run, local: LocalFile, shown: str) -> Steps[None]:
    """Wait for room in the window; raises when there never will be (or on a stop)."""
    window = run.window
    assert window is not None and run.usage is not None
    while True:
        verdict = window.take(local.size)
        if verdict == "now":
            return
        if verdict == "never":
            usage = run.usage
            if local.size > window.free_bytes:
                raise NotEnoughStorageError(
                    f"{shown}: {fmt_bytes(local.size)} does not fit the account's free "
                    f"{fmt_bytes(window.free_bytes)} (it holds {fmt_bytes(usage.bytes)} of "
                    f"{fmt_bytes(usage.max_bytes)}); delete files to make room",
                    path=shown, bytes_to_free=local.size - window.free_bytes)
            why = ("are kept (keep)" if run.settings.keep
                   else "could not be deleted (see the errors above)")
            raise NotEnoughFileSlotsError(
                f"{shown}: no room left: the file(s) this run stored {why} and the account "
                f"holds {usage.files:,} of {usage.max_files:,} files besides; delete files"
                + (", or extract without keep" if run.settings.keep else "")
                + " and run it again", path=shown, files_to_free=1)
        if not (yield Wait(WINDOW_POLL, stop=run.stop, real=True)):
            raise UploadCancelledError(f"{shown}: not started (stopped)")


def _intent(store: StateStore, purpose: str, local: LocalFile, sha256: str,
            attempt: list[int]) -> Callable[[int | None], None]:
    """What records the intent, durable before the first byte goes out, with the server's
    time; the attempt's id goes to ``attempt``."""

    def on_begin(since: int | None) -> None:
        attempt.append(store.begin(local.path, size=local.size, mtime_ns=local.mtime_ns,
                                   sha256=sha256, filename=local.filename, purpose=purpose,
                                   server_time=since))

    return on_begin


def _upload_and_read(run: _Run, local: LocalFile, shown: str,
                     sha256: str) -> Steps[ExtractResult]:
    yield from _room(run, local, shown)
    store = run.store
    attempt: list[int] = []
    stored: str | None = None
    origin: Origin = "stored"
    result: ExtractResult | None = None
    on_begin = None if store is None else _intent(store, run.purpose, local, sha256, attempt)
    sent_bytes: list[int] = []
    try:
        try:
            sent = yield from send_steps(
                run.client, local, purpose=run.purpose, claims=run.claims,
                policy=run.client.retry_policy.with_retries(run.options.max_retries),
                on_read=lambda chunk: sent_bytes.append(len(chunk)) if not sent_bytes else None,
                on_begin=on_begin, stop=run.stop,
                ghosts=run.ghosts, sha256=sha256)
        except KimiError as exc:
            if (store is not None and attempt and not _retry.may_have_stored(exc)
                    and not (isinstance(exc, UploadCancelledError) and sent_bytes)):
                # refused at the door, or stopped before a byte went out: no copy can exist
                # (a stop after bytes went out may follow a lost answer: kept on record)
                yield Blocking(_settle_state, (store, attempt, [os.fsdecode(local.path)]))
            raise
        stored = sent.file.id
        origin = "adopted" if sent.adopted else "stored"
        run.hold(stored, os.fsdecode(local.path), local.size)
        if store is not None:
            yield Blocking(functools.partial(
                store.done, local.path, size=local.size, mtime_ns=local.mtime_ns,
                sha256=sha256, filename=local.filename, file_id=stored, purpose=run.purpose,
                settles=attempt[0] if attempt and sent.settled else None))
        for f in sent.suspects:
            run.summary.suspects.append(f)
        content: FileContent = yield GetContent(stored)
        if run.cache is not None:
            yield Blocking(run.cache.remember_text, (sha256, stored, content.raw or content.text))
            if run.settings.keep and not sent.adopted:
                # kept: a later upload of this content (kimi-upload, the library) reuses it
                yield Blocking(run.cache.remember, (sha256, run.purpose, stored,
                                                    sent.file.filename, local.size))
        result = ExtractResult(shown, "ok", content.text, sha256, local.size, stored,
                               origin=origin)
    except KimiError as exc:
        if stored is None:
            assert run.window is not None
            run.window.give_back(local.size)
        result = ExtractResult(shown, status_of(exc), sha256=sha256, bytes=local.size,
                               file_id=stored, origin=origin if stored else None, error=exc)
        if isinstance(exc, (UploadCancelledError, StateError)):
            raise
    if stored is not None:
        result = yield from _after_text(run, stored, origin, result, local)
    return result


def _after_text(run: _Run, stored: str, origin: Origin, result: ExtractResult,
                local: LocalFile) -> Steps[ExtractResult]:
    """Delete the file this run stored for a document (unless kept), once its text is saved
    (or the document failed); a kept one is no longer the run's to delete."""
    if deletes_after_text(origin, run.settings.keep) or result.status != "ok":
        deleted = yield from _delete_own(run, stored, local)
        return dataclasses.replace(result, deleted=deleted)
    run.release(stored)
    if run.store is not None:
        yield Blocking(run.store.forget, (local.path,))
    return result


def _delete_own(run: _Run, file_id: str, local: LocalFile) -> Steps[bool]:
    """Delete a file this run stored; its record and its room in the window go with it."""
    try:
        yield from delete_steps(file_id)
    except KimiError as exc:
        yield Say.error("%s: could not delete %s: %s; a re-run deletes it", local.path, file_id,
                        exc)
        assert run.window is not None
        run.window.give_back(local.size, stays=True)  # the run's end tries once more
        return False
    run.release(file_id)
    assert run.window is not None
    run.window.give_back(local.size)
    if run.store is not None:
        yield Blocking(run.store.forget, (local.path,))
    return True


