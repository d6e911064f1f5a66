"""Batch ingestion of files and folders: plan the whole batch, then upload it paced and resumable.

:func:`ingest` (and :func:`aingest`, its asyncio twin: the same steps, uploads as tasks)
works in two phases:

1. **Plan** (no mutation): walk the paths (recursively; hidden files, the state store and
   anything ``exclude`` matches are skipped), preflight every file locally, list the account
   once, hash the files whose content could match something known, and let the pure planner
   (:func:`kimi_files.planner.plan_batch`) decide: already uploaded and unchanged (skipped),
   stored by an interrupted run (adopted, only when provably so), the same content as another
   file of the batch (sent once), what to send, and whether the whole batch fits the free
   slots and bytes. If it cannot fit, nothing is uploaded or deleted.
2. **Run**: delete what the plan says (only with ``free_quota``), then upload with bounded
   concurrency, paced to the account's limits as 429s reveal them, each upload through
   :func:`kimi_files.uploader.send_steps` (retries, provable adoption after a lost answer),
   each recorded in the state store before (the intent, with the server's time) and after.

``dry_run=True`` stops after the plan. A stop event (Ctrl-C in the CLI) starts nothing new
and lets uploads in flight finish.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ._hashing import sha256_of
from ._steps import Blocking, ClientLike, ListFiles, Parallel, Steps
from .adoption import Attempt, resolve
from .cache import ReuseCache
from .errors import (
    ConfigurationError,
    KimiError,
    LocalFileError,
    NoRoomError,
    ServerTooManyFilesError,
    StateError,
    UploadCancelledError,
)
from .models import FileList, FileObject
from .options import UploadKwargs, UploadOptions
from .pacing import Pacer, check_limits
from .planner import BatchPlan, plan_batch, plan_interrupted
from .progress import Heartbeat, ProgressBar, short_label, status_line
from .quota import account_full_error
from .report import STATUSES, BatchReport, FileResult, Status
from .scan import (
    Item,
    check_files,
    check_patterns,
    check_unverified,
    collect,
    hash_where_needed,
    matches_filters,
)
from .state import OpenAttempt, Record, StateStore
from .uploader import Claims, delete_steps, free_room_steps, send_steps

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .client import AsyncKimiFiles, KimiFiles

__all__ = ["STATUSES", "BatchOptions", "BatchReport", "FileResult", "IngestKwargs", "Status",
           "aingest", "batch_steps", "collect", "ingest", "matches_filters"]

log = logging.getLogger("kimi_files")

StateArg = StateStore | str | os.PathLike[str] | bool | None
Paths = Iterable[str | os.PathLike[str]] | str | os.PathLike[str]


class IngestKwargs(UploadKwargs, total=False):
    """The keyword arguments of :func:`ingest` and :func:`aingest`: every upload option, and
    these."""

    #: Check and plan only: no upload, no deletion.
    dry_run: bool
    #: Uploads at once (default 4); the pacer lowers it when the account says so.
    concurrency: int
    #: At most this many requests a minute (learned from 429s when not given).
    rpm: int | None
    #: The rate window in seconds (60).
    rate_period: float
    #: Patterns (gitignore rules): only files they match.
    include: Sequence[str]
    #: Patterns (gitignore rules: a folder's name leaves out the folder, ``!`` takes back):
    #: files they match are left out.
    exclude: Sequence[str]
    #: A path, a StateStore, None (the default location) or False (no state, no resume).
    state: StateArg
    #: Take links that lead outside the folders given (default: reported, not followed).
    follow_links: bool
    #: Once a changed file's new copy is stored, delete the copy this tool stored for that
    #: path before (only one whose id came in its own upload answer, still listed as that
    #: file, and that nothing else maps to; needs the state). Default: kept, and said.
    replace: bool
    #: When another run holds the same state: wait (True, or seconds) instead of failing.
    wait: bool | float
    #: Called as each file ends (from worker threads, one at a time).
    on_result: Callable[[FileResult], None] | None
    #: Set it to stop: nothing new starts; uploads in flight finish.
    stop: threading.Event | None


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchOptions:
    """:class:`IngestKwargs` with their defaults, checked before anything is sent."""

    upload: UploadOptions = field(default_factory=UploadOptions)
    dry_run: bool = False
    concurrency: int = 4
    rpm: int | None = None
    rate_period: float = 60.0
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    state: StateArg = None
    follow_links: bool = False
    replace: bool = False
    wait: bool | float = False
    on_result: Callable[[FileResult], None] | None = None
    stop: threading.Event | None = None

    def __post_init__(self) -> None:
        check_limits(self.concurrency, self.rpm, self.rate_period)
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not all(isinstance(p, str) for p in value):
                raise ConfigurationError(f"{name} must be a list of glob patterns, not {value!r}")
            check_patterns(value, what=name)

    @classmethod
    def of(cls, options: IngestKwargs | dict[str, Any]) -> BatchOptions:
        """The options from keyword arguments.

        Raises:
            ConfigurationError: an unknown option or a value of the wrong kind.
        """
        upload_keys = {f.name for f in fields(UploadOptions)}
        given: dict[str, Any] = dict(options)
        upload = {k: v for k, v in given.items() if k in upload_keys}
        rest = {k: v for k, v in given.items() if k not in upload_keys}
        known = {f.name for f in fields(cls)} - {"upload"}
        unknown = sorted(set(rest) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown ingest option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known | upload_keys))}")
        return cls(upload=UploadOptions.of(upload), **rest)


def _paths(paths: Paths) -> list[str | os.PathLike[str]]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [paths]  # one path, not its characters
    return list(paths)


def _pacer(settings: BatchOptions) -> Pacer:
    """The pacer of a client made for one batch: its bounds."""
    return Pacer(settings.concurrency, settings.rpm, period=settings.rate_period)


def _open_state(state: StateArg, client: ClientLike, wait: bool | float) -> StateStore | None:
    if state is False:
        return None
    if isinstance(state, StateStore):
        return state
    if state is None or state is True:
        return StateStore(client.state_path(), wait=wait)
    return StateStore(state, wait=wait)


def ingest(paths: Paths, *, client: KimiFiles | None = None, api_key: str | None = None,
           base_url: str | None = None, **options: Unpack[IngestKwargs]) -> BatchReport:
    """Upload files and folders as one planned, paced, resumable batch (see module docs).

    ``concurrency`` and ``rpm`` bound this batch; a client passed in keeps its pacer, whose
    ceilings are lowered to them (never raised). Every option is in :class:`IngestKwargs`.

    Raises:
        ConfigurationError: an option is invalid (checked before any request or deletion).
        StateError: the state store cannot be used (:class:`StateLockedError`: another run
            holds it), or broke during the run; the run stops.
    """
    settings = BatchOptions.of(options)
    targets = _paths(paths)
    owned = client is None
    if client is None:
        from .client import KimiFiles

        client = KimiFiles(api_key=api_key, base_url=base_url, pacer=_pacer(settings))
    else:
        client.pacer.restrict(settings.concurrency, settings.rpm)
    try:
        store = _open_state(settings.state, client, settings.wait)
        try:
            stop = settings.stop or threading.Event()
            return client.run(batch_steps(client, store, settings, targets, stop), stop)
        finally:
            if store is not None and not isinstance(settings.state, StateStore):
                store.close()
    finally:
        if owned:
            client.close()


async def aingest(paths: Paths, *, client: AsyncKimiFiles | None = None,
                  api_key: str | None = None, base_url: str | None = None,
                  **options: Unpack[IngestKwargs]) -> BatchReport:
    """:func:`ingest` for asyncio: the same plan, state and report; uploads run as tasks
    (at most ``concurrency`` at once), local work in threads. Cancelling the task that awaits
    it cancels the uploads in flight; their intents stay in the state, so a re-run resolves
    them.

    Raises:
        ConfigurationError: an option is invalid (checked before any request or deletion).
        StateError: the state store cannot be used, or broke during the run.
    """
    import asyncio

    settings = BatchOptions.of(options)
    targets = _paths(paths)
    owned = client is None
    if client is None:
        from .client import AsyncKimiFiles

        client = AsyncKimiFiles(api_key=api_key, base_url=base_url, pacer=_pacer(settings))
    else:
        client.pacer.restrict(settings.concurrency, settings.rpm)
    try:
        store = await asyncio.to_thread(_open_state, settings.state, client, settings.wait)
        try:
            stop = settings.stop or threading.Event()
            return await client.run(batch_steps(client, store, settings, targets, stop), stop)
        finally:
            if store is not None and not isinstance(settings.state, StateStore):
                await asyncio.to_thread(store.close)
    finally:
        if owned:
            await client.aclose()


# --- the batch, as steps (one logic for ingest and aingest) --------------------------------------


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

    def emit(self, result: FileResult, item: Item | None = None) -> None:
        with self._lock:
            if item is not None:
                self.results[id(item)] = result
                if result.file_id and result.status in ("uploaded", "skipped", "reused"):
                    self.current[os.path.abspath(item.local.path)] = result.file_id
                    if result.status != "skipped":
                        self.moved.add(os.path.abspath(item.local.path))
                elif result.status == "planned":
                    self.planned.add(os.path.abspath(item.local.path))
            self.report.results.append(result)
            if self.heartbeat is not None:
                self.heartbeat.touch()
            if self.settings.on_result is not None:
                try:
                    self.settings.on_result(result)
                except Exception as exc:  # the caller's callback must not lose the result
                    log.error("on_result failed for %s: %r", result.path, exc)

    def account_full(self, error: ServerTooManyFilesError, path: str) -> tuple[NoRoomError, bool]:
        """The shared reason once the server said the account is full, and whether this is
        the first such answer (whose caller lists the account once and completes it)."""
        with self._lock:
            if self.full is not None:
                return self.full, False
            self.full = account_full_error(path, error.message, error.max_file_count, None,
                                           self.client.limits.max_files)
            return self.full, True

    def suspect(self, files: Iterable[FileObject], path: str, *, said: bool = False) -> None:
        """Report files that may be extra copies of ``path``; they are never adopted.
        ``said``: the upload said so already (each is said once)."""
        with self._lock:
            known = {f.id for f in self.report.suspects}
            for f in files:
                if f.id not in known:
                    known.add(f.id)
                    self.report.suspects.append(f)
                    self.suspected.setdefault(os.path.abspath(path), []).append(f)
                    self.unnoted.append((path, f.id))
                    if not said:
                        log.warning("%s: %s (%s, %d bytes) may be a copy an interrupted or lost "
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


def batch_steps(client: ClientLike, store: StateStore | None, settings: BatchOptions,
                paths: Sequence[str | os.PathLike[str]],
                stop: threading.Event) -> Steps[BatchReport]:
    """The whole batch (see the module docstring), as steps for either client."""
    run = _Run(client, store, settings, stop)
    report = run.report
    started = time.monotonic()
    try:
        skip = list(store.files) if store is not None else []
        # reuse=False does without the cache altogether (a broken one included)
        cache = (yield Blocking(client.reuse_cache)) if run.options.reuse else None
        run.cache = cache
        if cache is not None:
            skip += cache.files
        files, rejected = yield Blocking(functools.partial(
            collect, paths, include=settings.include, exclude=settings.exclude, skip=skip,
            follow_links=settings.follow_links))
        for r in rejected:
            run.emit(r)
        items: list[Item] = []
        records, ledger, reported = (yield Blocking(_read_state, (store,)))
        checked = yield Blocking(functools.partial(
            check_files, files, purpose=run.purpose, limits=client.limits,
            allow_any_type=run.options.allow_any_type, stop=stop, records=records))
        for outcome in checked:
            if isinstance(outcome, Item):
                items.append(outcome)
                for warning in outcome.local.warnings:
                    log.warning("%s", warning)
            elif outcome is not None:
                run.emit(outcome)
            else:
                report.interrupted = True
        if not items:
            return report
        try:
            listing: FileList = yield ListFiles()
        except UploadCancelledError:  # stopped while the listing waited its turn
            for item in items:
                run.emit(FileResult(item.shown, "failed", bytes=item.local.size,
                                    error=UploadCancelledError(f"{item.shown}: not started "
                                                               "(interrupted)")), item)
            return report
        report.list_calls += 1
        # a recorded id the listing shows as another file (a server may reuse the id of a
        # deleted file): not this file's copy; the file is checked and sent again
        not_ours = yield from _impostors(store, records, listing.data)
        listed = {f.id for f in listing.data} - set(not_ours)
        # files taken as unchanged from their records, whose copy is gone: checked in full now
        for item, failure in (yield Blocking(functools.partial(
                check_unverified, items, records, listed,
                purpose=run.purpose, limits=client.limits,
                allow_any_type=run.options.allow_any_type))):
            if failure is not None:
                items.remove(item)
                run.emit(failure, item)
            else:
                for warning in item.local.warnings:
                    log.warning("%s", warning)
        reusable = (yield Blocking(cache.entries)) if cache is not None else []
        # a reuse is possible only where a cached file is still listed: only those sizes
        # make a file worth hashing before it is sent
        sizes = {e.size for e in reusable if e.purpose == run.purpose and e.file_id in listed}
        for item, failure in (yield Blocking(functools.partial(
                hash_where_needed, items, records, sizes, listed=listed, purpose=run.purpose))):
            items.remove(item)
            run.emit(failure, item)
        plan = plan_batch(items, listing.data, records, client.limits, run.options.free_quota,
                          purpose=run.purpose, resume=not settings.dry_run, ledger=ledger,
                          reported=reported, server_now=client.clock.now(),
                          wall_now=time.time(), reusable=reusable, reuse=run.options.reuse,
                          not_ours=not_ours)
        run.ghosts = plan.ghosts
        run.listing = listing.data
        yield from _settle(run, plan)
        if plan.refusal is None and settings.dry_run:
            yield from _earlier_copies(run)  # what --replace would delete
        if plan.refusal is not None or settings.dry_run:
            return report
        assert plan.room is not None  # no refusal: the batch fits
        try:
            yield from free_room_steps(plan.room, what="this batch", stop=stop,
                                       deleted=report.deleted)
        except UploadCancelledError:
            # stopped while making room: what was deleted is in the report; nothing is sent
            _not_started(run, plan)
            return report
        yield from _upload(run, plan.groups, plan.claimed)
        if plan.interrupted and run.fatal is None and not stop.is_set():
            yield from _interrupted(run, plan)
        _not_started(run, plan)
        if run.fatal is not None:
            raise run.fatal  # the state store failed: nothing more can be recorded
        yield from _emit_twins(run, plan)
        if not stop.is_set():
            yield from _late_copies(run, plan)
        yield from _earlier_copies(run)
        run.drop_proven_suspects()
        return report
    finally:
        if stop.is_set():
            report.interrupted = True
        report.elapsed = time.monotonic() - started


def _impostors(store: StateStore | None, records: Sequence[Record],
               listing: Sequence[FileObject]) -> Steps[dict[str, str]]:
    """The recorded ids the listing shows as another file (see :func:`replace.impostors`),
    each said once."""
    from .replace import impostors

    if store is None or not records:
        return {}
    found = impostors(records, listing, (yield Blocking(store.stored)))
    for file_id, why in found.items():
        log.warning("%s, recorded as stored, is not that file now (%s); it is left alone and "
                    "the file is sent again", file_id, why)
    return found


def _read_state(store: StateStore | None
                ) -> tuple[list[Record], list[OpenAttempt], set[str]]:
    if store is None:
        return [], [], set()
    return store.records(), store.attempts(), store.suspects()


def _interrupted(run: _Run, plan: BatchPlan) -> Steps[None]:
    """The files an interrupted run was sending, after the rest: list again, adopt the
    copies that landed meanwhile when provably theirs (:func:`plan_interrupted`), report the
    other candidates, and send what is left."""
    listing: FileList = yield ListFiles()
    run.report.list_calls += 1
    records, ledger, reported = (yield Blocking(_read_state, (run.store,)))
    # nothing listed before (considered when the batch began), recorded, reported or
    # claimed by this run can be the copy of a deferred file
    claimed = (plan.claimed | {r.file_id for r in records if r.file_id} | reported
               | run.client.attempts.claimed()
               | {r.file_id for r in run.report.results if r.file_id})
    late = plan_interrupted([i for g in plan.interrupted for i in g], listing.data, records,
                            ledger, claimed, server_now=run.client.clock.now(),
                            wall_now=time.time())
    run.ghosts = late.ghosts
    yield from _settle(run, late)
    yield from _upload(run, late.groups, late.claimed)


def _late_copies(run: _Run, plan: BatchPlan) -> Steps[None]:
    """Attempts still open (interrupted runs' and this run's lost ones): a request of a
    killed run can finish after this run listed, so look once more, and report."""
    attempts: dict[Any, Attempt] = {}
    paths: dict[Any, str] = {}
    if run.store is not None:
        ledger = yield Blocking(run.store.attempts)
        attempts.update({a.id: a.attempt for a in ledger})
        paths.update({a.id: a.path for a in ledger})
    # and this client's own uploads whose copy was never identified (failed, cancelled)
    attempts.update({("client", k): a for k, a in run.client.attempts.others(-1).items()})
    if not attempts:
        return
    late: FileList = yield ListFiles()
    run.report.list_calls += 1
    claimed = (plan.claimed | run.client.attempts.claimed()
               | {r.file_id for r in run.report.results if r.file_id})
    for key, verdict in resolve(attempts, late.data, claimed).items():
        found = [f for f in (verdict.adopted, *verdict.suspects) if f is not None]
        run.suspect(found, paths.get(key, "an interrupted upload"))
    yield from _note_suspects(run)


def _earlier_copies(run: _Run) -> Steps[None]:
    """Earlier copies this tool stored for the paths of this batch, now superseded (see
    :mod:`kimi_files.replace`): said, or with ``replace`` deleted once verified by a fresh
    listing (never when stopped: that starts nothing new; a re-run deletes them)."""
    from .replace import earlier_copies, replace_plan

    store = run.store
    if store is None or not (run.planned if run.settings.dry_run else run.current):
        return
    if run.settings.dry_run:
        if run.settings.replace:
            yield from _would_replace(run, store)
        return
    copies = earlier_copies(run.current, (yield Blocking(store.stored)))
    if not copies:
        return
    shown = {os.path.abspath(p): p for p in (r.path for r in run.report.results)}
    if not run.settings.replace or run.stop.is_set():
        # said once: for the paths this run stored (or found) anew, not on every re-run
        listed = {f.id: f for f in run.listing}
        for copy in copies:
            if copy.file_id in listed and copy.path in run.moved:
                run.report.earlier.append((shown.get(copy.path, copy.path),
                                           listed[copy.file_id], ""))
        gone = [c.file_id for c in copies if c.file_id not in listed]
        if gone:  # never to be deleted: nothing to remember
            yield Blocking(store.forget_stored, (gone,))
        return
    fresh: FileList = yield ListFiles()
    run.report.list_calls += 1
    records = yield Blocking(store.records)
    in_use = ({r.file_id for r in records if r.file_id} | set(run.current.values())
              | (yield Blocking(store.suspects)))
    reused = (yield Blocking(run.cache.reused_ids)) if run.cache is not None else set()
    plan = replace_plan(copies, fresh.data, in_use=in_use, reused=reused)
    done = [c.file_id for c in plan.gone]
    try:
        for copy, f in plan.delete:
            if run.stop.is_set():
                break
            path = shown.get(copy.path, copy.path)
            try:
                yield from delete_steps(f.id)
            except KimiError as exc:
                log.info("%s: its earlier copy %s was not deleted: %s", path, f.id, exc)
                run.report.earlier.append((path, f, f"could not be deleted ({exc})"))
                continue
            done.append(f.id)
            run.report.replaced.append((path, f))
            log.info("deleted %s (%s, %d bytes), the earlier copy of %s, replaced by %s",
                     f.id, f.filename, f.bytes, path, run.current[copy.path])
    finally:
        if done:
            yield Blocking(store.forget_stored, (done,))
            if run.cache is not None:
                yield Blocking(run.cache.forget, (done,))
    listed = {f.id: f for f in fresh.data}
    for copy, why in plan.kept:
        run.report.earlier.append((shown.get(copy.path, copy.path), listed[copy.file_id], why))


def _would_replace(run: _Run, store: StateStore) -> Steps[None]:
    """A dry run with ``replace``: the earlier copies the run would delete once the files it
    plans are stored (against the listing the plan saw; the run itself lists again)."""
    from .replace import replace_plan

    copies = [c for c in (yield Blocking(store.stored)) if c.path in run.planned]
    if not copies:
        return
    records = yield Blocking(store.records)
    # a planned path's own record is re-pointed at its new copy: only others' hold a file
    in_use = ({r.file_id for r in records if r.file_id and r.path not in run.planned}
              | set(run.current.values()) | (yield Blocking(store.suspects)))
    shown = {os.path.abspath(p): p for p in (r.path for r in run.report.results)}
    reused = (yield Blocking(run.cache.reused_ids)) if run.cache is not None else set()
    plan = replace_plan(copies, run.listing, in_use=in_use, reused=reused)
    run.report.replaced.extend((shown.get(c.path, c.path), f) for c, f in plan.delete)


def _note_suspects(run: _Run) -> Steps[None]:
    """Remember what was reported, so that no later run adopts it."""
    run.drop_proven_suspects()
    fresh, run.unnoted = run.unnoted, []
    if run.store is not None and fresh and not run.settings.dry_run:
        yield Blocking(run.store.note_suspects, (fresh,))


def _settle(run: _Run, plan: BatchPlan) -> Steps[None]:
    """Report and record what the plan decided before anything is sent."""
    for path, f in plan.suspects:
        run.suspect([f], path)
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
            run.emit(FileResult(skip.item.shown, "reused", file_id=skip.file_id,
                                bytes=skip.item.local.size, note=note, stored_as=skip.stored_as,
                                purpose=run.purpose), skip.item)
            continue
        note = ("stored by an interrupted run; adopted" if skip.adopted
                else "already uploaded, unchanged")
        run.emit(FileResult(skip.item.shown, "skipped", file_id=skip.file_id,
                            bytes=skip.item.local.size, note=note, stored_as=skip.stored_as,
                            purpose=run.purpose), skip.item)
    if plan.refusal is not None:
        for item in plan.uploads:
            run.emit(FileResult(item.shown, "rejected", bytes=item.local.size,
                                error=plan.refusal), item)
        yield from _emit_twins(run, plan)
        return
    if plan.room is not None:  # (a plan of interrupted files has none of its own)
        run.report.plan = plan.room
    for item in plan.deferred:  # decided now: said now
        run.emit(FileResult(item.shown, "deferred", bytes=item.local.size,
                            error=plan.deferral, note="no room for it now"), item)
    if run.settings.dry_run:
        for item in plan.uploads:
            run.emit(FileResult(item.shown, "planned", bytes=item.local.size,
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
        run.emit(FileResult(item.shown, status, file_id=first.file_id, bytes=item.local.size,
                            error=first.error, note=note, stored_as=first.stored_as,
                            purpose=first.purpose), item)


def _upload(run: _Run, groups: Sequence[Sequence[Item]],
            claimed: frozenset[str]) -> Steps[None]:
    """Send every group, at most ``concurrency`` at once; ``claimed``: ids none may adopt."""
    if not groups:
        return
    claims = Claims(claimed)
    items = [i for g in groups for i in g]
    overall = ProgressBar(total=sum(i.local.size for i in items),
                          files=len(items), enabled=run.options.progress, position=0)
    started = time.monotonic()

    def status() -> str:
        return status_line(overall.files_done, len(items), overall.n, overall.total or 0,
                           time.monotonic() - started, run.client.pacer.describe())

    try:
        with Heartbeat(status) as run.heartbeat:
            yield Parallel([_group_steps(run, group, claims, overall) for group in groups],
                           run.settings.concurrency)
    finally:
        run.heartbeat = None
        overall.close()


def _not_started(run: _Run, plan: BatchPlan) -> None:
    """A result for each file a stop kept from starting."""
    for item in plan.uploads:
        if id(item) not in run.results:
            run.emit(FileResult(item.shown, "failed", bytes=item.local.size,
                                error=UploadCancelledError(f"{item.shown}: not started "
                                                           "(interrupted)")), item)


def _group_steps(run: _Run, group: Sequence[Item], claims: Claims,
                 overall: ProgressBar) -> Steps[None]:
    """Files that could be taken for one another, one after the other."""
    for item in group:
        if run.stop.is_set():
            return
        if run.full is not None:  # the account is full: nothing more is sent
            run.emit(FileResult(item.shown, "deferred", bytes=item.local.size, error=run.full,
                                note="the account is full"), item)
            overall.file_done()
            continue
        yield from _item_steps(run, item, claims, overall)


def _item_steps(run: _Run, item: Item, claims: Claims, overall: ProgressBar) -> Steps[None]:
    """Send one file and record it; every outcome becomes its result, never an exception."""
    local = item.local
    store = run.store
    position = run.position()
    bar = ProgressBar(total=local.size, desc=short_label(local.filename),
                      enabled=run.options.progress, position=position, leave=False)
    sent_bytes = [0]
    # the hash goes into the state's record and the reuse cache: taken as the bytes are sent
    # when not taken before (send_steps, beside the sending), and only for them (no state,
    # no cache: no hash at all)
    wanted = item.sha256 is None and (store is not None or run.cache is not None)

    def on_read(chunk: bytes) -> None:
        sent_bytes[0] += len(chunk)
        bar.advance(len(chunk))
        overall.advance(len(chunk))

    def on_rewind(attempt: int) -> None:
        bar.rewind(f"retry {attempt}")
        overall.back(sent_bytes[0])
        sent_bytes[0] = 0

    attempt: list[int] = []

    def on_begin(since: int | None) -> None:
        # the intent, durable before the first byte goes out, with the server's time
        attempt.append(run.begin(item, since))

    def failed(error: KimiError) -> None:
        run.emit(FileResult(item.shown, "failed", bytes=local.size, error=error), item)

    try:
        sent = yield from send_steps(
            run.client, local, purpose=run.purpose, claims=claims,
            policy=run.client.retry_policy.with_retries(run.options.max_retries),
            on_read=on_read, on_rewind=on_rewind,
            on_begin=on_begin if store is not None else None, stop=run.stop,
            ghosts=run.ghosts, sha256=item.sha256, hash_sent=wanted)
        if wanted:
            # hashed as it was sent; when no attempt sent it whole (an adoption), read it
            item.sha256 = sent.sha256 or (yield Blocking(sha256_of, (local.path,)))
        if store is not None:
            yield from run.prove_steps()  # a copy was stored: the clocks were checked
            yield run.done(item, sent.file.id,
                           settles=attempt[0] if attempt and sent.settled else None)
        if store is not None and not sent.adopted:
            # its id came in our own answer: the only kind of copy --replace may delete later
            yield Blocking(functools.partial(
                store.note_stored, local.path, file_id=sent.file.id,
                filename=sent.file.filename, size=sent.file.bytes,
                purpose=sent.file.purpose or run.purpose, created_at=sent.file.created_at))
        if run.cache is not None and item.sha256 is not None and not sent.adopted:
            # only a copy whose id came in our own answer is a fact to reuse later
            yield Blocking(run.cache.remember, (item.sha256, run.purpose, sent.file.id,
                                                sent.file.filename, local.size))
        note = "adopted after a lost response" if sent.adopted else ""
        run.suspect(sent.suspects, item.shown, said=True)  # send_steps said each
        # with those an interrupted run of this file left (reported when the batch began)
        suspects = list(dict.fromkeys(f.id for f in (
            *sent.suspects, *run.suspected.get(os.path.abspath(local.path), ()))))
        if suspects:
            many = len(suspects)
            note = ", ".join(filter(None, [
                note, f"{many} possible extra cop{'y' if many == 1 else 'ies'} kept"]))
        run.emit(FileResult(item.shown, "uploaded", file_id=sent.file.id, bytes=local.size,
                            note=note, suspects=tuple(suspects),
                            stored_as=sent.file.filename, purpose=sent.file.purpose or run.purpose),
                 item)
    except StateError as exc:
        # the record of what was sent is gone or broken: stop the whole run, loudly
        run.fatal = exc
        run.stop.set()
        failed(exc)
    except ServerTooManyFilesError as exc:
        # the account is full: stop sending, list once to say how full, report once
        full, first = run.account_full(exc, item.shown)
        if first:
            try:
                listing: FileList = yield ListFiles()
                run.report.list_calls += 1
                full.message = account_full_error(
                    item.shown, exc.message, exc.max_file_count, len(listing.data),
                    run.client.limits.max_files).message
            except KimiError as again:
                log.info("listing after the account was full failed: %s", again)
        run.emit(FileResult(item.shown, "deferred", bytes=local.size, error=full,
                            note="the account is full"), item)
    except KimiError as exc:
        failed(exc)
    except OSError as exc:
        failed(LocalFileError(f"{item.shown}: {exc}"))
    except Exception as exc:  # a bug: say so, never lose the file silently
        log.error("%s: unexpected %s", item.shown, type(exc).__name__, exc_info=True)
        failed(KimiError(f"{item.shown}: unexpected error {type(exc).__name__}: {exc}"))
    finally:
        bar.close()
        overall.file_done()
        run.release(position)
