"""After an upload's answer was lost: find the copy it stored, adopt it only when provably ours.

:class:`Claims` are the file ids no reconciliation may adopt (known before an upload began, or
taken by this run's uploads); :class:`_Reconciler` lists the account after a lost answer
(again after :data:`RELIST_WAITS`) and adopts a copy only when
:func:`kimi_files._adoption.resolve` proves it this attempt's, else reports what may be an extra
copy of ours as a suspect; :func:`_without_siblings` drops the suspects the client's other
uploads prove their own. Used by :func:`kimi_files._uploader.send_steps`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence

from ._adoption import Attempt, Verdict, could_be_loosely, resolve
from ._models import FileList, FileObject
from ._steps import ClientLike, ListFiles, Say, Steps, Wait
from .errors import KimiError, UploadCancelledError

__all__ = ["RELIST_WAITS", "SIBLING_PATIENCE", "Claims"]

#: Pauses between the listings that look for the copy of an attempt whose answer was lost in
#: transit (a time-out, a dropped connection, a gateway error): the server may still be
#: extracting it, and stores it only then.
RELIST_WAITS = (1.0, 2.0, 4.0)


class Claims:
    """File ids known before an upload began or taken by uploads of this run (thread-safe).

    A lost-response reconciliation may only adopt a file nobody else has claimed.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids = set(ids)
        self._lock = threading.Lock()

    def snapshot(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._ids)

    def add(self, file_id: str) -> None:
        with self._lock:
            self._ids.add(file_id)



class _Reconciler:
    """Looks for the copy a lost attempt stored and adopts it only when it is provably ours:
    every other attempt that could own it (the client's other uploads in flight or never
    identified, and ``ghosts``: interrupted uploads on record) is counted against it."""

    def __init__(self, client: ClientLike, attempt: Attempt, claims: Claims, shown: str,
                 stop: threading.Event | None, ghosts: Mapping[int, Attempt]) -> None:
        self.registry = client.attempts
        self.clock = client.clock
        self.token = self.registry.open(attempt, client.clock.now())
        self.attempt = attempt
        self.claims = claims
        self.shown = shown
        self.stop = stop
        self.ghosts = ghosts
        self.suspects: dict[str, FileObject] = {}
        self.attempts = 0  # attempts made
        #: the error of an attempt whose answer was lost: its copy may be on the server
        self.pending: KimiError | None = None
        #: an attempt lost its answer and its copy was never identified
        self.unresolved = False
        #: a request is being sent (a cancellation now may leave a copy on the server)
        self.in_flight = False

    @property
    def maybe_stored(self) -> bool:
        """May a copy of this upload be on the server (or land there) unaccounted for?"""
        return self.unresolved or self.pending is not None

    def _verdict(self, listing: Sequence[FileObject]) -> Verdict:
        owners: dict[Hashable, Attempt] = {("ghost", k): a for k, a in self.ghosts.items()}
        owners.update({("other", k): a for k, a in self.registry.others(self.token).items()})
        # clocks found to disagree since the attempt began: its start proves nothing
        owners[self] = (self.attempt if self.clock.agrees is not False
                        else dataclasses.replace(self.attempt, since=None))
        claimed = self.claims.snapshot() | self.registry.claimed()
        return resolve(owners, listing, claimed)[self]

    def claim(self, file_id: str) -> bool:
        """Claim a file for this upload (client-wide and in this run's claims)."""
        if not self.registry.claim(file_id):
            return False
        self.claims.add(file_id)
        return True

    def look(self, *, relist: bool) -> Steps[FileObject | None]:
        """List the account (again after short pauses when ``relist``); the adopted file."""
        for looks, pause in enumerate((0.0, *(RELIST_WAITS if relist else ()))):
            if looks == 1:  # said once, before the first pause: it costs the user time
                yield Say.warning("%s: looking for the copy a lost answer may have stored: listing "
                            "again for up to %g s", self.shown, sum(RELIST_WAITS))
            if pause and not (yield Wait(pause, stop=self.stop)):
                raise UploadCancelledError(f"{self.shown}: cancelled while looking for the "
                                           "copy a lost answer may have stored")
            listing: FileList = yield ListFiles()
            verdict = self._verdict(listing.data)
            if verdict.adopted is not None and self.claim(verdict.adopted.id):
                yield Say.info("%s: the answer was lost but the server stored it as %s; adopted",
                               self.shown, verdict.adopted.id)
                return verdict.adopted
            if verdict.suspects:
                yield from self.suspect(verdict.suspects)
                return None  # ambiguous: upload again; waiting longer proves nothing more
        return None

    def suspect(self, files: Iterable[FileObject]) -> Steps[None]:
        """Note files that may be copies of this upload: never adopted by it (they join its
        own claims), but not claimed client-wide, so that another upload of this client whose
        answer brings one of these ids still owns it, and it is not reported then."""
        owned = self.registry.owned()
        for f in files:
            if f.id not in self.suspects and f.id not in owned:
                self.claims.add(f.id)
                self.suspects[f.id] = f
                yield Say.warning(
                    "%s: %s (%s, %d bytes, created_at %d) may be a copy an earlier attempt "
                    "stored, or someone else's file; it cannot be proven ours, so it is kept "
                    "and the file is uploaded again (remove it with: kimi-files delete %s)",
                    self.shown, f.id, f.filename, f.bytes, f.created_at, f.id)

    def late_twins(self) -> Steps[None]:
        """After the upload succeeded: report copies an earlier lost attempt stored late."""
        listing: FileList = yield ListFiles()
        verdict = self._verdict(listing.data)
        yield from self.suspect(c for c in (verdict.adopted, *verdict.suspects)
                                if c is not None)


#: How long an upload waits, at most, for the client's other uploads still going to prove
#: their own the files it suspects, before it reports them.
SIBLING_PATIENCE = 10.0


def _without_siblings(lost: _Reconciler, suspects: tuple[FileObject, ...],
                      stop: threading.Event | None) -> Steps[tuple[FileObject, ...]]:
    """The suspects, less those another upload of this client proves its own (by its
    answer); while one that may still do so is running, wait for it (bounded)."""
    waited = 0.0
    while True:
        owned = lost.registry.owned()
        left = tuple(f for f in suspects if f.id not in owned)
        rivals = lost.registry.running_others(lost.token).values()
        undecided = [f for f in left if any(could_be_loosely(f, a) for a in rivals)]
        if not undecided or waited >= SIBLING_PATIENCE:
            return left
        if not (yield Wait(0.05, stop=stop, real=True)):
            return left
        waited += 0.05
