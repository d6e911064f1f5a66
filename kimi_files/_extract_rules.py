"""The decisions of :mod:`kimi_files._extraction`, with no I/O.

* :func:`window_for`: how many of the run's files may be on the server at once (what the
  account's free slots allow, never more; at most what the caller asked for).
* :func:`admit`: may a document be uploaded now, later (once the run has deleted some of its
  files), or never (it cannot fit however many the run deletes)?
* :func:`deletes_after_text`: is the file used for a document deleted once its text is saved?
* :func:`leftovers`: which files a killed run left on the server are provably its own (to
  delete), and which cannot be proven so (reported, never deleted).
* :func:`status_of`: the status of a document's line for the error that ended it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._adoption import Attempt, could_be, resolve
from ._models import FileObject
from ._planner import _expired
from ._quota import Usage, fmt_bytes
from ._state import OpenAttempt, Record
from .errors import KimiError, NoExtractableTextError, PreflightError

__all__ = ["Cleanup", "Origin", "Status", "admit", "deletes_after_text", "leftovers",
           "no_room_message", "status_of", "window_for"]

#: ``ok`` (the text), ``no_text`` (the service found no text: a scanned PDF), ``refused``
#: (refused before sending: the local checks, or no room), ``failed`` (anything else).
Status = Literal["ok", "no_text", "refused", "failed"]
#: Where a document's text came from: a file this run stored, one it adopted after a lost
#: answer (provably its own), one the account held already (reused), or the local text
#: cache (no file at all).
Origin = Literal["stored", "adopted", "reused", "cached"]


def status_of(error: KimiError) -> Status:
    """The line's status for the error that ended a document."""
    if isinstance(error, NoExtractableTextError):
        return "no_text"
    if isinstance(error, PreflightError):
        return "refused"
    return "failed"


def window_for(usage: Usage, requested: int | None) -> int:
    """The run's window: at most ``requested`` files (when given) of its own on the server at
    once, and never more than the account's free slots."""
    free = usage.free_files
    return free if requested is None else max(0, min(requested, free))


def admit(size: int, *, held_files: int, held_bytes: int, window: int, free_bytes: int,
          releases: bool) -> Literal["now", "wait", "never"]:
    """May a document of ``size`` bytes be uploaded, with ``held_files`` of the run's files
    (``held_bytes`` in all) on the server?

    ``now`` when it fits the window and the free bytes; ``wait`` when it will once the run
    deletes some of its files (``releases``: the run deletes them; with ``keep`` it does
    not); ``never`` when it cannot fit whatever the run deletes."""
    if window <= 0 or size > free_bytes:
        return "never"
    if held_files < window and held_bytes + size <= free_bytes:
        return "now"
    return "wait" if releases and held_files > 0 else "never"


def deletes_after_text(origin: Origin, keep: bool) -> bool:
    """Is the file a document's text came from deleted once the text is saved? Only a file
    this run stored (its id came in its own answer) or provably adopted, and only without
    ``keep``. A file the account already held is never deleted."""
    return not keep and origin in ("stored", "adopted")


def no_room_message(usage: Usage, what: str) -> str:
    """Why nothing of the run can be sent: the account's quota, in numbers."""
    return (f"no room for {what}: the account holds {usage.files:,} of {usage.max_files:,} "
            f"files and {fmt_bytes(usage.bytes)} of {fmt_bytes(usage.max_bytes)}, so not one "
            "file can be uploaded (the Files API keeps at most 1,000 files and 10 GB per "
            "account); nothing was sent or deleted. Delete files you no longer need "
            "(kimi-files delete, kimi-files prune) and run it again")


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What :func:`leftovers` decided about what a killed run left."""

    #: provably the run's own: the id came in its answer, or the adoption rules prove it
    delete: tuple[FileObject, ...] = ()
    #: (path, file) that may be a killed run's copy but cannot be proven so: never deleted
    suspects: tuple[tuple[str, FileObject], ...] = ()
    #: attempts of the ledger whose copies are accounted for, or can no longer land
    settle: tuple[int, ...] = ()
    #: paths whose record can go (their file deleted or gone, and no attempt open)
    forget: tuple[str, ...] = ()
    #: attempts still open: a copy may still land, so they own look-alikes for now
    open: tuple[OpenAttempt, ...] = ()


def leftovers(records: Sequence[Record], ledger: Sequence[OpenAttempt],
              listing: Sequence[FileObject], claimed: Iterable[str], *,
              server_now: int | None, wall_now: float | None) -> Cleanup:
    """What earlier (killed) runs left: their records (``uploaded`` with an id that came in
    their answer, or ``pending``: the intent) and their open attempts, against the listing.

    A recorded id still listed is deleted. The open attempts of one document (runs killed
    one after the other each tried it) are weighed as one owner, from the earliest start:
    their copies are deleted only under the proof adoption uses
    (:func:`~kimi_files._adoption.resolve`), widened from one attempt to ``k``: at most ``k``
    candidates, even counting loose matches, each a strict one, none of them a candidate of
    another document, none claimed (``claimed``: ids known to be someone else's). Every other
    candidate is a suspect, reported and kept. As many attempts as copies were found are
    settled (the others may still land one); one too old for a copy to land any more too."""
    listed = {f.id: f for f in listing}
    recorded = {r.file_id for r in records if r.file_id}
    delete = [listed[r.file_id] for r in records
              if r.status == "uploaded" and r.file_id in listed]
    groups: dict[tuple[str, str, int, str], list[OpenAttempt]] = {}
    for a in ledger:
        groups.setdefault((a.path, a.filename, a.size, a.purpose), []).append(a)
    merged = {key: _together(group) for key, group in groups.items()}
    verdicts = resolve(merged, listing, {*claimed, *recorded})
    owners = Counter(f.id for v in verdicts.values() for f in (v.adopted, *v.suspects)
                     if f is not None)
    settle: list[int] = []
    suspects: list[tuple[str, FileObject]] = []
    still: list[OpenAttempt] = []
    taken = {f.id for f in delete}
    for key, group in groups.items():
        verdict = verdicts[key]
        found = [f for f in (verdict.adopted, *verdict.suspects) if f is not None]
        attempt = merged[key]
        ours = (attempt.since is not None and len(found) <= len(group)
                and all(could_be(f, attempt) and owners[f.id] == 1 and not f.failed
                        and f.id not in taken for f in found))
        if ours and found:
            taken.update(f.id for f in found)
            delete.extend(found)
        else:
            suspects.extend((key[0], f) for f in found)
        landed = len(found) if ours else 0
        for i, a in enumerate(sorted(group, key=lambda a: a.id)):
            if i < landed or _expired(a, server_now, wall_now):
                settle.append(a.id)
            else:
                still.append(a)
    open_paths = {a.path for a in still}
    forget = tuple(dict.fromkeys(r.path for r in records if r.path not in open_paths))
    return Cleanup(tuple(delete), tuple(suspects), tuple(settle), forget, tuple(still))


def _together(group: Sequence[OpenAttempt]) -> Attempt:
    """The attempts of one document as one: from the earliest start (unknown if any is)."""
    starts = [a.server_time for a in group]
    first = group[0]
    since = None if any(t is None for t in starts) else min(t for t in starts if t is not None)
    return Attempt(first.filename, first.size, first.purpose, since)
