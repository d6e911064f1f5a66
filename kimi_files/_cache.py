"""The reuse cache: which stored file holds which content, and what its text was.

One small SQLite file per account and base URL (beside the state store, same naming: a hash of
the key, never the key): ``<host>_<port>-<keyhash>.cache.sqlite3``. Unlike the state store it
takes no lock: the library, the CLI and several processes use it at once (WAL, short
transactions, every write an ``INSERT OR IGNORE``/``REPLACE``), so a document uploaded from a
script is reused by the CLI and the other way round.

* ``files``: (sha256, purpose) -> the file ids that were stored with that content and purpose,
  with the name and size they were stored under. An entry is only a hint: before a file is
  reused, the account's listing must still show it with the same size and purpose
  (:func:`pick`), so a file deleted on the server is uploaded again, never handed back dead.
* ``reused``: the file ids handed back for another document (a reuse): ``--replace`` never
  deletes one, since a document it knows nothing of may depend on it.
* ``texts``: sha256 -> the whole JSON text of ``files.content`` for that content (one content
  call per document per account, ever).
* ``tokens``: (sha256 of a list of messages, model) -> its estimated tokens (one estimate per
  document and model, ever; see :mod:`kimi_files._tokens`).

Every failure is a :class:`~kimi_files.errors.CacheError` naming the file and the way out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CacheError

if TYPE_CHECKING:
    import sqlite3

    from ._models import FileObject

__all__ = ["CacheEntry", "ReuseCache", "cache_path_for", "pick", "prove_ours",
           "remove_cache_files"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    sha256   TEXT NOT NULL,
    purpose  TEXT NOT NULL,
    file_id  TEXT NOT NULL,
    filename TEXT NOT NULL,
    size     INTEGER NOT NULL,
    recorded REAL NOT NULL,
    PRIMARY KEY (sha256, purpose, file_id)
);
CREATE INDEX IF NOT EXISTS files_id ON files (file_id);
CREATE TABLE IF NOT EXISTS tokens (
    sha256   TEXT NOT NULL,
    model    TEXT NOT NULL,
    count    INTEGER NOT NULL,
    recorded REAL NOT NULL,
    PRIMARY KEY (sha256, model)
);
CREATE TABLE IF NOT EXISTS reused (
    file_id  TEXT PRIMARY KEY,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS texts (
    sha256   TEXT PRIMARY KEY,
    file_id  TEXT NOT NULL,
    body     TEXT NOT NULL,
    recorded REAL NOT NULL
);
"""
from ._config import CACHE_APPLICATION_ID as APPLICATION_ID  # noqa: E402

WAY_OUT = ("Empty it (kimi-files cache clear, which also removes a damaged one it can tell is "
           "its own) or do without it (reuse=False, --no-reuse).")
#: The first bytes of every SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _ours(application_id: int, tables: set[str]) -> bool:
    """Is a database with this ``application_id`` and these tables a kimi-files reuse cache?
    Ours carry :data:`APPLICATION_ID`; one made before it was set has none and no table but
    ours. Pure."""
    return application_id == APPLICATION_ID or (application_id == 0
                                                and tables <= {"files", "texts", "tokens",
                                                               "reused"})


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored file known to hold some content, for some purpose."""

    sha256: str
    purpose: str
    file_id: str
    filename: str
    size: int


def cache_path_for(state_path: Path) -> Path:
    """The cache beside a state store of the default location (same account, same name)."""
    return state_path.with_name(state_path.name.removesuffix(".sqlite3") + ".cache.sqlite3")


def cache_files(path: Path) -> tuple[Path, ...]:
    """The cache file and the journal files SQLite keeps beside it."""
    return (path, Path(f"{path}-wal"), Path(f"{path}-shm"))


def pick(entries: Iterable[CacheEntry], listing: Sequence[FileObject], *, size: int,
         purpose: str) -> tuple[CacheEntry, FileObject] | None:
    """The first cached file the account still lists with this size and purpose. Pure."""
    by_id = {f.id: f for f in listing}
    for entry in entries:
        f = by_id.get(entry.file_id)
        if (f is not None and entry.purpose == purpose and f.purpose == purpose
                and f.bytes == size == entry.size and not f.failed):
            return entry, f
    return None


class ReuseCache:
    """The cache file (thread-safe; several processes may share it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import sqlite3

        self.path = Path(path).absolute()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(os.fspath(self.path), check_same_thread=False,
                                 isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(f"cannot be opened ({exc})") from None
        try:
            app = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not _ours(app, tables):
                raise self._error("is not a kimi-files reuse cache; leave it alone, or point "
                                  "the cache elsewhere")
            db.execute("PRAGMA journal_mode=WAL")
            # a hint, not a record: a power cut may lose the last entries, never corrupt it;
            # no sync to disk on every upload
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except sqlite3.Error as exc:
            db.close()
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise self._error(f"cannot be written: the file or its folder is read-only "
                                  f"({exc})") from None
            raise self._error(f"is damaged or not an SQLite database ({exc})") from None
        except CacheError:
            db.close()
            raise
        self._db: sqlite3.Connection | None = db

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the cache keeps (to leave out when walking folders)."""
        return cache_files(self.path)

    def _error(self, problem: str) -> CacheError:
        return CacheError(f"reuse cache {self.path} {problem}. {WAY_OUT}", path=str(self.path))

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        import sqlite3

        with self._lock:
            if self._db is None:
                raise self._error("is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._error(f"cannot be used ({exc})") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> ReuseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files ----------------------------------------------------------------------------

    def lookup(self, sha256: str, purpose: str) -> list[CacheEntry]:
        """The files recorded with this content and purpose, newest first."""
        with self._using() as db:
            rows = db.execute(
                "SELECT sha256, purpose, file_id, filename, size FROM files "
                "WHERE sha256 = ? AND purpose = ? ORDER BY recorded DESC",
                (sha256, purpose)).fetchall()
        return [CacheEntry(*r) for r in rows]

    def ids_of_size(self, size: int, purpose: str) -> set[str]:
        """The ids of the files recorded with this size and purpose (a reuse is possible only
        then: the content's hash is worth taking only if one is still listed)."""
        with self._using() as db:
            rows = db.execute("SELECT file_id FROM files WHERE size = ? AND purpose = ?",
                              (size, purpose)).fetchall()
        return {r[0] for r in rows}

    def entries(self) -> list[CacheEntry]:
        """Every file recorded, newest first."""
        with self._using() as db:
            rows = db.execute("SELECT sha256, purpose, file_id, filename, size FROM files "
                              "ORDER BY recorded DESC").fetchall()
        return [CacheEntry(*r) for r in rows]

    def remember(self, sha256: str, purpose: str, file_id: str, filename: str,
                 size: int) -> None:
        """Record that ``file_id`` holds this content, stored for ``purpose``."""
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                       (sha256, purpose, file_id, filename, size, time.time()))

    def forget(self, file_ids: Iterable[str]) -> None:
        """Forget files (deleted on the server, or found gone)."""
        ids = [(i,) for i in file_ids]
        with self._using() as db:
            db.executemany("DELETE FROM files WHERE file_id = ?", ids)
            db.executemany("DELETE FROM reused WHERE file_id = ?", ids)

    def note_reused(self, file_id: str) -> None:
        """Record that ``file_id`` was handed back for another document (a reuse)."""
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO reused VALUES (?, ?)", (file_id, time.time()))

    def reused_ids(self) -> set[str]:
        """Every file id ever handed back for another document (and not forgotten)."""
        with self._using() as db:
            return {r[0] for r in db.execute("SELECT file_id FROM reused")}

    # --- texts ----------------------------------------------------------------------------

    def text(self, sha256: str) -> str | None:
        """The whole JSON text of ``content`` for this content, if it was fetched before."""
        with self._using() as db:
            row = db.execute("SELECT body FROM texts WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else str(row[0])

    def remember_text(self, sha256: str, file_id: str, body: str) -> None:
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO texts VALUES (?, ?, ?, ?)",
                       (sha256, file_id, body, time.time()))

    def token_count(self, sha256: str, model: str) -> int | None:
        """The tokens a message of this content was estimated at for ``model``, if it was."""
        with self._using() as db:
            row = db.execute("SELECT count FROM tokens WHERE sha256 = ? AND model = ?",
                             (sha256, model)).fetchone()
        return None if row is None else int(row[0])

    def remember_tokens(self, sha256: str, model: str, count: int) -> None:
        with self._using() as db:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?)",
                       (sha256, model, count, time.time()))

    def counts(self) -> tuple[int, int]:
        """(files, texts) recorded."""
        with self._using() as db:
            files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            texts = db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
        return int(files), int(texts)

    def clear(self) -> None:
        """Forget everything."""
        with self._using() as db:
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM texts")
            db.execute("DELETE FROM tokens")
            db.execute("DELETE FROM reused")


def prove_ours(path: Path) -> None:
    """Nothing when ``path`` is provably a kimi-files reuse cache, even one too damaged to
    open (its header carries our application id, or it has none and no table but ours), or
    holds nothing (absent, empty).

    Raises:
        CacheError: anything else (another program's database, a file that is no database):
            it names the file; nothing is deleted.
    """
    import sqlite3

    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CacheError(f"reuse cache {path} cannot be read ({exc.strerror or exc}); nothing "
                         "was deleted", path=str(path)) from None
    if not head:
        return  # an empty file is an empty database: nobody's data
    if head.startswith(_SQLITE_MAGIC) and len(head) >= 72:
        application_id = int.from_bytes(head[68:72], "big")
        tables: set[str] = set()
        if application_id == 0:
            try:
                db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
                try:
                    tables = {r[0] for r in db.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'")}
                finally:
                    db.close()
            except sqlite3.Error:
                application_id = -1  # unreadable, and no id of ours: not provably ours
        if _ours(application_id, tables):
            return
        what = "another program's SQLite database"
    else:
        what = "not an SQLite database at all"
    raise CacheError(
        f"{path} is not provably a kimi-files reuse cache ({what}); nothing was deleted. "
        "Leave it alone; if it is a cache kimi-files made, remove it by hand", path=str(path))


def remove_cache_files(path: Path) -> list[Path]:
    """Remove a cache file and its journal files (for a cache too damaged to open), once it
    is proven ours (:func:`prove_ours`); the paths removed.

    Raises:
        CacheError: the file is not provably a kimi-files reuse cache (nothing removed), or
            could not be removed.
    """
    prove_ours(path)
    removed = []
    for p in cache_files(path):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CacheError(f"reuse cache {path} cannot be removed ({exc}); remove it by "
                             "hand", path=str(path)) from None
        removed.append(p)
    return removed
