"""The state store's ledger: the attempts whose copy has not been identified yet (an upload
begun may still land, and its copy must never be taken for another file's), the suspects
already reported (never adopted later), and the copies this tool stored (the only ones
``--replace`` may delete). :class:`Ledger` is the part of
:class:`~kimi_files._state.StateStore` that reads and writes them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._schema import _key

if TYPE_CHECKING:
    import sqlite3

    from ._adoption import Attempt

__all__ = ["Ledger", "OpenAttempt", "StoredCopy"]


@dataclass(frozen=True, slots=True)
class OpenAttempt:
    """An upload begun whose copy has not been identified: it may be on the server, or may
    still land there."""

    id: int
    path: str
    filename: str
    size: int
    purpose: str
    #: The server's clock (Unix seconds) when it began; None if unknown.
    server_time: int | None
    #: The local wall clock when it began (only ever compared with the local wall clock).
    started: float
    #: ``server_time`` was taken by a server whose clocks were seen to agree (``Date`` and
    #: the ``created_at`` of our own uploads): only then may a copy be adopted by it.
    proven: bool = True

    @property
    def attempt(self) -> Attempt:
        """What the adoption rules need of it (no start when it is not proven)."""
        from ._adoption import Attempt

        return Attempt(self.filename, self.size, self.purpose,
                       self.server_time if self.proven else None)


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """A file this tool stored for ``path``: its id came in our own upload answer."""

    file_id: str
    path: str
    filename: str
    size: int
    purpose: str
    #: The ``created_at`` our answer gave (None: recorded by an older kimi-files). A server
    #: may hand a deleted file's id to a later file: the id alone proves nothing.
    created_at: int | None = None


class Ledger:
    """The ledger's rows, for :class:`~kimi_files._state.StateStore` (which provides the
    connection)."""

    def _using(self) -> AbstractContextManager[sqlite3.Connection]:
        """The connection, under the store's lock (see ``StateStore._using``)."""
        raise NotImplementedError

    def note_stored(self, path: str | os.PathLike[str], *, file_id: str, filename: str,
                    size: int, purpose: str, created_at: int | None = None) -> None:
        """Remember a file whose id came in this tool's own upload answer for ``path`` (the
        only kind ``--replace`` may delete once a newer copy of the path is stored)."""
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO stored (file_id, path, filename, size, purpose, "
                       "recorded, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (file_id, _key(path), filename, size, purpose, time.time(), created_at))

    def stored(self) -> list[StoredCopy]:
        """Every file remembered by :meth:`note_stored`, oldest first."""
        with self._using() as db:
            rows = db.execute("SELECT file_id, path, filename, size, purpose, created_at "
                              "FROM stored "
                              "ORDER BY recorded, file_id").fetchall()
        return [StoredCopy(r[0], os.fsdecode(r[1]), *r[2:]) for r in rows]

    def forget_stored(self, file_ids: Iterable[str]) -> None:
        """Forget stored files (deleted, or gone from the server)."""
        with self._using() as db:
            db.executemany("DELETE FROM stored WHERE file_id = ?", [(f,) for f in file_ids])

    def attempts(self) -> list[OpenAttempt]:
        """The ledger: every attempt whose copy has not been identified, oldest first."""
        with self._using() as db:
            rows = db.execute("SELECT id, path, filename, size, purpose, server_time, started, "
                              "proven FROM attempts ORDER BY id").fetchall()
        return [OpenAttempt(r[0], os.fsdecode(r[1]), r[2], r[3], r[4], r[5], r[6], bool(r[7]))
                for r in rows]

    def prove(self, attempt_ids: Iterable[int], proven: bool = True) -> None:
        """Mark attempts of this run as begun by a server clock seen to agree with the
        ``created_at`` of our own uploads (or, ``proven=False``, found to disagree)."""
        with self._using() as db:
            db.executemany("UPDATE attempts SET proven = ? WHERE id = ?",
                           [(int(proven), i) for i in attempt_ids])

    def settle(self, attempt_ids: Iterable[int]) -> None:
        """Take attempts out of the ledger: their copies are accounted for, or can no longer
        land."""
        with self._using() as db:
            db.executemany("DELETE FROM attempts WHERE id = ?", [(i,) for i in attempt_ids])

    def suspects(self) -> set[str]:
        """The ids of every file reported as a possible extra copy (never adopted)."""
        with self._using() as db:
            return {r[0] for r in db.execute("SELECT file_id FROM suspects")}

    def note_suspects(self, found: Iterable[tuple[str, str]]) -> None:
        """Remember reported files, as (path, file id), so that none is ever adopted."""
        with self._using() as db:
            db.executemany(
                "INSERT OR IGNORE INTO suspects (file_id, path, noted) VALUES (?, ?, ?)",
                [(fid, _key(path), time.time()) for path, fid in found])

    def forget_suspects(self, file_ids: Iterable[str]) -> None:
        """Forget reported files that are gone from the server."""
        with self._using() as db:
            db.executemany("DELETE FROM suspects WHERE file_id = ?", [(f,) for f in file_ids])
