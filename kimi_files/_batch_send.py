"""The sending steps of a batch run (:mod:`kimi_files._batch`): the groups of files, at most
``concurrency`` at once, each file sent through :func:`kimi_files._uploader.send_steps` and
recorded; and the files an interrupted run was sending, after the rest."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

from ._batch_run import _read_state, _Run, _settle
from ._hashing import sha256_of
from ._models import FileList
from ._planner import BatchPlan, plan_interrupted
from ._progress import Heartbeat, ProgressBar, short_label, status_line
from ._quota import account_full_error
from ._report import FileResult
from ._scan import Item
from ._steps import (
    Advance,
    Blocking,
    Close,
    ListFiles,
    Now,
    Parallel,
    Progress,
    Say,
    Status,
    Steps,
    closing,
)
from ._uploader import Claims, Sent, send_steps
from .errors import KimiError, LocalFileError, ServerTooManyFilesError, StateError


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
                            wall_now=(yield Now(wall=True)))
    run.ghosts = late.ghosts
    yield from _settle(run, late)
    yield from _upload(run, late.groups, late.claimed)


def _upload(run: _Run, groups: Sequence[Sequence[Item]],
            claimed: frozenset[str]) -> Steps[None]:
    """Send every group, at most ``concurrency`` at once; ``claimed``: ids none may adopt."""
    if not groups:
        return
    claims = Claims(claimed)
    items = [i for g in groups for i in g]
    overall: ProgressBar = yield Progress(sum(i.local.size for i in items), "",
                                          run.options.progress, files=len(items), position=0)

    def status(elapsed: float) -> str:
        return status_line(overall.files_done, len(items), overall.n, overall.total or 0,
                           elapsed, run.client.pacer.describe())

    beat: Heartbeat = yield Status(status)
    run.heartbeat = beat
    try:
        # (the jobs' errors are their outcomes: only what ends the run passes, and then the
        # driver closes what it holds)
        yield Parallel([_group_steps(run, group, claims, overall) for group in groups],
                       run.settings.concurrency)
    finally:
        run.heartbeat = None
    yield Close(beat)
    yield Close(overall)


def _group_steps(run: _Run, group: Sequence[Item], claims: Claims,
                 overall: ProgressBar) -> Steps[None]:
    """Files that could be taken for one another, one after the other."""
    for item in group:
        if run.stop.is_set():
            return
        if run.full is not None:  # the account is full: nothing more is sent
            yield from run.emit(FileResult(item.shown, "deferred", bytes=item.local.size,
                                           error=run.full, note="the account is full"), item)
            yield Advance(overall, files=1)
            continue
        yield from _item_steps(run, item, claims, overall)


def _item_steps(run: _Run, item: Item, claims: Claims, overall: ProgressBar) -> Steps[None]:
    """Send one file and record it; every outcome becomes its result, never an exception."""
    position = run.position()
    try:
        # its file counts as done in the overall bar when the bar closes, however it ends
        bar: ProgressBar = yield Progress(item.local.size, short_label(item.local.filename),
                                          run.options.progress, position=position, leave=False,
                                          part_of=overall)
        yield from closing(bar, _send_item(run, item, claims, bar, overall))
    finally:
        run.release(position)


def _send_item(run: _Run, item: Item, claims: Claims, bar: ProgressBar,
               overall: ProgressBar) -> Steps[None]:
    """What :func:`_item_steps` does with its bar."""
    local = item.local
    store = run.store
    on_read, on_rewind = _progress(bar, overall)
    # the hash goes into the state's record and the reuse cache: taken as the bytes are sent
    # when not taken before (send_steps, beside the sending), and only for them (no state,
    # no cache: no hash at all)
    wanted = item.sha256 is None and (store is not None or run.cache is not None)
    attempt: list[int] = []

    def on_begin(since: int | None) -> None:
        # the intent, durable before the first byte goes out, with the server's time
        attempt.append(run.begin(item, since))

    def failed(error: KimiError) -> Steps[None]:
        yield from run.emit(FileResult(item.shown, "failed", bytes=local.size, error=error),
                            item)

    try:
        sent = yield from send_steps(
            run.client, local, purpose=run.purpose, claims=claims,
            policy=run.client.retry_policy.with_retries(run.options.max_retries),
            on_read=on_read, on_rewind=on_rewind,
            on_begin=on_begin if store is not None else None, stop=run.stop,
            ghosts=run.ghosts, sha256=item.sha256, hash_sent=wanted)
        yield from _record_sent(run, item, sent, attempt, wanted)
        yield from _report_sent(run, item, sent)
    except StateError as exc:
        # the record of what was sent is gone or broken: stop the whole run, loudly
        run.fatal = exc
        run.stop.set()
        yield from failed(exc)
    except ServerTooManyFilesError as exc:
        yield from _account_full(run, item, exc)
    except KimiError as exc:
        yield from failed(exc)
    except OSError as exc:
        yield from failed(LocalFileError(f"{item.shown}: {exc}"))
    except Exception as exc:  # a bug: say so, never lose the file silently
        yield Say.error("%s: unexpected %s", item.shown, type(exc).__name__,
                        exc_info=exc)
        yield from failed(KimiError(f"{item.shown}: unexpected error {type(exc).__name__}: "
                                    f"{exc}"))


def _progress(bar: ProgressBar, overall: ProgressBar
              ) -> tuple[Callable[[bytes], None], Callable[[int], None]]:
    """The callbacks that move one file's bar and the overall one as its bytes are read,
    and take them back when a retry starts over."""
    sent_bytes = [0]

    def on_read(chunk: bytes) -> None:
        sent_bytes[0] += len(chunk)
        bar.advance(len(chunk))
        overall.advance(len(chunk))

    def on_rewind(attempt: int) -> None:
        bar.rewind(f"retry {attempt}")
        overall.back(sent_bytes[0])
        sent_bytes[0] = 0

    return on_read, on_rewind


def _record_sent(run: _Run, item: Item, sent: Sent, attempt: Sequence[int],
                 wanted: bool) -> Steps[None]:
    """Record a file stored: its hash, its record (settling its attempt), the copy as ours,
    and the reuse cache."""
    local, store = item.local, run.store
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


def _report_sent(run: _Run, item: Item, sent: Sent) -> Steps[None]:
    """The result of a file stored, with the possible extra copies kept."""
    local = item.local
    note = "adopted after a lost response" if sent.adopted else ""
    yield from run.suspect(sent.suspects, item.shown, said=True)  # send_steps said each
    # with those an interrupted run of this file left (reported when the batch began)
    suspects = list(dict.fromkeys(f.id for f in (
        *sent.suspects, *run.suspected.get(os.path.abspath(local.path), ()))))
    if suspects:
        many = len(suspects)
        note = ", ".join(filter(None, [
            note, f"{many} possible extra cop{'y' if many == 1 else 'ies'} kept"]))
    yield from run.emit(FileResult(
        item.shown, "uploaded", file_id=sent.file.id, bytes=local.size, note=note,
        suspects=tuple(suspects), stored_as=sent.file.filename,
        purpose=sent.file.purpose or run.purpose), item)


def _account_full(run: _Run, item: Item, exc: ServerTooManyFilesError) -> Steps[None]:
    """The account is full: stop sending, list once to say how full, report once."""
    full, first = run.account_full(exc, item.shown)
    if first:
        try:
            listing: FileList = yield ListFiles()
            run.report.list_calls += 1
            full.message = account_full_error(
                item.shown, exc.message, exc.max_file_count, len(listing.data),
                run.client.limits.max_files).message
        except KimiError as again:
            yield Say.info("listing after the account was full failed: %s", again)
    yield from run.emit(FileResult(item.shown, "deferred", bytes=item.local.size, error=full,
                                   note="the account is full"), item)
