"""Batch ingestion of files and folders: plan the whole batch, then upload it paced and resumable.

:func:`ingest` (and :func:`aingest`, its asyncio twin: the same steps, uploads as tasks)
works in two phases:

1. **Plan** (no mutation): walk the paths (recursively; hidden files, the state store and
   anything ``exclude`` matches are skipped), preflight every file locally, list the account
   once, hash the files whose content could match something known, and let the pure planner
   (:func:`kimi_files._planner.plan_batch`) decide: already uploaded and unchanged (skipped),
   stored by an interrupted run (adopted, only when provably so), the same content as another
   file of the batch (sent once), what to send, and whether the whole batch fits the free
   slots and bytes. If it cannot fit, nothing is uploaded or deleted.
2. **Run**: delete what the plan says (only with ``free_quota``), then upload with bounded
   concurrency, paced to the account's limits as 429s reveal them, each upload through
   :func:`kimi_files._uploader.send_steps` (retries, provable adoption after a lost answer),
   each recorded in the state store before (the intent, with the server's time) and after.

``dry_run=True`` stops after the plan. A stop event (Ctrl-C in the CLI) starts nothing new
and lets uploads in flight finish.

Here: the options, :func:`ingest`, :func:`aingest` and the plan phase of :func:`batch_steps`;
the run's bookkeeping and results in :mod:`kimi_files._batch_run`, the sending in
:mod:`kimi_files._batch_send`, the late and earlier copies in :mod:`kimi_files._batch_after`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ._batch_after import _earlier_copies, _late_copies
from ._batch_run import _emit_twins, _not_started, _read_state, _Run, _settle
from ._batch_send import _interrupted, _upload
from ._models import FileList, FileObject
from ._options import Paths, UploadKwargs, UploadOptions, path_list, split_upload_options
from ._pacing import Pacer, check_limits
from ._planner import BatchPlan, plan_batch
from ._report import BatchReport, FileResult
from ._scan import (
    Item,
    check_files,
    check_pattern_options,
    check_unverified,
    collect,
    hash_where_needed,
)
from ._state import OpenAttempt, Record, StateStore
from ._steps import Blocking, ClientLike, ListFiles, Now, Say, Steps
from ._uploader import free_room_steps
from .errors import UploadCancelledError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._cache import CacheEntry
    from ._client import AsyncKimiFiles, KimiFiles

__all__ = ["BatchOptions", "BatchReport", "FileResult", "IngestKwargs", "aingest", "batch_steps",
           "collect", "ingest"]

StateArg = StateStore | str | os.PathLike[str] | bool | None


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
        check_pattern_options(self.include, self.exclude)

    @classmethod
    def of(cls, options: IngestKwargs | dict[str, Any]) -> BatchOptions:
        """The options from keyword arguments.

        Raises:
            ConfigurationError: an unknown option or a value of the wrong kind.
        """
        known = {f.name for f in fields(cls)} - {"upload"}
        upload, rest = split_upload_options(options, known, "ingest")
        return cls(upload=upload, **rest)


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
    targets = path_list(paths)
    owned = client is None
    if client is None:
        from ._client import KimiFiles

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
    targets = path_list(paths)
    owned = client is None
    if client is None:
        from ._client import AsyncKimiFiles

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


def batch_steps(client: ClientLike, store: StateStore | None, settings: BatchOptions,
                paths: Sequence[str | os.PathLike[str]],
                stop: threading.Event) -> Steps[BatchReport]:
    """The whole batch (see the module docstring), as steps for either client."""
    run = _Run(client, store, settings, stop)
    report = run.report
    started: float = yield Now()
    try:
        yield from _phases(run, paths)
    finally:
        if stop.is_set():
            report.interrupted = True
    # (when the steps end in an exception, no report is returned: its time does not matter)
    report.elapsed = (yield Now()) - started
    return report


def _phases(run: _Run, paths: Sequence[str | os.PathLike[str]]) -> Steps[None]:
    """The plan, then (unless it refuses, or is all a dry run asks for) the run."""
    client, store, settings = run.client, run.store, run.settings
    items, records, ledger, reported = yield from _checked_items(run, paths)
    if not items:
        return
    listing = yield from _list_account(run, items)
    if listing is None:
        return
    # a recorded id the listing shows as another file (a server may reuse the id of a
    # deleted file): not this file's copy; the file is checked and sent again
    not_ours = yield from _impostors(store, records, listing.data, items)
    reusable = yield from _recheck_and_hash(run, items, records, listing, not_ours)
    plan = plan_batch(items, listing.data, records, client.limits, run.options.free_quota,
                      purpose=run.purpose, resume=not settings.dry_run, ledger=ledger,
                      reported=reported, server_now=client.clock.now(),
                      wall_now=(yield Now(wall=True)), reusable=reusable,
                      reuse=run.options.reuse, not_ours=not_ours)
    run.ghosts = plan.ghosts
    run.listing = listing.data
    yield from _settle(run, plan)
    if plan.refusal is None and settings.dry_run:
        yield from _earlier_copies(run)  # what --replace would delete
    if plan.refusal is not None or settings.dry_run:
        return
    yield from _carry_out(run, plan)


def _checked_items(run: _Run, paths: Sequence[str | os.PathLike[str]]
                   ) -> Steps[tuple[list[Item], list[Record], list[OpenAttempt], set[str]]]:
    """Walk the paths and check every file locally (each refusal a result); the files that
    passed, with the state's records, open attempts and reported suspects."""
    client, store, settings = run.client, run.store, run.settings
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
        yield from run.emit(r)
    items: list[Item] = []
    records, ledger, reported = (yield Blocking(_read_state, (store,)))
    checked = yield Blocking(functools.partial(
        check_files, files, purpose=run.purpose, limits=client.limits,
        allow_any_type=run.options.allow_any_type, stop=run.stop, records=records))
    for outcome in checked:
        if isinstance(outcome, Item):
            items.append(outcome)
            for warning in outcome.local.warnings:
                yield Say.warning("%s", warning)
        elif outcome is not None:
            yield from run.emit(outcome)
        else:
            run.report.interrupted = True
    return items, records, ledger, reported


def _list_account(run: _Run, items: Sequence[Item]) -> Steps[FileList | None]:
    """The account's listing, once; None when stopped while it waited its turn (then every
    file is a result: not started)."""
    try:
        listing: FileList = yield ListFiles()
    except UploadCancelledError:  # stopped while the listing waited its turn
        for item in items:
            error = UploadCancelledError(f"{item.shown}: not started (interrupted)")
            yield from run.emit(FileResult(item.shown, "failed", bytes=item.local.size,
                                           error=error), item)
        return None
    run.report.list_calls += 1
    return listing


def _impostors(store: StateStore | None, records: Sequence[Record],
               listing: Sequence[FileObject], items: Sequence[Item]) -> Steps[dict[str, str]]:
    """The recorded ids the listing shows as another file (see :func:`replace.impostors`);
    those recorded for a file of this batch are said, once each."""
    from ._replace import impostors

    if store is None or not records:
        return {}
    found = impostors(records, listing, (yield Blocking(store.stored)))
    ours = {os.path.abspath(i.local.path) for i in items}
    for file_id in sorted({r.file_id for r in records if r.file_id in found and r.path in ours}):
        why = found[file_id]
        yield Say.warning("%s, recorded as stored, is not that file now (%s); it is left alone "
                          "and the file is sent again", file_id, why)
    return found


def _recheck_and_hash(run: _Run, items: list[Item], records: list[Record],
                      listing: FileList, not_ours: Collection[str] = ()
                      ) -> Steps[list[CacheEntry]]:
    """Check in full the files taken as unchanged whose copy is gone (or is another file
    now: ``not_ours``), and hash those whose content could match something known (each
    failure a result, its file out of ``items``); the reuse cache's entries."""
    listed = {f.id for f in listing.data} - set(not_ours)
    # files taken as unchanged from their records, whose copy is gone: checked in full now
    for item, failure in (yield Blocking(functools.partial(
            check_unverified, items, records, listed,
            purpose=run.purpose, limits=run.client.limits,
            allow_any_type=run.options.allow_any_type))):
        if failure is not None:
            items.remove(item)
            yield from run.emit(failure, item)
        else:
            for warning in item.local.warnings:
                yield Say.warning("%s", warning)
    reusable = (yield Blocking(run.cache.entries)) if run.cache is not None else []
    # a reuse is possible only where a cached file is still listed: only those sizes
    # make a file worth hashing before it is sent
    sizes = {e.size for e in reusable if e.purpose == run.purpose and e.file_id in listed}
    for item, failure in (yield Blocking(functools.partial(
            hash_where_needed, items, records, sizes, listed=listed, purpose=run.purpose))):
        items.remove(item)
        yield from run.emit(failure, item)
    return reusable


def _carry_out(run: _Run, plan: BatchPlan) -> Steps[None]:
    """Run a plan that fits: make room, send, then the interrupted files, the twins, the late
    and the earlier copies."""
    stop = run.stop
    assert plan.room is not None  # no refusal: the batch fits
    try:
        yield from free_room_steps(plan.room, what="this batch", stop=stop,
                                   deleted=run.report.deleted)
    except UploadCancelledError:
        # stopped while making room: what was deleted is in the report; nothing is sent
        yield from _not_started(run, plan)
        return
    yield from _upload(run, plan.groups, plan.claimed)
    if plan.interrupted and run.fatal is None and not stop.is_set():
        yield from _interrupted(run, plan)
    yield from _not_started(run, plan)
    if run.fatal is not None:
        raise run.fatal  # the state store failed: nothing more can be recorded
    yield from _emit_twins(run, plan)
    if not stop.is_set():
        yield from _late_copies(run, plan)
    yield from _earlier_copies(run)
    run.drop_proven_suspects()
