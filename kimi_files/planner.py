"""The batch planner: what to do with every file of a batch, decided with no I/O.

:func:`plan_batch` takes the files that passed the local checks (hashed where it matters),
the account's listing, the state store's records, the limits and the ``free_quota`` policy,
and returns a :class:`BatchPlan`: which files are skipped (already uploaded, unchanged), which
are adopted (an interrupted run provably stored them: :func:`kimi_files.adoption.resolve`),
which are twins of another file of the batch (same content: uploaded once), which are
uploaded (in groups that could be taken for one another, sent one after the other), what is
deleted to make room, and what is reported as a possible extra copy. Resume decisions are
made and tested here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from .adoption import Attempt, resolve, wire_name
from .config import Limits
from .errors import NoRoomError
from .models import FileObject
from .quota import FreeQuota, RoomPlan, plan_room
from .scan import Item
from .state import Record

__all__ = ["BatchPlan", "Skip", "Twin", "plan_batch"]


@dataclass(frozen=True, slots=True)
class Skip:
    """A file already on the server: nothing to send."""

    item: Item
    file_id: str
    adopted: bool  # stored by an interrupted run (else: uploaded before, unchanged)


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
    room: RoomPlan | None = None
    #: set when the batch cannot fit: then nothing is sent and nothing deleted
    refusal: NoRoomError | None = None
    #: (path, file): stored files that may be copies of that path's interrupted upload but
    #: cannot be proven so; kept and reported
    suspects: tuple[tuple[str, FileObject], ...] = ()
    #: interrupted uploads of files of this batch whose copy is not listed (yet)
    open_attempts: dict[str, Attempt] = field(default_factory=dict)
    #: ids no reconciliation of this run may adopt: listed now, or owned by a record
    claimed: frozenset[str] = frozenset()

    @property
    def uploads(self) -> list[Item]:
        return [item for group in self.groups for item in group]


def plan_batch(items: Sequence[Item], listing: Sequence[FileObject], records: Sequence[Record],
               limits: Limits, free_quota: FreeQuota, *, purpose: str,
               resume: bool = True) -> BatchPlan:
    """Decide what to do with every file of the batch (see the module docstring). Pure.

    ``resume=False`` (a dry run) adopts nothing. A file whose ``sha256`` is None has a size
    no other file shares, so it cannot be a duplicate: it is uploaded.
    """
    on_server = {f.id for f in listing}
    referenced = {r.file_id for r in records if r.file_id}
    known: dict[str, str] = {}  # content hash -> file id on the server
    for rec in records:
        if rec.status == "uploaded" and rec.sha256 and rec.file_id in on_server:
            known.setdefault(rec.sha256, rec.file_id)
    by_path = {os.path.abspath(i.local.path): i for i in items}
    adopted, suspects, open_attempts = (
        _resume(records, listing, referenced, by_path) if resume else ({}, [], {}))

    skips: list[Skip] = []
    twins: list[Twin] = []
    todo: list[Item] = []
    first_by_sha: dict[str, Item] = {}
    for item in items:
        found = adopted.get(os.path.abspath(item.local.path))
        if found is not None and item.sha256 is not None:
            known.setdefault(item.sha256, found)
        if item.sha256 is None:
            todo.append(item)
        elif (file_id := known.get(item.sha256)) is not None:
            skips.append(Skip(item, file_id, adopted=file_id == found))
        elif item.sha256 in first_by_sha:
            twins.append(Twin(item, first_by_sha[item.sha256]))
        else:
            first_by_sha[item.sha256] = item
            todo.append(item)

    protected = set(known.values())
    try:
        room = plan_room(listing, len(todo), sum(i.local.size for i in todo), limits,
                         free_quota, protected=protected,
                         what=f"this batch of {len(todo)} file(s)")
    except NoRoomError as exc:
        return BatchPlan(skips=tuple(skips), twins=tuple(twins), groups=_groups(todo, purpose),
                         refusal=exc, suspects=tuple(suspects), open_attempts=open_attempts,
                         claimed=frozenset(on_server | referenced))
    return BatchPlan(skips=tuple(skips), twins=tuple(twins), groups=_groups(todo, purpose),
                     room=room, suspects=tuple(suspects), open_attempts=open_attempts,
                     claimed=frozenset(on_server | referenced))


def _groups(todo: Sequence[Item], purpose: str) -> tuple[tuple[Item, ...], ...]:
    """Uploads that could be taken for one another (the same name as sent, size and purpose)
    in one group each, in the order of their first file; a reconciliation can then never meet
    a sibling's copy."""
    groups: dict[tuple[str, int, str], list[Item]] = {}
    for item in todo:
        key = (wire_name(item.local.filename), item.local.size, purpose)
        groups.setdefault(key, []).append(item)
    return tuple(tuple(g) for g in groups.values())


def _resume(records: Sequence[Record], listing: Sequence[FileObject], referenced: set[str],
            by_path: dict[str, Item],
            ) -> tuple[dict[str, str], list[tuple[str, FileObject]], dict[str, Attempt]]:
    """The intents an interrupted run left: which stored file provably belongs to each.

    Returns the adoptions ({path: file id}, only for files of this batch unchanged since),
    the suspects, and the intents of files of this batch with no candidate at all."""
    pending = {rec.path: rec for rec in records if rec.status == "pending"}
    if not pending:
        return {}, [], {}
    attempts = {path: Attempt(rec.filename, rec.size, rec.purpose, rec.server_time)
                for path, rec in pending.items()}
    adopted: dict[str, str] = {}
    suspects: list[tuple[str, FileObject]] = []
    open_attempts: dict[str, Attempt] = {}
    for path, verdict in resolve(attempts, listing, referenced).items():
        item = by_path.get(path)
        if item is None:
            continue  # not a file of this batch: its intent waits for a run that has it
        rec = pending[path]
        found = verdict.adopted
        unchanged = (item.local.size, item.local.mtime_ns) == (rec.size, rec.mtime_ns)
        if found is not None and unchanged and item.sha256 is not None:
            adopted[path] = found.id
            continue
        if found is not None:
            # provably that run's, but of content that has changed since: kept and reported,
            # never adopted for what is here now
            suspects.append((path, found))
        suspects.extend((path, f) for f in verdict.suspects)
        if found is None and not verdict.suspects:
            open_attempts[path] = attempts[path]
    return adopted, suspects, open_attempts
