"""The bookkeeping of one batch run of :mod:`kimi_files._batch`: :class:`_Run` (results as
they come, the report, the state's records of each attempt, what stops the run) and the
handling of what the plan decided (skips, reuses, twins, refusals, deferrals) as results."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._adoption import Attempt
from ._cache import ReuseCache
from ._models import FileObject
from ._planner import BatchPlan
from ._progress import Heartbeat
from ._quota import account_full_error
from ._report import BatchReport, FileResult, Status
from ._scan import Item
from ._state import OpenAttempt, Record, StateStore
from ._steps import Advance, Blocking, ClientLike, Say, Steps
from .errors import NoRoomError, ServerTooManyFilesError, StateError, UploadCancelledError

if TYPE_CHECKING:
    from ._batch import BatchOptions


class _Run:
    """The state of one batch run: results as they come, the report, and what stops it."""

    def __init__(self, client: ClientLike, store: StateStore | None, settings: BatchOptions,
                 stop: threading.Event) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.options = settings.upload
        self.purpose = settings.upload.purpose
        self.stop = stop
        self.report = BatchReport(dry_run=settings.dry_run)
        self.results: dict[int, FileResult] = {}  # id(item) -> its result
        self.fatal: StateError | None = None  # the state store broke: the run stops
        self.ghosts: dict[int, Attempt] = {}  # interrupted uploads on record (see planner)
        self.unnoted: list[tuple[str, str]] = []  # suspects reported, not yet in the store
        self.suspected: dict[str, list[FileObject]] = {}  # absolute path -> its suspects
        self.begun: list[int] = []  # this run's attempts (ledger ids)
        self.unproven: list[int] = []  # ... begun before the server's clocks were checked
        self.disproved = False  # ... all marked unproven: the clocks disagreed
        self.cache: ReuseCache | None = None
        self.heartbeat: Heartbeat | None = None  # while uploads run: a result is news
        #: set when the server said the account is full: the reason every file not sent
        #: from then on is deferred (one error, said once)
        self.full: NoRoomError | None = None
        self.listing: Sequence[FileObject] = ()  # the account, as the plan saw it
        self.current: dict[str, str] = {}  # absolute path -> the file id it maps to now
        self.moved: set[str] = set()  # absolute paths mapped to another file by this run
        self.planned: set[str] = set()  # absolute paths a dry run would upload
        self._lock = threading.Lock()
        self._positions = list(range(settings.concurrency, 0, -1))  # progress bar rows

    def emit(self, result: FileResult, item: Item | None = None) -> Steps[None]:
        """Record ``result`` (of ``item``) and hand it to ``on_result`` (one at a time)."""
        failed: Exception | None = None
        with self._lock:
            beat = self.heartbeat
            if item is not None:
                self.results[id(item)] = result
                if result.file_id and result.status in ("uploaded", "skipped", "reused"):
                    self.current[os.path.abspath(item.local.path)] = result.file_id
                    if result.status != "skipped":
                        self.moved.add(os.path.abspath(item.local.path))
                elif result.status == "planned":
                    self.planned.add(os.path.abspath(item.local.path))
            self.report.results.append(result)
            if self.settings.on_result is not None:
                try:
                    self.settings.on_result(result)
                except Exception as exc:  # the caller's callback must not lose the result
                    failed = exc
        if beat is not None:
            yield Advance(beat)  # a result is news: the status line waits its turn again
        if failed is not None:
            yield Say.error("on_result failed for %s: %r", result.path, failed)

    def account_full(self, error: ServerTooManyFilesError, path: str) -> tuple[NoRoomError, bool]:
        """The shared reason once the server said the account is full, and whether this is
        the first such answer (whose caller lists the account once and completes it)."""
        with self._lock:
            if self.full is not None:
                return self.full, False
            self.full = account_full_error(path, error.message, error.max_file_count, None,
                                           self.client.limits.max_files)
            return self.full, True

    def suspect(self, files: Iterable[FileObject], path: str, *,
                said: bool = False) -> Steps[None]:
        """Report files that may be extra copies of ``path``; they are never adopted.
        ``said``: the upload said so already (each is said once)."""
        fresh: list[FileObject] = []
        with self._lock:
            known = {f.id for f in self.report.suspects}
            for f in files:
                if f.id not in known:
                    known.add(f.id)
                    self.report.suspects.append(f)
                    self.suspected.setdefault(os.path.abspath(path), []).append(f)
                    self.unnoted.append((path, f.id))
                    fresh.append(f)
        for f in fresh if not said else ():
            yield Say.warning("%s: %s (%s, %d bytes) may be a copy an interrupted or lost "
                              "attempt stored, or someone else's; kept, not adopted",
                              path, f.id, f.filename, f.bytes)

    def drop_proven_suspects(self) -> None:
        """A file some result of this run holds (its id came in an answer) is no suspect."""
        with self._lock:
            proven = self.client.attempts.owned() | {
                r.file_id for r in self.report.results if r.file_id}
            self.report.suspects[:] = [f for f in self.report.suspects if f.id not in proven]
            self.unnoted[:] = [(p, i) for p, i in self.unnoted if i not in proven]

    def begin(self, item: Item, since: int | None) -> int:
        """Record the intent to send ``item`` (blocking work); its attempt's id. Its start is
        proven only when the server's clocks were seen to agree (:meth:`prove_steps`)."""
        assert self.store is not None
        local = item.local
        proven = self.client.clock.agrees is True
        attempt = self.store.begin(local.path, size=local.size, mtime_ns=local.mtime_ns,
                                   sha256=item.sha256 or "", filename=local.filename,
                                   purpose=self.purpose, server_time=since, proven=proven)
        with self._lock:
            self.begun.append(attempt)
            if not proven:
                self.unproven.append(attempt)
        return attempt

    def prove_steps(self) -> Steps[None]:
        """Once a copy stored for us showed the server's clocks agree, the attempts this run
        began before are proven too (the same clock, minutes apart); once they disagreed,
        none is."""
        agrees = self.client.clock.agrees
        if self.store is None or agrees is None:
            return
        with self._lock:
            if agrees:
                ids, self.unproven = self.unproven, []
            elif not self.disproved:
                ids, self.disproved = list(self.begun), True
            else:
                ids = []
        if ids:
            yield Blocking(self.store.prove, (ids, bool(agrees)))

    def position(self) -> int:
        with self._lock:
            return self._positions.pop() if self._positions else 0

    def release(self, position: int) -> None:
        with self._lock:
            if position:
                self._positions.append(position)

    def done(self, item: Item, file_id: str, settles: int | None = None) -> Blocking:
        """The record that ``item`` is stored as ``file_id``, as blocking work."""
        assert self.store is not None
        local = item.local
        return Blocking(functools.partial(
            self.store.done, local.path, size=local.size, mtime_ns=local.mtime_ns,
            sha256=item.sha256 or "", filename=local.filename, file_id=file_id,
            purpose=self.purpose, settles=settles, ctime_ns=local.ctime_ns or None,
            inode=local.inode or None, device=local.device or None))


def _read_state(store: StateStore | None
                ) -> tuple[list[Record], list[OpenAttempt], set[str]]:
    if store is None:
        return [], [], set()
    return store.records(), store.attempts(), store.suspects()


def _note_suspects(run: _Run) -> Steps[None]:
    """Remember what was reported, so that no later run adopts it."""
    run.drop_proven_suspects()
    fresh, run.unnoted = run.unnoted, []
    if run.store is not None and fresh and not run.settings.dry_run:
        yield Blocking(run.store.note_suspects, (fresh,))


def _settle(run: _Run, plan: BatchPlan) -> Steps[None]:
    """Report and record what the plan decided before anything is sent."""
    for path, f in plan.suspects:
        yield from run.suspect([f], path)
    if run.store is not None and not run.settings.dry_run:
        yield from _note_suspects(run)
        if plan.settle:
            yield Blocking(run.store.settle, (plan.settle,))
        if plan.forget_reported:
            yield Blocking(run.store.forget_suspects, (plan.forget_reported,))
    for skip in plan.skips:
        if (run.store is not None and not run.settings.dry_run
                and skip.item.record_id != skip.file_id):  # else its record says so already
            yield run.done(skip.item, skip.file_id)
        if skip.reused:
            if run.cache is not None and not run.settings.dry_run:
                yield Blocking(run.cache.note_reused, (skip.file_id,))  # --replace keeps it
            same = skip.stored_as == skip.item.local.filename
            note = ("the account holds this content already" if same else
                    f"the account holds this content already, stored as {skip.stored_as!r}")
            yield from run.emit(FileResult(skip.item.shown, "reused", file_id=skip.file_id,
                                           bytes=skip.item.local.size, note=note,
                                           stored_as=skip.stored_as, purpose=run.purpose),
                                skip.item)
            continue
        note = ("stored by an interrupted run; adopted" if skip.adopted
                else "already uploaded, unchanged")
        yield from run.emit(FileResult(skip.item.shown, "skipped", file_id=skip.file_id,
                                       bytes=skip.item.local.size, note=note,
                                       stored_as=skip.stored_as, purpose=run.purpose), skip.item)
    if plan.refusal is not None:
        for item in plan.uploads:
            yield from run.emit(FileResult(item.shown, "rejected", bytes=item.local.size,
                                           error=plan.refusal), item)
        yield from _emit_twins(run, plan)
        return
    if plan.room is not None:  # (a plan of interrupted files has none of its own)
        run.report.plan = plan.room
    for item in plan.deferred:  # decided now: said now
        yield from run.emit(FileResult(item.shown, "deferred", bytes=item.local.size,
                                       error=plan.deferral, note="no room for it now"), item)
    if run.settings.dry_run:
        for item in plan.uploads:
            yield from run.emit(FileResult(item.shown, "planned", bytes=item.local.size,
                                           note="would upload"), item)
        yield from _emit_twins(run, plan)


def _emit_twins(run: _Run, plan: BatchPlan) -> Steps[None]:
    for twin in plan.twins:
        item, first = twin.item, run.results.get(id(twin.first))
        if id(item) in run.results or first is None:
            continue  # the first was never run (interrupted)
        status: Status = first.status
        note = f"same content as {twin.first.shown}"
        if first.status in ("uploaded", "skipped") and first.file_id:
            if run.store is not None and not run.settings.dry_run:
                yield run.done(item, first.file_id)
            status = "skipped"
        yield from run.emit(FileResult(item.shown, status, file_id=first.file_id,
                                       bytes=item.local.size, error=first.error, note=note,
                                       stored_as=first.stored_as, purpose=first.purpose), item)


def _not_started(run: _Run, plan: BatchPlan) -> Steps[None]:
    """A result for each file a stop kept from starting."""
    for item in plan.uploads:
        if id(item) not in run.results:
            error = UploadCancelledError(f"{item.shown}: not started (interrupted)")
            yield from run.emit(FileResult(item.shown, "failed", bytes=item.local.size,
                                           error=error), item)
