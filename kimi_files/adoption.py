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
  never compared with ``created_at``);
* an id nobody has claimed (no record of the state store, no other upload of this run).

:func:`resolve` then adopts a candidate only when the match is one-to-one: the attempt has
exactly one candidate and no other attempt could own it. Everything else is ambiguous: nothing
is adopted, nothing is deleted, and the candidates are reported as possible extra copies.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from .models import FileObject

__all__ = ["Attempt", "ServerClock", "Verdict", "could_be", "resolve", "stored_forms", "wire_name"]

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


def wire_name(filename: str) -> str:
    """The file name as httpx writes it into the multipart ``Content-Disposition``."""
    return _WIRE_RE.sub(lambda m: _WIRE[m.group(0)], filename)


def stored_forms(filename: str) -> frozenset[str]:
    """Every name a server may have stored for an upload of ``filename``. Pure."""
    sent = wire_name(filename)
    forms = {filename, sent}
    for mask in range(1, 1 << len(_DECODERS)):
        name = sent
        for bit, decode in enumerate(_DECODERS):
            if mask & (1 << bit):
                name = decode(name)
        forms.add(name)
    return frozenset(forms)


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
    if f.bytes != attempt.size or f.purpose != attempt.purpose:
        return False
    return f.filename in (forms if forms is not None else stored_forms(attempt.filename))


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

    A file is adopted for an attempt only when the attempt's start is known, the file is
    its only candidate, no other attempt could own it, and its status is not failed. Every
    other candidate is a suspect.
    """
    taken = set(claimed)
    pool = [f for f in listing if f.id not in taken]
    candidates: dict[K, list[FileObject]] = {}
    owners: dict[str, int] = {}
    for key, attempt in attempts.items():
        forms = stored_forms(attempt.filename)
        found = [f for f in pool if could_be(f, attempt, forms)]
        candidates[key] = sorted(found, key=lambda f: (f.created_at, f.id))
        for f in found:
            owners[f.id] = owners.get(f.id, 0) + 1
    verdicts: dict[K, Verdict] = {}
    for key, found in candidates.items():
        proven = attempts[key].since is not None
        if proven and len(found) == 1 and owners[found[0].id] == 1 and not found[0].failed:
            verdicts[key] = Verdict(adopted=found[0])
        else:
            verdicts[key] = Verdict(suspects=tuple(found))
    return verdicts


class ServerClock:
    """The server's time, as a lower bound, from the ``Date`` headers of its answers.

    An answer dated ``D`` (whole seconds, floored) was written at server time ``>= D``; ``t``
    local seconds after it arrived the server's time is ``>= D + t``. :meth:`now` gives the
    largest such bound over what was seen, in whole seconds, so a file the server creates
    later has ``created_at >= now()``. The local wall clock is never used. Thread-safe.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._seen: tuple[int, float] | None = None
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

    def now(self) -> int | None:
        """A lower bound of the server's time now (Unix seconds), or None if never seen."""
        with self._lock:
            seen = self._seen
        return None if seen is None else self._bound(seen, self._monotonic())
