"""Earlier copies of changed files: which this tool stored before, and which ``--replace``
deletes. Pure.

The server keeps every upload: a file uploaded, changed and uploaded again is stored twice.
The state remembers each file whose id came in this tool's own upload answer, by path
(:meth:`kimi_files._state.StateStore.note_stored`; never an adopted or a reused one). Once a
newer copy of a path is stored (or the path maps to another stored file), its earlier copies
are superseded: :func:`earlier_copies` finds them, and :func:`replace_plan` decides, against
a fresh listing, which may go: only a copy the listing still shows as that very file (same id,
name, size, purpose and ``created_at``: a server may give a deleted file's id to a later file),
and that nothing else maps to (another path's record, this run's results, a reported suspect).
Anything else is kept, with the reason. A record whose id the listing shows as another file
(:func:`impostors`) is not taken as uploaded either: the file is sent again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ._models import FileObject
from ._quota import fmt_time
from ._state import Record, StoredCopy

__all__ = ["ReplacePlan", "earlier_copies", "impostors", "replace_plan", "unlike"]


def unlike(copy: StoredCopy, f: FileObject) -> str | None:
    """Why the listed ``f`` (of the copy's id) is not provably the file stored as ``copy``;
    None when it is: same name, size, purpose and ``created_at``. Pure."""
    if (f.filename, f.bytes, f.purpose) != (copy.filename, copy.size, copy.purpose):
        return (f"the listing shows it as {f.filename!r}, {f.bytes:,} bytes, {f.purpose}, "
                "not the file stored")
    if copy.created_at is None:
        return "no creation time on record (an older kimi-files stored it): not provably it"
    if f.created_at != copy.created_at:
        return (f"the listing shows it created at {fmt_time(f.created_at)}, not at "
                f"{fmt_time(copy.created_at)}: another file under a reused id")
    return None


def impostors(records: Sequence[Record], listing: Sequence[FileObject],
              stored: Sequence[StoredCopy]) -> dict[str, str]:
    """The ids records map to that the listing shows as another file (id -> why): of
    another size or purpose, or unlike the copy on record (:func:`unlike`; a copy recorded
    without ``created_at`` is judged by the rest). Pure."""
    listed = {f.id: f for f in listing}
    copies = {c.file_id: c for c in stored}
    out: dict[str, str] = {}
    for r in records:
        f = listed.get(r.file_id or "")
        if f is None or r.status != "uploaded":
            continue
        copy = copies.get(f.id)
        if copy is not None and copy.created_at is not None:
            why = unlike(copy, f)
        elif (f.bytes, f.purpose) != (r.size, r.purpose):
            why = f"the listing shows it as {f.filename!r}, {f.bytes:,} bytes, {f.purpose}"
        else:
            why = None
        if why is not None:
            out[f.id] = why
    return out


def earlier_copies(current: Mapping[str, str],
                   stored: Sequence[StoredCopy]) -> list[StoredCopy]:
    """The copies this tool stored for a path of ``current`` (absolute path -> the file id
    it maps to now) other than that file: superseded. Pure."""
    return [c for c in stored if c.path in current and current[c.path] != c.file_id]


@dataclass(frozen=True, slots=True)
class ReplacePlan:
    """What :func:`replace_plan` decided."""

    #: (copy, the listed file): still that very file, nothing else maps to it: delete
    delete: tuple[tuple[StoredCopy, FileObject], ...] = ()
    #: (copy, why kept): the listing shows another file, or something else maps to it
    kept: tuple[tuple[StoredCopy, str], ...] = ()
    #: no longer listed: nothing to delete, forget it
    gone: tuple[StoredCopy, ...] = field(default_factory=tuple)


def replace_plan(copies: Sequence[StoredCopy], listing: Sequence[FileObject], *,
                 in_use: Collection[str], reused: Collection[str] = ()) -> ReplacePlan:
    """Which superseded copies may be deleted (see the module docstring). ``in_use``: ids
    something else maps to (every record's, this run's results', reported suspects');
    ``reused``: ids the reuse cache handed back for another document (a library upload,
    a ``--no-state`` run: no record says which). Pure."""
    listed = {f.id: f for f in listing}
    delete: list[tuple[StoredCopy, FileObject]] = []
    kept: list[tuple[StoredCopy, str]] = []
    gone: list[StoredCopy] = []
    for copy in copies:
        f = listed.get(copy.file_id)
        if f is None:
            gone.append(copy)
        elif copy.file_id in in_use:
            kept.append((copy, "another file maps to it"))
        elif copy.file_id in reused:
            kept.append((copy, "it was reused for another document (the reuse cache says so)"))
        elif (why := unlike(copy, f)) is not None:
            kept.append((copy, why))
        else:
            delete.append((copy, f))
    return ReplacePlan(tuple(delete), tuple(kept), tuple(gone))
