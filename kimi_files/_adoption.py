"""Which stored file, if any, is provably the copy an upload stored: pure rules.

The Files API has no idempotency key and stores no checksum, so after a lost answer (or a
crash) the only evidence that a listed file is *ours* is circumstantial. kimi-files adopts a
file only when every piece of that evidence holds, and otherwise uploads again and says so:
an extra copy costs one slot and is reported; a wrong adoption loses a document silently.

A listed file *could be* the copy an attempt stored (:func:`could_be`) when it has

* the same purpose and the same size;
* a name equal to the one sent, in one of the forms a server may store it in
  (:func:`stored_forms`: multipart clients encode ``"``, ``\\`` and control characters, and a
  server may keep the encoded form, decode all of it, or decode part of it);
* a ``created_at`` no earlier than the attempt began, *by the server's clock*
  (:class:`ServerClock` keeps the server's time from its ``Date`` headers; the local clock is
  never compared with ``created_at``), and only while that clock is not known to disagree
  with the ``created_at`` the server gives our own uploads (:attr:`ServerClock.agrees`); an
  attempt on record for a later run (the state's ledger) is adopted by only when they were
  seen to agree in the run that made it (its ``proven`` mark);
* an id nobody has claimed (no record of the state store, no other upload of this run).

Beside these *strict* candidates, :func:`resolve` also looks for *loose* ones: any unclaimed
file of the same size and purpose whose name is equal after normalisation (Unicode form,
spaces at the ends, percent-decoding, case), whenever it was made. A server that stores names
or keeps time differently from what the rules expect then still has its copies found.

A candidate is adopted only when the match is one-to-one: the attempt's start is known, it
has exactly one loose candidate, that one is also a strict candidate, and no other attempt
(another upload in flight, or an interrupted one still on record) could own it. Everything
else is ambiguous: nothing is adopted, nothing is deleted, and the loose candidates are
reported as possible extra copies.
"""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import unquote

from ._models import FileObject
from ._quota import plausibly_dated

__all__ = ["Attempt", "AttemptRegistry", "ServerClock", "Verdict", "could_be", "could_be_loosely",
           "loose_forms", "loose_name", "resolve", "stored_forms", "wire_name"]

K = TypeVar("K", bound=Hashable)

# What httpx (and so the openai SDK) writes for a file name in a multipart header: the
# HTML5 form encoding. `"` becomes %22, `\` is doubled, and every C0 control character but
# ESC becomes %XX. Non-ASCII characters are sent as UTF-8, unchanged.
_WIRE = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
_WIRE_RE = re.compile("|".join(re.escape(c) for c in _WIRE))

# The decodings a server may apply to what it received (any subset of them).
_DECODERS: tuple[Callable[[str], str], ...] = (
    lambda s: s.replace("%22", '"'),
    lambda s: re.sub(r"\\(.)", r"\1", s),
    lambda s: re.sub("%(0[0-9A-F]|1[0-9A-F])", lambda m: chr(int(m.group(1), 16)), s),
    lambda s: s.replace("%0D", "\r").replace("%0A", "\n"),
)


def loose_name(name: str) -> str:
    """A name as a forgiving server might keep it: NFC, no spaces at the ends, case folded."""
    return unicodedata.normalize("NFC", name).strip().casefold()


def _plain(filename: str) -> bool:
    """No character the wire encoding or a server's decodings touch: its only stored form is
    itself (the common case, decided without trying every decoding)."""
    return filename.isprintable() and not any(c in filename for c in '"\\%')


def loose_forms(filename: str) -> frozenset[str]:
    """:func:`stored_forms` loosened (:func:`loose_name`), percent-decoded or not. Pure."""
    if _plain(filename):
        return frozenset({loose_name(filename)})
    forms = stored_forms(filename) | stored_forms(unicodedata.normalize("NFC", filename))
    return frozenset({loose_name(f) for f in forms} | {loose_name(unquote(f)) for f in forms})


def wire_name(filename: str) -> str:
    """The file name as httpx writes it into the multipart ``Content-Disposition``."""
    return _WIRE_RE.sub(lambda m: _WIRE[m.group(0)], filename)


def stored_forms(filename: str) -> frozenset[str]:
    """Every name a server may have stored for an upload of ``filename``. Pure."""
    if _plain(filename):
        return frozenset({filename})
    sent = wire_name(filename)
    forms = {filename, sent}
    for mask in range(1, 1 << len(_DECODERS)):
        name = sent
        for bit, decode in enumerate(_DECODERS):
            if mask & (1 << bit):
                name = decode(name)
        forms.add(name)
    return frozenset(forms)


def same_stored_name(said: str, stored: str) -> bool:
    """May ``said`` (a name an answer gives, such as a content document's) be the name of the
    file stored as ``stored``, in the forms a server may keep (:func:`loose_forms`)? Pure."""
    return said == stored or (bool(said) and bool(loose_forms(said) & loose_forms(stored)))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upload that may have been stored: what was sent, and when it began.

    ``since`` is the server's time (Unix seconds) at or before the first byte was sent; None
    when the server's time was never known, and then nothing can be adopted for it.
    """

    filename: str
    size: int
    purpose: str
    since: int | None


def could_be(f: FileObject, attempt: Attempt, forms: frozenset[str] | None = None) -> bool:
    """May ``f`` be the copy ``attempt`` stored? (Claims are checked by :func:`resolve`.)

    With no known start (``since`` None) any time matches: such a file can be reported as a
    possible copy, never adopted."""
    if attempt.since is not None and f.created_at < attempt.since:
        return False
    if attempt.since is not None and not plausibly_dated(f, attempt.since):
        return False  # no time it could have been made at (prune's rule): never adopted
    if f.bytes != attempt.size or f.purpose != attempt.purpose:
        return False
    return f.filename in (forms if forms is not None else stored_forms(attempt.filename))


def could_be_loosely(f: FileObject, attempt: Attempt, forms: frozenset[str] | None = None) -> bool:
    """May ``f`` be the copy ``attempt`` stored, stored by a server with other habits (names
    normalised, clocks apart)? Never enough to adopt; enough to report."""
    if f.bytes != attempt.size or f.purpose != attempt.purpose:
        return False
    keys = forms if forms is not None else loose_forms(attempt.filename)
    return loose_name(f.filename) in keys or loose_name(unquote(f.filename)) in keys


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`resolve` decided for one attempt.

    ``adopted``: the file provably stored by it (None: upload again). ``suspects``: files that
    may be copies it stored but cannot be proven so; never adopted, never deleted, reported.
    """

    adopted: FileObject | None = None
    suspects: tuple[FileObject, ...] = ()


def resolve(
    attempts: Mapping[K, Attempt], listing: Iterable[FileObject], claimed: Iterable[str] = ()
) -> dict[K, Verdict]:
    """Decide, for each attempt, the file it provably stored, if any. Pure.

    A file is adopted for an attempt only when the attempt's start is known, the file is its
    only loose candidate and a strict one, no other attempt could own it (loosely), and its
    status is not failed. Every other loose candidate is a suspect.
    """
    taken = set(claimed)
    pool = [f for f in listing if f.id not in taken]
    candidates: dict[K, list[FileObject]] = {}
    strict: dict[K, set[str]] = {}
    owners: dict[str, int] = {}
    for key, attempt in attempts.items():
        loose = loose_forms(attempt.filename)
        exact = stored_forms(attempt.filename)
        found = [f for f in pool if could_be_loosely(f, attempt, loose)]
        candidates[key] = sorted(found, key=lambda f: (f.created_at, f.id))
        strict[key] = {f.id for f in found if could_be(f, attempt, exact)}
        for f in found:
            owners[f.id] = owners.get(f.id, 0) + 1
    verdicts: dict[K, Verdict] = {}
    for key, found in candidates.items():
        proven = attempts[key].since is not None
        if (proven and len(found) == 1 and found[0].id in strict[key]
                and owners[found[0].id] == 1 and not found[0].failed):
            verdicts[key] = Verdict(adopted=found[0])
        else:
            verdicts[key] = Verdict(suspects=tuple(found))
    return verdicts


#: How far (seconds) the ``created_at`` of a file the server just stored for us may lie
#: outside what its ``Date`` headers allow (after the attempt began, before the answer was
#: dated) and the two still count as one clock: whole seconds on both sides, a gateway's
#: cached ``Date``.
CLOCK_TOLERANCE = 5


class ServerClock:
    """The server's time, as a lower bound, from the ``Date`` headers of its answers.

    An answer dated ``D`` (whole seconds, floored) was written at server time ``>= D``; ``t``
    local seconds after it arrived the server's time is ``>= D + t``. :meth:`now` gives the
    largest such bound over what was seen, in whole seconds, so a file the server creates
    later has ``created_at >= now()``. The local wall clock is never used. Thread-safe.

    Each file the server stores for us checks the ``Date`` clock against the clock of
    ``created_at`` (:meth:`observe_stored`): :attr:`agrees` is None until one was checked,
    then False for good once one disagreed by more than :data:`CLOCK_TOLERANCE`.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._seen: tuple[int, float] | None = None
        self._stored: tuple[int, float] | None = None  # from our own uploads' created_at
        self._agrees: bool | None = None
        self._lock = threading.Lock()

    def observe(self, server_seconds: int) -> None:
        """Note that the server's time was at least ``server_seconds`` now."""
        at = self._monotonic()
        with self._lock:
            if self._seen is None or server_seconds > self._bound(self._seen, at):
                self._seen = (server_seconds, at)

    def observe_date(self, header: str | None) -> None:
        """Note an HTTP ``Date`` header (ignored when missing or malformed)."""
        if not header:
            return
        try:
            seconds = parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if math.isfinite(seconds) and seconds > 0:
            self.observe(int(seconds))

    @staticmethod
    def _bound(seen: tuple[int, float], at: float) -> int:
        return seen[0] + max(0, math.floor(at - seen[1]))

    def observe_stored(self, created_at: int, since: int | None = None) -> int | None:
        """Note the ``created_at`` the server gave a file it just stored for us: the clock
        ``created_at`` is counted by, which a gateway's ``Date`` may run ahead of (or behind).

        ``since``: this clock's :meth:`now` when the upload began. The file was stored after
        that and before the answer (whose ``Date`` was just observed): a ``created_at``
        outside those bounds (with :data:`CLOCK_TOLERANCE`) means the clocks disagree.
        Returns, the first time they disagree, by how much (seconds: ``created_at`` minus the
        ``Date`` bound); else None."""
        at = self._monotonic()
        first: int | None = None
        with self._lock:
            if self._seen is not None:
                dated = self._bound(self._seen, at)
                ahead = created_at > dated + CLOCK_TOLERANCE
                behind = since is not None and created_at < since - CLOCK_TOLERANCE
                if (ahead or behind) and self._agrees is not False:
                    first = created_at - (dated if ahead or since is None else since)
                self._agrees = not (ahead or behind) and self._agrees is not False
            if self._stored is None or created_at > self._bound(self._stored, at):
                self._stored = (created_at, at)
        return first

    @property
    def agrees(self) -> bool | None:
        """Do the ``Date`` clock and the ``created_at`` clock agree? None: never checked
        (nothing stored for us yet, or no ``Date``); False once they disagreed."""
        with self._lock:
            return self._agrees

    def since(self) -> int | None:
        """The start of an attempt for adoption in this run: :meth:`now`, or None when the
        clocks are known to disagree (then nothing is adopted by time)."""
        return None if self.agrees is False else self.now()

    def now(self) -> int | None:
        """A lower bound of the server's time now (Unix seconds), or None if never seen.

        Once the server has stored a file for us, the bound never passes what its storage
        clock says (a ``Date`` header that runs ahead cannot make our own copies look older
        than the attempt that sent them)."""
        at = self._monotonic()
        with self._lock:
            bounds = [self._bound(seen, at) for seen in (self._seen, self._stored) if seen]
        return min(bounds) if bounds else None


#: How long an attempt whose copy was never identified may still own one: until the server's
#: time is this far past its start (the service answers, or gives up with a 504, within 5
#: minutes, so no copy can land later).
GHOST_TTL = 900


class AttemptRegistry:
    """One client's uploads that could own a stored copy: those in flight, and those whose
    copy was never identified (a lost answer the client uploaded again after). Every
    reconciliation of the client counts them as possible owners, so two uploads of look-alike
    files at once (threads, tasks) can never take each other's copy. Also the ids the
    client's uploads have claimed (their own answers, their adoptions). Thread-safe.

    An unidentified attempt is forgotten once the server's time has moved ``ttl`` seconds past
    its start: the service answers within 5 minutes, so no copy of it can land later.
    """

    def __init__(self, ttl: float = GHOST_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._open: dict[int, Attempt] = {}
        self._claimed: set[str] = set()
        self._owned: set[str] = set()  # ids that came in our own answers: provably ours
        self._running: set[int] = set()  # uploads still going
        self._seq = 0

    def open(self, attempt: Attempt, server_now: int | None = None) -> int:
        """Register an attempt about to be sent; its token."""
        with self._lock:
            if server_now is not None:
                old = [k for k, a in self._open.items()
                       if a.since is not None and a.since < server_now - self.ttl]
                for k in old:
                    del self._open[k]
            self._seq += 1
            self._open[self._seq] = attempt
            self._running.add(self._seq)
            return self._seq

    def finish(self, token: int) -> None:
        """The upload is over (stored, or given up): it is no longer running."""
        with self._lock:
            self._running.discard(token)

    def running_others(self, token: int) -> dict[int, Attempt]:
        """The other uploads of this client still going (their answers may yet prove a
        file theirs)."""
        with self._lock:
            return {k: self._open[k] for k in self._running if k != token and k in self._open}

    def settle(self, token: int) -> None:
        """Every copy of this attempt is accounted for: it owns nothing more."""
        with self._lock:
            self._open.pop(token, None)

    def others(self, token: int) -> dict[int, Attempt]:
        """The other attempts that could own a copy."""
        with self._lock:
            return {k: a for k, a in self._open.items() if k != token}

    def claim(self, file_id: str) -> bool:
        """Atomically claim ``file_id``; False when an upload of this client has it."""
        with self._lock:
            if file_id in self._claimed:
                return False
            self._claimed.add(file_id)
            return True

    def claimed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._claimed)

    def own(self, file_id: str) -> None:
        """``file_id`` came in the answer to one of this client's uploads: it is that
        upload's own, whatever another upload suspected of it."""
        with self._lock:
            self._claimed.add(file_id)
            self._owned.add(file_id)

    def owned(self) -> frozenset[str]:
        """The ids that came in the answers to this client's uploads."""
        with self._lock:
            return frozenset(self._owned)
