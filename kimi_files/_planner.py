"""The batch planner: what to do with every file of a batch, decided with no I/O.

:func:`plan_batch` takes the files that passed the local checks (hashed where it matters),
the account's listing, the state store's records, the limits and the ``free_quota`` policy,
and returns a :class:`BatchPlan`: which files are skipped (already uploaded, unchanged), which
are adopted (an interrupted run provably stored them: :func:`kimi_files._adoption.resolve`),
which are twins of another file of the batch (same content: uploaded once), which are
uploaded (in groups that could be taken for one another, sent one after the other), what is
deleted to make room, and what is reported as a possible extra copy. Resume decisions are
made and tested here.

When the batch does not fit and freeing was not asked (``free_quota="never"``), the part that
fits is sent: in input order, each file that still fits what those before it left
(:func:`~kimi_files._quota.fit_in_order`); the rest is ``deferred``, with one error that says
why and what would finish them. Nothing is deleted.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ._adoption import Attempt, loose_forms, resolve
from ._cache import CacheEntry
from ._config import Limits
from ._models import FileObject
from ._quota import FreeQuota, RoomPlan, Usage, fit_in_order, no_room_error, plan_room
from ._scan import Item
from ._state import OpenAttempt, Record
from .errors import NoRoomError

__all__ = ["BatchPlan", "Skip", "Twin", "plan_batch", "plan_interrupted"]


@dataclass(frozen=True, slots=True)
class Skip:
    """A file already on the server: nothing to send."""

    item: Item
    file_id: str
    adopted: bool  # stored by an interrupted run (else: uploaded before, unchanged)
    #: the account holds this content from another upload (another path, the library, the
    #: CLI): reused, not uploaded again
    reused: bool = False
    #: the name the file ``file_id`` is stored under (as the listing shows it)
    stored_as: str = ""


@dataclass(frozen=True, slots=True)
class Twin:
    """A file with the same content as ``first``, an earlier file of the batch."""

    item: Item
    first: Item


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Everything :func:`plan_batch` decided."""

    skips: tuple[Skip, ...] = ()
    twins: tuple[Twin, ...] = ()
    #: the files to send, in groups: the files of a group (same name as sent, size and
    #: purpose) could be taken for one another, so they go one after the other
    groups: tuple[tuple[Item, ...], ...] = ()
    #: files (in groups) an interrupted run was sending, whose copy may still land: sent
    #: after the others, once the account is listed again (:func:`plan_interrupted`)
    interrupted: tuple[tuple[Item, ...], ...] = ()
    room: RoomPlan | None = None
    #: set when the batch cannot fit: then nothing is sent and nothing deleted
    refusal: NoRoomError | None = None
    #: files left out because they do not fit (freeing was not asked): not sent now
    deferred: tuple[Item, ...] = ()
    #: why they were deferred, and what would finish them (one error for all)
    deferral: NoRoomError | None = None
    #: (path, file): stored files that may be copies of that path's interrupted upload but
    #: cannot be proven so; kept and reported (those not reported before)
    suspects: tuple[tuple[str, FileObject], ...] = ()
    #: the ledger's attempts still open after this plan (by id): possible owners of a copy
    #: for every reconciliation of this run
    ghosts: dict[int, Attempt] = field(default_factory=dict)
    #: ledger attempts to take out: adopted, or too old for a copy to land any more
    settle: tuple[int, ...] = ()
    #: reported suspects that are gone from the server: forget them
    forget_reported: tuple[str, ...] = ()
    #: ids no reconciliation of this run may adopt: listed now, owned by a record, or
    #: reported as a suspect before
    claimed: frozenset[str] = frozenset()

    @property
    def uploads(self) -> list[Item]:
        """Every file to send, those an interrupted run was sending last."""
        return [item for group in (*self.groups, *self.interrupted) for item in group]


from ._adoption import GHOST_TTL  # noqa: E402


def plan_batch(items: Sequence[Item], listing: Sequence[FileObject], records: Sequence[Record],
               limits: Limits, free_quota: FreeQuota, *, purpose: str, resume: bool = True,
               ledger: Sequence[OpenAttempt] = (), reported: Collection[str] = (),
               server_now: int | None = None, wall_now: float | None = None,
               reusable: Sequence[CacheEntry] = (), reuse: bool = True,
               not_ours: Collection[str] = ()) -> BatchPlan:
    """Decide what to do with every file of the batch (see the module docstring). Pure.

    ``ledger``: the state's open attempts; ``reported``: ids reported as suspects before;
    ``server_now`` (the server's clock) and ``wall_now`` (the local wall clock, for attempts
    whose server time was never known) age the ledger. ``resume=False`` (a dry run) adopts
    and settles nothing. ``reusable``: the reuse cache's entries; with ``reuse`` a file whose
    content (and purpose) the account still holds from another upload is not sent again. A
    file whose ``sha256`` is None has a size nothing known shares, so it cannot be a
    duplicate: it is uploaded. ``not_ours``: recorded ids the listing shows as another file
    (:func:`kimi_files._replace.impostors`): no file is taken as stored by them.
    """
    on_server = {f.id: f for f in listing}
    referenced = {r.file_id for r in records if r.file_id} | set(reported)
    mine, known = _known_content(records, on_server, reusable, purpose=purpose, reuse=reuse,
                                 not_ours=not_ours)
    by_path = {os.path.abspath(i.local.path): i for i in items}
    ledger_plan = (_resume(records, listing, referenced, by_path, ledger, server_now, wall_now)
                   if resume else _Ledger())
    adopted = ledger_plan.adopted
    skips, twins, todo = _sort_items(items, on_server, adopted, mine, known)
    protected = {s.file_id for s in skips}
    late = {id(i) for i in todo if os.path.abspath(i.local.path) in ledger_plan.open_paths}
    groups, interrupted = _split(todo, late)
    common = BatchPlan(
        skips=tuple(skips), twins=tuple(twins), groups=groups, interrupted=interrupted,
        suspects=tuple(ledger_plan.suspects), ghosts=ledger_plan.ghosts,
        settle=tuple(ledger_plan.settle),
        forget_reported=tuple(sorted(set(reported) - set(on_server))),
        claimed=frozenset(set(on_server) | referenced),
    )
    try:
        room = plan_room(listing, len(todo), sum(i.local.size for i in todo), limits,
                         free_quota, protected=protected,
                         what=f"this batch of {len(todo)} file(s)")
    except NoRoomError as exc:
        if not (isinstance(free_quota, str) and free_quota == "never"):
            return replace(common, refusal=exc)
        # freeing was not asked: send the part that fits, defer the rest
        own = protected | {r.file_id for r in records
                           if r.file_id and r.path in by_path} | set(adopted.values())
        return _part_that_fits(listing, todo, late, limits, protected, own, purpose, common)
    return replace(common, room=room)


def _known_content(records: Sequence[Record], on_server: dict[str, FileObject],
                   reusable: Sequence[CacheEntry], *, purpose: str, reuse: bool,
                   not_ours: Collection[str] = ()
                   ) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]:
    """What the account holds that a file could be: by path, (hash, file id) uploaded from
    that path; by content hash (with ``reuse``), (file id, name stored under); never by an
    id of ``not_ours``. Pure."""
    mine: dict[str, tuple[str, str]] = {}  # path -> (hash, file id) uploaded from that path
    known: dict[str, tuple[str, str]] = {}  # content hash -> (file id, name stored under)
    for rec in records:
        if (rec.status == "uploaded" and rec.sha256 and rec.file_id in on_server
                and rec.purpose == purpose and rec.file_id not in not_ours):
            mine[rec.path] = (rec.sha256, rec.file_id)
            if reuse:
                known.setdefault(rec.sha256, (rec.file_id, on_server[rec.file_id].filename))
    if reuse:
        for entry in reusable:
            f = on_server.get(entry.file_id)
            if (f is not None and f.id not in not_ours and entry.purpose == purpose == f.purpose
                    and f.bytes == entry.size and not f.failed):
                known.setdefault(entry.sha256, (f.id, f.filename))
    return mine, known


def _sort_items(items: Sequence[Item], on_server: Mapping[str, FileObject],
                adopted: Mapping[str, str], mine: Mapping[str, tuple[str, str]],
                known: Mapping[str, tuple[str, str]]
                ) -> tuple[list[Skip], list[Twin], list[Item]]:
    """Each file skipped (adopted, unchanged or reused), a twin of an earlier one, or to
    send. Pure."""
    skips: list[Skip] = []
    twins: list[Twin] = []
    todo: list[Item] = []
    first_by_sha: dict[str, Item] = {}
    for item in items:
        path = os.path.abspath(item.local.path)
        found = adopted.get(path)
        if item.sha256 is None:
            todo.append(item)
        elif found is not None:
            skips.append(Skip(item, found, adopted=True, stored_as=on_server[found].filename))
        elif mine.get(path, ("", ""))[0] == item.sha256:
            skips.append(Skip(item, mine[path][1], adopted=False,
                              stored_as=on_server[mine[path][1]].filename))
        elif (hit := known.get(item.sha256)) is not None:
            skips.append(Skip(item, hit[0], adopted=False, reused=True, stored_as=hit[1]))
        elif item.sha256 in first_by_sha:
            twins.append(Twin(item, first_by_sha[item.sha256]))
        else:
            first_by_sha[item.sha256] = item
            todo.append(item)
    return skips, twins, todo


def _split(send: Sequence[Item], late: Collection[int]
           ) -> tuple[tuple[tuple[Item, ...], ...], tuple[tuple[Item, ...], ...]]:
    """The files to send in groups (the plan's ``groups``), those an interrupted run was
    sending (``late``, by ``id``) apart (its ``interrupted``, sent last). Pure."""
    return (_groups([i for i in send if id(i) not in late]),
            _groups([i for i in send if id(i) in late]))


def _part_that_fits(listing: Sequence[FileObject], todo: Sequence[Item], late: Collection[int],
                    limits: Limits, protected: Collection[str], own: Collection[str],
                    purpose: str, common: BatchPlan) -> BatchPlan:
    """The plan of a batch that does not fit when freeing was not asked: the part that fits,
    in input order, is sent; the rest is deferred, with why and what would finish it. Pure."""
    usage = Usage.of(listing, limits)
    taken = set(fit_in_order([i.local.size for i in todo], usage.free_files,
                             usage.free_bytes))
    sent = [i for k, i in enumerate(todo) if k in taken]
    deferred = [i for k, i in enumerate(todo) if k not in taken]
    groups, interrupted = _split(sent, late)
    room = plan_room(listing, len(sent), sum(i.local.size for i in sent), limits)
    deferral = no_room_error(
        usage, len(todo), sum(i.local.size for i in todo), "all of this batch",
        _finish_advice(listing, todo, deferred, limits, protected, own, purpose, len(sent)))
    return replace(common, groups=groups, interrupted=interrupted, room=room,
                   deferred=tuple(deferred), deferral=deferral)


def _finish_advice(listing: Sequence[FileObject], todo: Sequence[Item],
                   deferred: Sequence[Item], limits: Limits, protected: Collection[str],
                   own: Collection[str], purpose: str, sent: int) -> str:
    """What was done and what would finish the deferred files: freeing the oldest files
    (suggested only when a run with it would delete none of this batch's own: ``own``, its
    files on the server, earlier versions included), deleting by hand, or (text) reading
    them without keeping them."""
    said = (f"Sending the {sent:,} that fit, in input order; {len(deferred):,} deferred. "
            if sent else f"Nothing fits; all {len(deferred):,} deferred. ")
    ways = []
    try:
        plan = plan_room(listing, len(todo), sum(i.local.size for i in todo), limits,
                         "oldest", protected=protected)  # as that run would plan
    except NoRoomError:
        plan = None
    if plan is not None and not any(f.id in own for f in plan.deletions):
        ways.append(f"run again with --free-quota oldest (free_quota='oldest'): it deletes the "
                    f"{len(plan.deletions):,} oldest file(s) of the account, none of this "
                    "batch's")
    ways.append("delete files you no longer need (kimi-files list, then kimi-files delete ID... "
                "or kimi-files prune) and run again")
    if purpose == "file-extract":
        ways.append("for their text only, kimi-files extract PATH... reads them within the "
                    "quota and keeps no file")
    return said + "To finish them: " + "; or ".join(ways) + "."


def _groups(todo: Sequence[Item]) -> tuple[tuple[Item, ...], ...]:
    """Uploads that could be taken for one another in one group each, in the order of their
    first file: the same size and purpose, and names a server may store alike (their
    :func:`~kimi_files._adoption.loose_forms` meet, as ``a\\b`` sent and ``a\\\\b`` kept
    do). A group's files are sent one after the other, so a reconciliation never meets a
    sibling's copy in flight."""
    parent = list(range(len(todo)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[int, str], int] = {}  # (size, loose name) -> an item that has it
    for i, item in enumerate(todo):
        for name in loose_forms(item.local.filename):
            j = owner.setdefault((item.local.size, name), i)
            if j != i:
                parent[root(i)] = root(j)
    groups: dict[int, list[Item]] = {}
    for i, item in enumerate(todo):
        groups.setdefault(root(i), []).append(item)
    return tuple(tuple(g) for g in groups.values())


def plan_interrupted(files: Sequence[Item], listing: Sequence[FileObject],
                     records: Sequence[Record], ledger: Sequence[OpenAttempt],
                     claimed: Collection[str], *, server_now: int | None = None,
                     wall_now: float | None = None) -> BatchPlan:
    """The files of a plan an interrupted run was sending (:attr:`BatchPlan.interrupted`),
    decided again on a new listing, taken after the rest of the batch was sent: a copy an
    interrupted run's request stored meanwhile is adopted by the rules of :func:`plan_batch`
    (one-to-one, name, size, purpose, time by a proven server clock, no other claimant);
    every other candidate is a suspect; the rest is sent. Pure.

    ``claimed``: ids no attempt may own (recorded, reported before, or this run's own).
    """
    by_path = {os.path.abspath(i.local.path): i for i in files}
    found = _resume(records, listing, set(claimed), by_path, ledger, server_now, wall_now)
    skips = [Skip(i, found.adopted[p], adopted=True) for p, i in by_path.items()
             if p in found.adopted]
    todo = [i for p, i in by_path.items() if p not in found.adopted]
    return BatchPlan(skips=tuple(skips), groups=_groups(todo), suspects=tuple(found.suspects),
                     ghosts=found.ghosts, settle=tuple(found.settle),
                     claimed=frozenset({f.id for f in listing} | set(claimed)))


@dataclass
class _Ledger:
    adopted: dict[str, str] = field(default_factory=dict)
    suspects: list[tuple[str, FileObject]] = field(default_factory=list)
    ghosts: dict[int, Attempt] = field(default_factory=dict)
    settle: list[int] = field(default_factory=list)
    #: paths with an attempt still open (a copy of it may yet land)
    open_paths: set[str] = field(default_factory=set)


def _resume(records: Sequence[Record], listing: Sequence[FileObject], claimed: set[str],
            by_path: dict[str, Item], ledger: Sequence[OpenAttempt], server_now: int | None,
            wall_now: float | None) -> _Ledger:
    """What the ledger of interrupted uploads says, now that the account is listed.

    Each open attempt may own a stored copy. The latest attempt of a file that is still
    pending (the intent of the run that was interrupted) adopts its copy when
    :func:`~kimi_files._adoption.resolve` proves it, the file is in this batch and unchanged;
    every other candidate of every attempt is reported. An attempt too old for a copy to land
    any more is settled; the rest stay on record as possible owners ("ghosts")."""
    out = _Ledger()
    pending = {rec.path: rec for rec in records if rec.status == "pending"}
    latest: dict[str, OpenAttempt] = {}
    for a in ledger:
        if a.path in pending and (a.path not in latest or a.id > latest[a.path].id):
            latest[a.path] = a
    attempts = {a.id: a.attempt for a in ledger}
    verdicts = resolve(attempts, listing, claimed)
    for a in ledger:
        verdict = verdicts[a.id]
        item = by_path.get(a.path)
        rec = pending.get(a.path)
        if (verdict.adopted is not None and latest.get(a.path) is a and item is not None
                and rec is not None and item.sha256 is not None
                and (item.local.size, item.local.mtime_ns) == (rec.size, rec.mtime_ns)):
            out.adopted[a.path] = verdict.adopted.id
            out.settle.append(a.id)
            continue
        found = [f for f in (verdict.adopted, *verdict.suspects) if f is not None]
        out.suspects.extend((a.path, f) for f in found)
        if _expired(a, server_now, wall_now):
            out.settle.append(a.id)
        else:
            out.ghosts[a.id] = attempts[a.id]
            out.open_paths.add(a.path)
    return out


def _expired(a: OpenAttempt, server_now: int | None, wall_now: float | None) -> bool:
    if a.server_time is not None and server_now is not None:
        return a.server_time < server_now - GHOST_TTL
    return wall_now is not None and a.started < wall_now - GHOST_TTL
