"""Earlier copies of changed files: which this tool stored before, and which ``--replace``
deletes. Pure.

The server keeps every upload: a file uploaded, changed and uploaded again is stored twice.
The state remembers each file whose id came in this tool's own upload answer, by path
(:meth:`kimi_files.state.StateStore.note_stored`; never an adopted or a reused one). Once a
newer copy of a path is stored (or the path maps to another stored file), its earlier copies
are superseded: :func:`earlier_copies` finds them, and :func:`replace_plan` decides, against
a fresh listing, which may go: only a copy the listing still shows as that very file (same id,
name, size and purpose), and that nothing else maps to (another path's record, this run's
results, a reported suspect). Anything else is kept, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .models import FileObject
from .state import StoredCopy

__all__ = ["ReplacePlan", "earlier_copies", "replace_plan"]


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
                 in_use: Collection[str]) -> ReplacePlan:
    """Which superseded copies may be deleted (see the module docstring). ``in_use``: ids
    something else maps to (every record's, this run's results', reported suspects'). Pure."""
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
        elif (f.filename, f.bytes, f.purpose) != (copy.filename, copy.size, copy.purpose):
            kept.append((copy, f"the listing shows it as {f.filename!r}, {f.bytes:,} bytes, "
                               f"{f.purpose}, not the file stored"))
        else:
            delete.append((copy, f))
    return ReplacePlan(tuple(delete), tuple(kept), tuple(gone))
