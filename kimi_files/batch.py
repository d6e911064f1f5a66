"""Batch ingestion of files and folders: plan the whole batch, then upload it paced and resumable.

:func:`ingest` works in two phases:

1. **Plan** (no mutation): walk the paths (recursively; hidden files, the state store and
   anything ``exclude`` matches are skipped), preflight every file locally, hash it, list the
   account once, resolve what the local state says (already uploaded and unchanged: skipped;
   pending after a crash: adopted if the server has it), fold identical content into one
   upload, and check the whole batch against the free slots and bytes
   (:func:`kimi_files.quota.plan_room`). If it cannot fit, nothing is uploaded or deleted.
2. **Run**: delete what the plan says (only with ``free_quota``), then upload with bounded
   concurrency, paced to the account's limits as 429s reveal them, each upload through
   :func:`kimi_files.upload.send_file` (retries, lost-response adoption), each recorded in the
   state store before and after.

``dry_run=True`` stops after the plan. A stop event (Ctrl-C in the CLI) starts nothing new
and lets uploads in flight finish.
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adoption import Attempt, resolve, wire_name
from .config import DEFAULT_PURPOSE
from .errors import (
    KimiError,
    LocalFileError,
    NoRoomError,
    StateError,
    UploadCancelledError,
)
from .models import FileObject
from .pacing import Pacer, check_limits
from .preflight import LocalFile, inspect_file
from .progress import ProgressBar, short_label
from .quota import FreeQuota, RoomPlan, check_free_quota, plan_room
from .state import Record, StateStore, sha256_of
from .uploader import Claims, free_room, send_file

if TYPE_CHECKING:
    from .client import KimiFiles

__all__ = ["BatchReport", "FileResult", "collect", "ingest", "matches_filters"]

log = logging.getLogger("kimi_files")

STATUSES = ("uploaded", "skipped", "rejected", "failed", "planned")
#: Folders never walked into (besides hidden ones): build caches, not documents.
SKIPPED_DIRS = frozenset({"__pycache__"})


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one input file."""

    path: str
    status: str  # one of STATUSES
    file_id: str | None = None
    bytes: int = 0
    error: KimiError | None = None
    note: str = ""
    #: ids of files that may be extra copies of this one (never adopted or deleted)
    suspects: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "file_id": self.file_id,
            "bytes": self.bytes,
            "suspects": list(self.suspects),
            "error": None if self.error is None else {
                "type": type(self.error).__name__,
                "message": str(self.error),
            },
        }


@dataclass
class BatchReport:
    """The outcome of :func:`ingest`."""

    results: list[FileResult] = field(default_factory=list)
    deleted: list[FileObject] = field(default_factory=list)
    plan: RoomPlan | None = None
    dry_run: bool = False
    interrupted: bool = False
    elapsed: float = 0.0
    list_calls: int = 0
    #: Files that may be extra copies stored by lost or interrupted attempts of this batch
    #: (or a look-alike someone else uploaded): kept, never adopted or deleted.
    suspects: list[FileObject] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when every file ended uploaded, skipped (or planned, in a dry run)."""
        return not self.interrupted and all(
            r.status in ("uploaded", "skipped", "planned") for r in self.results)

    @property
    def uploaded_bytes(self) -> int:
        return sum(r.bytes for r in self.results if r.status == "uploaded")

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in STATUSES if self.count(s)]
        lines = [
            ("dry run: " if self.dry_run else "")
            + (", ".join(parts) or "no files")
            + f"; {self.uploaded_bytes:,} bytes uploaded in {self.elapsed:.1f}s"
            + (" (interrupted)" if self.interrupted else "")
        ]
        for victim in self.deleted:
            lines.append(f"  deleted {victim.id} {victim.filename} ({victim.bytes:,} bytes) "
                         "to make room")
        if self.dry_run and self.plan is not None:
            for victim in self.plan.deletions:
                lines.append(f"  would delete {victim.id} {victim.filename} "
                             f"({victim.bytes:,} bytes, created_at {victim.created_at})")
        for r in self.results:
            if r.status in ("rejected", "failed") and r.error is not None:
                lines.append(f"  {r.status}: {r.error}")
        if self.suspects:
            lines.append(f"  {len(self.suspects)} possible extra cop"
                         f"{'y' if len(self.suspects) == 1 else 'ies'} on the server, kept because "
                         "they cannot be proven this run's own:")
            for f in self.suspects:
                lines.append(f"    {f.id} {f.filename} ({f.bytes:,} bytes, created_at "
                             f"{f.created_at})")
            lines.append("    remove what is yours with: kimi-files delete "
                         + " ".join(f.id for f in self.suspects))
        return "\n".join(lines)


# --- walking (pure but for the file system) ---------------------------------------------------


def matches_filters(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Is a file (path relative to its root, '/'-separated) selected by the glob filters?

    A pattern matches the relative path or the file's name. With includes, one must match;
    no exclude may.
    """
    name = rel.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern)

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def _inside(real: str, root_real: str) -> bool:
    """Is the resolved path ``real`` the folder ``root_real`` or under it? Pure."""
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _left_out(rel_parts: Sequence[str]) -> bool:
    """Would the walk leave out a path with these parts (relative to its root)? Pure."""
    return any(part.startswith(".") or part in SKIPPED_DIRS for part in rel_parts)


def collect(
    paths: Iterable[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip: Iterable[Path] = (),
    follow_links: bool = False,
) -> tuple[list[Path], list[FileResult]]:
    """The files named or found under the folders named, in order, without repeats.

    Folders are walked recursively; hidden files and folders inside them, ``__pycache__``
    folders and the paths in ``skip`` are left out. A missing path is a rejected result.

    Symbolic links met in a folder: a link to a file the walk would take from the same folder
    is collected (and checked as its target by the preflight); a link to a directory is not
    descended. A link that leads anywhere else (outside the folder, or to something the walk
    leaves out, such as a hidden file) is a rejected result that says where it points, unless
    ``follow_links`` is true: then file links are collected wherever they lead and directory
    links are descended, each real directory at most once (no loops). A broken link is
    collected so that the preflight reports it. Paths named explicitly are always taken.
    """
    skipped = {os.path.abspath(p) for p in skip}
    skipped_real = {os.path.realpath(p) for p in skip}
    seen: set[str] = set()
    files: list[Path] = []
    rejected: list[FileResult] = []

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key in seen or key in skipped or (
                skipped_real and os.path.islink(p) and os.path.realpath(p) in skipped_real):
            return
        seen.add(key)
        files.append(p)

    def refuse_link(link: Path, why: str) -> None:
        shown = os.fsdecode(link)
        rejected.append(FileResult(shown, "rejected", error=LocalFileError(
            f"{shown}: not followed: a symbolic link to {os.path.realpath(link)}, {why}; pass "
            "--follow-links (follow_links=True) to include it", path=shown, rule="link")))

    def link_verdict(link: Path, root_real: str) -> str | None:
        """None when the walk may take a link without follow_links, else why not."""
        real = os.path.realpath(link)
        if not _inside(real, root_real):
            return "outside the folder given"
        if real != root_real and _left_out(os.path.relpath(real, root_real).split(os.sep)):
            return "a hidden or skipped path inside the folder, which the walk leaves out"
        return None

    for raw in paths:
        root = Path(raw)
        shown = os.fsdecode(root)
        if root.is_dir():
            found = 0
            root_real = os.path.realpath(root)
            walked = {root_real}
            for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
                here = Path(dirpath)
                kept = []
                for d in sorted(dirnames):
                    if d.startswith(".") or d in SKIPPED_DIRS:
                        continue
                    sub = here / d
                    real = os.path.realpath(sub) if follow_links else ""
                    if sub.is_symlink():
                        if not matches_filters(sub.relative_to(root).as_posix(), (), exclude):
                            continue
                        why = link_verdict(sub, root_real)
                        if why is None:
                            continue  # its target is walked under its own name
                        if not follow_links:
                            refuse_link(sub, why)
                            found += 1
                            continue
                        if real in walked or _inside(root_real, real):
                            continue  # walked already, or an ancestor of the folder: a loop
                    elif follow_links and real in walked:
                        continue  # reached through a followed link before
                    walked.add(real)
                    kept.append(d)
                dirnames[:] = kept
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    full = here / name
                    rel = full.relative_to(root).as_posix()
                    if not matches_filters(rel, include, exclude):
                        continue
                    if not follow_links and full.is_symlink() and os.path.exists(full):
                        why = link_verdict(full, root_real)
                        if why is not None:
                            refuse_link(full, why)
                            found += 1
                            continue
                    add(full)
                    found += 1
            if found == 0:
                rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                    f"{shown}: no eligible files in this folder (hidden files are skipped"
                    + (", and the --include/--exclude filters applied" if include or exclude
                       else "") + ")", path=shown, rule="eligible")))
        elif os.path.lexists(root):
            add(root)  # named explicitly: checked by the preflight (FIFO, loop, ...)
        else:
            rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                f"{shown}: no such file or folder", path=shown, rule="exists")))
    return files, rejected


# --- the batch ---------------------------------------------------------------------------------


@dataclass
class _Item:
    local: LocalFile
    sha256: str | None  # None until needed: see _Batch._hash_where_needed
    shown: str
    result: FileResult | None = None
    twin_of: _Item | None = None  # same content as an earlier item of this batch


def _open_state(state: StateStore | str | os.PathLike[str] | bool | None,
                client: KimiFiles, wait: bool | float) -> StateStore | None:
    if state is False:
        return None
    if isinstance(state, StateStore):
        return state
    if state is None or state is True:
        return StateStore(client.state_path(), wait=wait)
    return StateStore(state, wait=wait)


def ingest(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    client: KimiFiles | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    purpose: str = DEFAULT_PURPOSE,
    free_quota: FreeQuota = "never",
    dry_run: bool = False,
    concurrency: int = 4,
    rpm: int | None = None,
    rate_period: float = 60.0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    state: StateStore | str | os.PathLike[str] | bool | None = None,
    progress: bool | None = None,
    allow_any_type: bool = False,
    follow_links: bool = False,
    wait: bool | float = False,
    on_result: Callable[[FileResult], None] | None = None,
    stop: threading.Event | None = None,
) -> BatchReport:
    """Upload files and folders as one planned, paced, resumable batch (see module docs).

    ``state``: a path, a :class:`StateStore`, ``None`` for the default location, or ``False``
    for none. ``on_result`` is called (from worker threads, one at a time) as each file ends.
    ``concurrency`` and ``rpm`` bound this batch; a client passed in keeps its pacer, whose
    ceilings are lowered to them (never raised). ``follow_links``: take links that lead
    outside the folders given (default: reported, not followed). ``wait``: when another run
    uses the same state, wait for it (True, or that many seconds) instead of failing.

    Raises:
        ConfigurationError: an option is invalid (checked before any request or deletion).
        StateError: the state store cannot be used (:class:`StateLockedError`: another run
            holds it), or broke during the run; the run stops.
    """
    check_limits(concurrency, rpm, rate_period)
    check_free_quota(free_quota)
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]  # one path, not its characters
    owned = client is None
    if client is None:
        from .client import KimiFiles

        client = KimiFiles(api_key=api_key, base_url=base_url,
                           pacer=Pacer(concurrency, rpm, period=rate_period))
    else:
        client.pacer.restrict(concurrency, rpm)
    store = _open_state(state, client, wait)
    try:
        return _Batch(client, store, purpose=purpose, free_quota=free_quota, dry_run=dry_run,
                      concurrency=concurrency, progress=progress, allow_any_type=allow_any_type,
                      follow_links=follow_links,
                      on_result=on_result,
                      stop=stop or threading.Event()).run(paths, include, exclude)
    finally:
        if store is not None and not isinstance(state, StateStore):
            store.close()
        if owned:
            client.close()


class _Batch:
    def __init__(self, client: KimiFiles, store: StateStore | None, *, purpose: str,
                 free_quota: FreeQuota, dry_run: bool, concurrency: int,
                 progress: bool | None, allow_any_type: bool, follow_links: bool,
                 on_result: Callable[[FileResult], None] | None,
                 stop: threading.Event) -> None:
        self.client = client
        self.store = store
        self.purpose = purpose
        self.free_quota = free_quota
        self.dry_run = dry_run
        self.concurrency = concurrency
        self.progress = progress
        self.allow_any_type = allow_any_type
        self.on_result = on_result
        self.stop = stop
        self.report = BatchReport(dry_run=dry_run)
        self._emit_lock = threading.Lock()
        self._name_locks: dict[tuple[str, int, str], threading.Lock] = {}
        #: attempts of interrupted runs that found no stored copy: a copy may still arrive
        self._open_attempts: dict[str, Attempt] = {}
        self.follow_links = follow_links
        #: a failure that ends the whole run (the state store broke)
        self.fatal: StateError | None = None
        self._claims = Claims()

    # --- results -----------------------------------------------------------------------------

    def emit(self, result: FileResult) -> None:
        with self._emit_lock:
            self.report.results.append(result)
            if self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception as exc:  # the caller's callback must not lose the result
                    log.error("on_result failed for %s: %r", result.path, exc)

    def _list(self) -> tuple[FileObject, ...]:
        self.report.list_calls += 1
        return self.client.list().data

    # --- phase 1: plan -----------------------------------------------------------------------

    def run(self, paths: Iterable[str | os.PathLike[str]], include: Sequence[str],
            exclude: Sequence[str]) -> BatchReport:
        started = time.monotonic()
        try:
            skip = list(self.store.files) if self.store is not None else []
            files, rejected = collect(paths, include=include, exclude=exclude, skip=skip,
                                      follow_links=self.follow_links)
            for r in rejected:
                self.emit(r)
            items = self._check(files)
            if not items:
                return self.report
            listing = self._list()
            todo = self._resolve(items, listing)
            plan = self._plan(todo, items, listing)
            if plan is None:
                return self.report
            if self.dry_run:
                for item in todo:
                    self._finish(item, FileResult(item.shown, "planned", bytes=item.local.size,
                                                  note="would upload"))
                self._emit_twins(items)
                return self.report
            self._delete(plan)
            self._upload(todo, listing)
            if self.fatal is not None:
                raise self.fatal  # the state store failed: nothing more can be recorded
            self._emit_twins(items)
            if not self.stop.is_set():
                self._late_copies()
            return self.report
        finally:
            self.report.elapsed = time.monotonic() - started

    def _check(self, files: list[Path]) -> list[_Item]:
        """Preflight and hash every file, on several threads (libmagic and hashing release
        the GIL); results keep the input order."""
        workers = max(1, min(len(files), os.cpu_count() or 1))
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="kimi-check") as pool:
            try:
                checked = list(pool.map(self._check_one, files))
            except KeyboardInterrupt:
                self.stop.set()  # the checks still queued return at once
                self.report.interrupted = True
                raise
        items = []
        for outcome in checked:
            if isinstance(outcome, _Item):
                items.append(outcome)
            elif outcome is not None:
                self.emit(outcome)
        return items

    def _check_one(self, path: Path) -> _Item | FileResult | None:
        shown = os.fsdecode(path)
        if self.stop.is_set():
            self.report.interrupted = True
            return None
        try:
            local = inspect_file(path, purpose=self.purpose, limits=self.client.limits,
                                 allow_any_type=self.allow_any_type)
        except KimiError as exc:
            return FileResult(shown, "rejected", error=exc)
        for warning in local.warnings:
            log.warning("%s", warning)
        return _Item(local, None, shown)

    def _hash_where_needed(self, items: list[_Item], records: Sequence[Record]) -> list[_Item]:
        """Hash, before uploading, only the files whose content could match something: those
        whose size another file of the batch or a file uploaded before shares (identical
        content has identical size). The others are hashed as they are sent. Returns the
        items still to consider (an unreadable file becomes a rejected result)."""
        sizes = Counter(i.local.size for i in items)
        known_sizes = {r.size for r in records if r.status == "uploaded" and r.sha256}
        wanted = [i for i in items if sizes[i.local.size] > 1 or i.local.size in known_sizes]
        if not wanted:
            return items

        def digest(item: _Item) -> OSError | None:
            try:
                item.sha256 = sha256_of(item.local.path)
            except OSError as exc:
                return exc
            return None

        workers = max(1, min(len(wanted), os.cpu_count() or 1))
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="kimi-hash") as pool:
            failures = dict(zip(map(id, wanted), pool.map(digest, wanted), strict=True))
        kept = []
        for item in items:
            exc = failures.get(id(item))
            if exc is None:
                kept.append(item)
            else:
                self._finish(item, FileResult(item.shown, "rejected", error=LocalFileError(
                    f"{item.shown}: cannot read: {exc.strerror or exc}", path=item.shown)))
        return kept

    def _resolve(self, items: list[_Item], listing: Sequence[FileObject]) -> list[_Item]:
        """Settle what the state and the batch itself already cover; return what to upload."""
        on_server = {f.id: f for f in listing}
        records = self.store.records() if self.store is not None else []
        items = self._hash_where_needed(items, records)
        referenced = {r.file_id for r in records if r.file_id}
        # no reconciliation of this run may adopt a file listed now or owned by a record
        self._claims = Claims(set(on_server) | referenced)
        known_by_sha: dict[str, str] = {}
        for rec in records:
            if rec.status == "uploaded" and rec.sha256 and rec.file_id in on_server:
                known_by_sha.setdefault(rec.sha256, rec.file_id)
        adopted_by_path = {} if self.dry_run else self._resume(records, listing, referenced)
        todo: list[_Item] = []
        first_by_sha: dict[str, _Item] = {}
        for item in items:
            adopted = adopted_by_path.get(os.path.abspath(item.local.path))
            if adopted is not None:
                # the interrupted run had sent this very file: record it, skip it
                if item.sha256 is None:
                    item.sha256 = sha256_of(item.local.path)
                known_by_sha.setdefault(item.sha256, adopted)
            if item.sha256 is None:  # no other file has its size: it cannot be a duplicate
                todo.append(item)
                continue
            known = known_by_sha.get(item.sha256)
            if known is not None:
                if self.store is not None and not self.dry_run:
                    self.store.done(item.local.path, size=item.local.size,
                                    mtime_ns=item.local.mtime_ns, sha256=item.sha256,
                                    filename=item.local.filename, file_id=known,
                                    purpose=self.purpose)
                note = ("stored by an interrupted run; adopted" if known == adopted
                        else "already uploaded, unchanged")
                self._finish(item, FileResult(item.shown, "skipped", file_id=known,
                                              bytes=item.local.size, note=note))
            elif item.sha256 in first_by_sha:
                item.twin_of = first_by_sha[item.sha256]
            else:
                first_by_sha[item.sha256] = item
                todo.append(item)
        self._protected = set(known_by_sha.values())
        return todo

    def _resume(self, records: Sequence[Record], listing: Sequence[FileObject],
                referenced: set[str]) -> dict[str, str]:
        """The intents an interrupted run left: which stored file provably belongs to each
        (see :func:`kimi_files.adoption.resolve`). Returns {path: file id} for the files whose
        content is unchanged since; every other candidate is reported, never adopted."""
        pending = {rec.path: rec for rec in records if rec.status == "pending"}
        if not pending:
            return {}
        attempts = {path: Attempt(rec.filename, rec.size, rec.purpose, rec.server_time)
                    for path, rec in pending.items()}
        adopted: dict[str, str] = {}
        for path, verdict in resolve(attempts, listing, referenced).items():
            rec = pending[path]
            found = verdict.adopted
            if found is not None and self._unchanged(rec):
                log.info("%s: found on the server as %s after an interrupted run; adopted",
                         path, found.id)
                adopted[path] = found.id
                continue
            if found is not None:
                log.warning("%s: changed since an interrupted run stored it as %s; that copy "
                            "is kept and reported, the file is uploaded again", path, found.id)
            self._suspect([found] if found is not None else verdict.suspects, path)
            if found is None and not verdict.suspects:
                self._open_attempts[path] = attempts[path]
        return adopted

    @staticmethod
    def _unchanged(rec: Record) -> bool:
        try:
            st = os.stat(rec.path)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns) == (rec.size, rec.mtime_ns)

    def _suspect(self, files: Iterable[FileObject], path: str) -> None:
        """Report files that may be extra copies of ``path``; they are never adopted."""
        with self._emit_lock:
            known = {f.id for f in self.report.suspects}
            for f in files:
                if f.id not in known:
                    known.add(f.id)
                    self.report.suspects.append(f)
                    self._claims.add(f.id)
                    log.warning("%s: %s (%s, %d bytes) may be a copy an interrupted or lost "
                                "attempt stored, or someone else's; kept, not adopted",
                                path, f.id, f.filename, f.bytes)

    def _late_copies(self) -> None:
        """Interrupted runs whose copy was not on the server: a request of a killed run can
        still finish after this run listed the account. Look once more, and report."""
        if not self._open_attempts:
            return
        found = resolve(self._open_attempts, self._list(), self._claims.snapshot())
        for path, verdict in found.items():
            late = [f for f in (verdict.adopted, *verdict.suspects) if f is not None]
            self._suspect(late, path)

    def _plan(self, todo: list[_Item], items: list[_Item],
              listing: Sequence[FileObject]) -> RoomPlan | None:
        need = sum(i.local.size for i in todo)
        try:
            plan = plan_room(listing, len(todo), need, self.client.limits, self.free_quota,
                             protected=self._protected, what=f"this batch of {len(todo)} file(s)")
        except NoRoomError as exc:
            for item in todo:
                self._finish(item, FileResult(item.shown, "rejected", bytes=item.local.size,
                                              error=exc))
            self._emit_twins(items)
            return None
        self.report.plan = plan
        return plan

    def _finish(self, item: _Item, result: FileResult) -> None:
        item.result = result
        self.emit(result)

    def _emit_twins(self, items: list[_Item]) -> None:
        for item in items:
            twin = item.twin_of
            if twin is None or item.result is not None:
                continue
            first = twin.result
            if first is None:
                continue  # the first was never run (interrupted)
            if first.status in ("uploaded", "skipped") and first.file_id:
                if self.store is not None and not self.dry_run:
                    self.store.done(item.local.path, size=item.local.size,
                                    mtime_ns=item.local.mtime_ns, sha256=item.sha256 or "",
                                    filename=item.local.filename, file_id=first.file_id,
                                    purpose=self.purpose)
                result = FileResult(item.shown, "skipped", file_id=first.file_id,
                                    bytes=item.local.size, note=f"same content as {twin.shown}")
            else:
                result = FileResult(item.shown, first.status, file_id=first.file_id,
                                    bytes=item.local.size, error=first.error,
                                    note=f"same content as {twin.shown}")
            self._finish(item, result)

    # --- phase 2: run ------------------------------------------------------------------------

    def _delete(self, plan: RoomPlan) -> None:
        # each deletion lands in the report as it happens: an interrupt still reports it
        free_room(self.client, plan, what="this batch", stop=self.stop,
                  deleted=self.report.deleted)

    def _upload(self, todo: list[_Item], listing: Sequence[FileObject]) -> None:
        if not todo:
            return
        claims = self._claims
        total = sum(i.local.size for i in todo)
        overall = ProgressBar(total=total, desc=f"{len(todo)} file(s)", enabled=self.progress,
                              position=0)
        slots = list(range(self.concurrency, 0, -1))
        slot_lock = threading.Lock()
        try:
            with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="kimi-upload") as pool:
                futures = {pool.submit(self._one, item, claims, overall, slots, slot_lock): item
                           for item in todo}
                pending = set(futures)
                try:
                    while pending:
                        _, pending = cf.wait(pending, timeout=0.2)
                except KeyboardInterrupt:
                    self.stop.set()
                    self.report.interrupted = True
                    log.warning("interrupted: no new upload starts; waiting for those in flight")
                    for fut in pending:
                        fut.cancel()
                    cf.wait(pending)
                for fut, item in futures.items():
                    if fut.cancelled() and item.result is None:
                        self._finish(item, FileResult(
                            item.shown, "failed", bytes=item.local.size,
                            error=UploadCancelledError(f"{item.shown}: not started (interrupted)")))
        finally:
            overall.close()
        if self.stop.is_set():
            self.report.interrupted = True

    def _name_lock(self, local: LocalFile) -> threading.Lock:
        """Uploads that could be taken for one another (the same name as sent, size and
        purpose) go one at a time, so a reconciliation can never meet a sibling's copy."""
        key = (wire_name(local.filename), local.size, self.purpose)
        with self._emit_lock:
            return self._name_locks.setdefault(key, threading.Lock())

    def _one(self, item: _Item, claims: Claims, overall: ProgressBar, slots: list[int],
             slot_lock: threading.Lock) -> None:
        local = item.local
        if self.stop.is_set():
            self._finish(item, FileResult(item.shown, "failed", bytes=local.size,
                                          error=UploadCancelledError(f"{item.shown}: not started "
                                                                     "(interrupted)")))
            return
        with slot_lock:
            position = slots.pop() if slots else 0
        bar = ProgressBar(total=local.size, desc=short_label(local.filename), enabled=self.progress,
                          position=position, leave=False)
        sent_bytes = [0]
        digest = [hashlib.sha256()]

        def on_read(chunk: bytes) -> None:
            sent_bytes[0] += len(chunk)
            if item.sha256 is None:
                digest[0].update(chunk)
            bar.advance(len(chunk))
            overall.advance(len(chunk))

        def on_rewind(attempt: int) -> None:
            bar.rewind(f"retry {attempt}")
            overall.back(sent_bytes[0])
            sent_bytes[0] = 0
            digest[0] = hashlib.sha256()

        def on_begin(since: int | None) -> None:
            # the intent, durable before the first byte goes out, with the server's time
            if self.store is not None:
                self.store.begin(local.path, size=local.size, mtime_ns=local.mtime_ns,
                                 sha256=item.sha256 or "", filename=local.filename,
                                 purpose=self.purpose, server_time=since)

        try:
            with self._name_lock(local):
                sent = send_file(self.client, local, purpose=self.purpose, claims=claims,
                                 on_read=on_read, on_rewind=on_rewind, on_begin=on_begin,
                                 stop=self.stop)
            if item.sha256 is None:
                # hashed as it was sent; if the last attempt was cut short, read it again
                item.sha256 = (digest[0].hexdigest() if sent_bytes[0] == local.size
                               else sha256_of(local.path))
            if self.store is not None:
                self.store.done(local.path, size=local.size, mtime_ns=local.mtime_ns,
                                sha256=item.sha256, filename=local.filename,
                                file_id=sent.file.id, purpose=self.purpose)
            note = "adopted after a lost response" if sent.adopted else ""
            if sent.suspects:
                self._suspect(sent.suspects, item.shown)
                note = ", ".join(filter(None, [note, f"{len(sent.suspects)} possible extra "
                                                     "cop" + ("y" if len(sent.suspects) == 1
                                                              else "ies") + " kept"]))
            self._finish(item, FileResult(item.shown, "uploaded", file_id=sent.file.id,
                                          bytes=local.size, note=note,
                                          suspects=tuple(f.id for f in sent.suspects)))
        except StateError as exc:
            # the record of what was sent is gone or broken: stop the whole run, loudly
            self.fatal = exc
            self.stop.set()
            self._finish(item, FileResult(item.shown, "failed", bytes=local.size, error=exc))
        except KimiError as exc:
            self._finish(item, FileResult(item.shown, "failed", bytes=local.size, error=exc))
        except OSError as exc:
            self._finish(item, FileResult(item.shown, "failed", bytes=local.size,
                                          error=LocalFileError(f"{item.shown}: {exc}")))
        except Exception as exc:  # a bug: say so, never lose the file silently
            log.error("%s: unexpected %s", item.shown, type(exc).__name__, exc_info=True)
            self._finish(item, FileResult(item.shown, "failed", bytes=local.size,
                                          error=KimiError(f"{item.shown}: unexpected error "
                                                          f"{type(exc).__name__}: {exc}")))
        finally:
            bar.close()
            with slot_lock:
                if position:
                    slots.append(position)
