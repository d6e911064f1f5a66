"""Local state of batch uploads: what was sent, so a re-run resumes and never duplicates.

One SQLite file per account and base URL (the account is named by a short hash of the key,
never the key), by default ``$KIMI_FILES_STATE_DIR`` or ``$XDG_STATE_HOME/kimi-files`` or
``~/.local/state/kimi-files``, file ``<host>_<port>-<keyhash>.sqlite3``.

Each file gets a row *before* its upload starts (``pending``: the intent) and is marked
``uploaded`` with its file id once the server answered. After a crash (even SIGKILL) a
``pending`` row says "this may be on the server": the next run looks for it there before
sending again. Every change is its own committed transaction in WAL mode, so the store
survives a kill at any moment.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import sqlite3

__all__ = ["Record", "StateStore", "default_state_path", "sha256_of"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path      BLOB PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    filename  TEXT NOT NULL,
    file_id   TEXT,
    status    TEXT NOT NULL CHECK (status IN ('pending', 'uploaded')),
    updated   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_sha ON uploads (sha256);
"""


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    filename: str
    file_id: str | None
    status: str


def sha256_of(path: Path, chunk: int = 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_state_dir() -> Path:
    explicit = os.environ.get("KIMI_FILES_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "kimi-files"


def default_state_path(base_url: str, api_key: str) -> Path:
    """The state file for this account (a hash of the key) and base URL."""
    parts = urlsplit(base_url)
    where = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.hostname}_{parts.port or parts.scheme}")
    account = hashlib.sha256(api_key.encode()).hexdigest()[:12]
    return default_state_dir() / f"{where}-{account}.sqlite3"


def _key(path: str | os.PathLike[str]) -> bytes:
    """Rows are keyed by the absolute path, as bytes (any file name survives)."""
    return os.fsencode(os.path.abspath(path))


class StateStore:
    """The SQLite store (thread-safe; one connection guarded by a lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import sqlite3  # here, not at the top: a run without state does not pay for it

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection = sqlite3.connect(os.fspath(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _row(row: tuple[bytes, int, int, str, str, str | None, str]) -> Record:
        return Record(os.fsdecode(row[0]), row[1], row[2], row[3], row[4], row[5], row[6])

    def get(self, path: str | os.PathLike[str]) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT path, size, mtime_ns, sha256, filename, file_id, status FROM uploads "
                "WHERE path = ?", (_key(path),)).fetchone()
        return self._row(row) if row else None

    def records(self) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, sha256, filename, file_id, status FROM uploads "
                "ORDER BY path").fetchall()
        return [self._row(r) for r in rows]

    def begin(self, path: str | os.PathLike[str], *, size: int, mtime_ns: int, sha256: str,
              filename: str) -> None:
        """Record the intent to upload, before the first byte is sent."""
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads (path, size, mtime_ns, sha256, filename, file_id, status, "
                "updated) VALUES (?, ?, ?, ?, ?, NULL, 'pending', ?) ON CONFLICT(path) DO UPDATE "
                "SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, "
                "filename=excluded.filename, file_id=NULL, status='pending', "
                "updated=excluded.updated",
                (_key(path), size, mtime_ns, sha256, filename, time.time()))

    def done(self, path: str | os.PathLike[str], *, size: int, mtime_ns: int, sha256: str,
             filename: str, file_id: str) -> None:
        """Record a file stored on the server."""
        with self._lock:
            self._db.execute(
                "INSERT INTO uploads (path, size, mtime_ns, sha256, filename, file_id, status, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, 'uploaded', ?) ON CONFLICT(path) DO UPDATE "
                "SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, "
                "filename=excluded.filename, file_id=excluded.file_id, status='uploaded', "
                "updated=excluded.updated",
                (_key(path), size, mtime_ns, sha256, filename, file_id, time.time()))

    def integrity_ok(self) -> bool:
        with self._lock:
            return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
