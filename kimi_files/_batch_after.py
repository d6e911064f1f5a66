"""What a batch run (:mod:`kimi_files._batch`) looks for once its files are sent: copies of
open attempts that landed late (reported), and earlier copies of changed files (said, or with
``replace`` deleted: :mod:`kimi_files._replace`)."""

from __future__ import annotations

import os

from ._adoption import Attempt, resolve
from ._batch_run import _note_suspects, _Run
from ._models import FileList
from ._planner import BatchPlan
from ._state import StateStore
from ._steps import Blocking, ListFiles, Say, Steps
from ._uploader import delete_steps
from .errors import KimiError


def _late_copies(run: _Run, plan: BatchPlan) -> Steps[None]:
    """Attempts still open (interrupted runs' and this run's lost ones): a request of a
    killed run can finish after this run listed, so look once more, and report."""
    # the ledger's attempts by their id, this client's by ("client", its token)
    attempts: dict[int | tuple[str, int], Attempt] = {}
    paths: dict[int | tuple[str, int], str] = {}
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
        yield from run.suspect(found, paths.get(key, "an interrupted upload"))
    yield from _note_suspects(run)


def _earlier_copies(run: _Run) -> Steps[None]:
    """Earlier copies this tool stored for the paths of this batch, now superseded (see
    :mod:`kimi_files._replace`): said, or with ``replace`` deleted once verified by a fresh
    listing (never when stopped: that starts nothing new; a re-run deletes them)."""
    from ._replace import earlier_copies, replace_plan

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
                yield Say.info("%s: its earlier copy %s was not deleted: %s", path, f.id, exc)
                run.report.earlier.append((path, f, f"could not be deleted ({exc})"))
                continue
            done.append(f.id)
            run.report.replaced.append((path, f))
            yield Say.info("deleted %s (%s, %d bytes), the earlier copy of %s, replaced by %s",
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
    from ._replace import replace_plan

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
