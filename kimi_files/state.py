"""Local state of batch uploads: what was sent, so a re-run resumes and never duplicates.

One SQLite file per account and base URL (the account is named by a short hash of the key,
never the key), by default ``$KIMI_FILES_STATE_DIR`` or ``$XDG_STATE_HOME/kimi-files`` or
``~/.local/state/kimi-files``, file ``<host>_<port>-<keyhash>.sqlite3``.

Each file gets a row *before* its upload starts (``pending``: the intent, with the server's
clock when the attempt began) and is marked ``uploaded`` with its file id once the server
answered. After a crash (even SIGKILL) a ``pending`` row says "this may be on the server": the
next run looks for it there before sending again. Every change is one committed transaction
in WAL mode (an intent and its ledger entry together; a record of a copy and the end of its
attempt together), so the store survives a kill at any moment.

One run per state: a :class:`StateStore` holds an exclusive ``flock`` on ``<state>.lock`` (which
records the holder's pid) for its whole life; a second store on the same file, in this process
or another, gets :class:`~kimi_files.errors.StateLockedError` at once (or waits, ``wait=``). The
kernel drops the lock when the process dies, however it dies. The lock lives in its own file
rather than on the database because SQLite locks the database with POSIX record locks, which
a second descriptor on the same file can silently drop and which NFS merges with ``flock``;
and a separate lock is taken before the database is opened, so it also serialises creating,
checking and migrating it, and works when the database is damaged. The lock file goes with its
run: the holder removes it before it lets the lock go, and a run that took the lock checks that
its file is still the one at the path (else it takes the new one), so a newcomer that opened
the old file just before it was removed never holds a lock nobody else sees. A run killed
leaves its lock file; the next run takes it over (and removes it when it ends).

:func:`state_files` lists the state and cache files of a folder (account, size, last use),
recognised as ours by their header (``application_id``) the way the store recognises its own
databases; :func:`clean_choice` (pure) picks those to remove, and :func:`remove_account_files`
removes them, never one whose lock a live run holds.

Every failure of the store is a :class:`~kimi_files.errors.StateError` naming the file and the
way out, never a bare ``sqlite3`` or ``OSError``. A store removed or replaced during the run is
noticed before the next operation: nothing more is recorded in a file nobody will read.

Schema versions (``PRAGMA user_version``; ``PRAGMA application_id`` marks the file as ours):
0 is the first release (no marks); 1 adds ``purpose`` and ``server_time``; 2 adds the ledger of
``attempts`` (every upload begun whose copy has not been identified yet: a copy a killed or
timed-out request stores late must never be taken for another file's) and the ``suspects``
already reported (never adopted later); 3 adds ``ctime_ns``, ``inode`` and ``device`` to the
uploads (a file is taken as unchanged without reading it only when its size, mtime, ctime,
inode and device are all the recorded ones; a record without them is checked by its hash) and
``proven`` to the attempts (the start time was taken by a server clock seen to agree with the
``created_at`` of our own uploads; an attempt not proven is never adopted). Older stores are
migrated in place when opened; a newer one is refused. The table ``stored`` (every file whose
id came in this tool's own upload answer, by path: the only copies ``--replace`` may ever
delete) is added to any store it opens, without a new version: a kimi-files that does not know
it leaves it alone.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import ConfigurationError, StateError, StateLockedError

if TYPE_CHECKING:
    import sqlite3

    from .adoption import Attempt

__all__ = ["SCHEMA_VERSION", "OpenAttempt", "Record", "StateFile", "StateStore", "StoredCopy",
           "clean_choice", "default_state_path", "remove_account", "remove_account_files",
           "state_files"]

#: The schema this code writes; stores with a lower ``user_version`` are migrated to it.
SCHEMA_VERSION = 3
from .config import CACHE_APPLICATION_ID, DEFAULT_PURPOSE  # noqa: E402  (beside the others)
from .config import STATE_APPLICATION_ID as APPLICATION_ID  # noqa: E402

_SCHEMA_V1 = """
CREATE TABLE uploads (
    path        BLOB PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    filename    TEXT NOT NULL,
    file_id     TEXT,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'uploaded')),
    updated     REAL NOT NULL,
    purpose     TEXT NOT NULL DEFAULT 'file-extract',
    server_time INTEGER
);
CREATE INDEX uploads_sha ON uploads (sha256);
"""
_SCHEMA_V2 = """
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        BLOB NOT NULL,
    filename    TEXT NOT NULL,
    size        INTEGER NOT NULL,
    purpose     TEXT NOT NULL,
    server_time INTEGER,
    started     REAL NOT NULL
);
CREATE TABLE suspects (
    file_id     TEXT PRIMARY KEY,
    path        BLOB NOT NULL,
    noted       REAL NOT NULL
);
"""
_MIGRATE_V1_TO_V2 = (
    *filter(str.strip, _SCHEMA_V2.split(";")),
    "INSERT INTO attempts (path, filename, size, purpose, server_time, started) "
    "SELECT path, filename, size, purpose, server_time, updated FROM uploads "
    "WHERE status = 'pending'",
)
_COLUMNS_V3 = ("ctime_ns", "inode", "device")
_MIGRATE_V2_TO_V3 = (
    *(f"ALTER TABLE uploads ADD COLUMN {c} INTEGER" for c in _COLUMNS_V3),
    # an older version's start times were never checked against created_at: not proven
    "ALTER TABLE attempts ADD COLUMN proven INTEGER NOT NULL DEFAULT 0",
)
#: added to every store opened (a table older code ignores; see the module docstring)
_SCHEMA_STORED = """
CREATE TABLE IF NOT EXISTS stored (
    file_id     TEXT PRIMARY KEY,
    path        BLOB NOT NULL,
    filename    TEXT NOT NULL,
    size        INTEGER NOT NULL,
    purpose     TEXT NOT NULL,
    recorded    REAL NOT NULL,
    created_at  INTEGER
)
"""
_COLUMNS_V0 = ("path", "size", "mtime_ns", "sha256", "filename", "file_id", "status", "updated")
_COLUMNS_V1 = (*_COLUMNS_V0, "purpose", "server_time")
_MIGRATE_V0_TO_V1 = (
    "ALTER TABLE uploads ADD COLUMN purpose TEXT NOT NULL DEFAULT 'file-extract'",
    "ALTER TABLE uploads ADD COLUMN server_time INTEGER",
)
_SELECT = ("SELECT path, size, mtime_ns, sha256, filename, file_id, status, purpose, server_time, "
           "ctime_ns, inode, device FROM uploads")

WAY_OUT = ("Use another state file (--state NEW; in Python state='NEW') "
           "or none (--no-state; state=False).")
#: How often a waiting store tries the lock again, in seconds.
POLL_INTERVAL = 0.2


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
        from .adoption import Attempt

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


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    filename: str
    file_id: str | None
    status: str
    purpose: str = DEFAULT_PURPOSE
    #: The server's clock (Unix seconds) when the attempt began; None if unknown.
    server_time: int | None = None
    #: The file's ctime, inode and device when recorded uploaded (None: not recorded, by an
    #: older version; the file is then checked by its hash).
    ctime_ns: int | None = None
    inode: int | None = None
    device: int | None = None


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


# --- failures in words (pure) -------------------------------------------------------------------

# SQLite primary result codes (the low byte of an extended code): what, and what to do
_DAMAGED = ("is damaged or not an SQLite database", "move it aside to start afresh")
_SQLITE_WORDS = {
    3: ("cannot be written: permission denied", ""),  # SQLITE_PERM
    5: ("is locked by another program", "close that program"),  # SQLITE_BUSY
    6: ("is locked by another program", "close that program"),  # SQLITE_LOCKED
    8: ("cannot be written: the file or its folder is read-only", ""),  # SQLITE_READONLY
    10: ("cannot be read or written: input/output error", ""),  # SQLITE_IOERR
    11: _DAMAGED,  # SQLITE_CORRUPT
    13: ("cannot be written: the disk is full", "free some space"),  # SQLITE_FULL
    14: ("cannot be opened", "check that it and its folder are writable"),  # SQLITE_CANTOPEN
    26: _DAMAGED,  # SQLITE_NOTADB
}
# the same by message, for Pythons whose sqlite3 errors carry no code (3.10)
_SQLITE_TEXTS = (
    ("not a database", 26), ("malformed", 11), ("readonly", 8), ("disk is full", 13),
    ("disk full", 13), ("unable to open", 14), ("locked", 5), ("disk i/o", 10),
)


def describe_failure(exc: BaseException) -> str:
    """What went wrong with the state file, in words, for an ``sqlite3`` or ``OSError``."""
    if isinstance(exc, OSError):
        import errno

        words = {
            errno.ENOSPC: "cannot be written: the disk is full",
            errno.EROFS: "cannot be written: the file system is read-only",
            errno.EACCES: "cannot be used: permission denied",
            errno.EPERM: "cannot be used: operation not permitted (read-only or immutable?)",
            errno.EISDIR: "is a folder, not a file",
            errno.ENOTDIR: "cannot be reached: part of its folder path is a file, not a folder",
        }.get(exc.errno or 0)
        return words or f"cannot be used ({exc.strerror or exc})"
    detail = str(exc) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary not in _SQLITE_WORDS:
        lowered = detail.lower()
        primary = next((c for text, c in _SQLITE_TEXTS if text in lowered), None)
    words, advice = _SQLITE_WORDS.get(primary or 0, ("failed", ""))
    return f"{words} ({detail})" + (f"; {advice}" if advice else "")


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _same_file(fh: IO[bytes], path: Path) -> bool:
    """Is the open file ``fh`` still the one at ``path``?"""
    try:
        st, now = os.fstat(fh.fileno()), os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _read_pid(fh: IO[bytes]) -> int | None:
    try:
        text = os.pread(fh.fileno(), 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _wait_deadline(wait: bool | float) -> float | None:
    """Seconds to wait for the lock: 0 (do not), a number, or None (forever)."""
    if wait is True:
        return None
    if wait is False:
        return 0.0
    if isinstance(wait, (int, float)) and math.isfinite(wait) and wait >= 0:
        return float(wait)
    raise ConfigurationError(f"wait must be True, False or a number of seconds >= 0, not {wait!r}")


# --- the store ----------------------------------------------------------------------------------


def _after_loss(state_file: bool, removed: bool) -> str:
    """What a re-run can and cannot know once a run's state file or lock file was taken from
    it mid-run (see ``StateStore._check_still_ours``)."""
    if not state_file:
        return ("a re-run resumes from what was recorded until then, but files this run "
                "uploaded after that are not known to it and would be uploaded again")
    if removed:
        return ("what it recorded went with it: a re-run starts afresh and would upload again "
                "every file already uploaded (this run's output lists their ids)")
    return ("a re-run reads the new file, which does not know what was uploaded, and would "
            "upload those files again (this run's output lists their ids)")


class StateStore:
    """The SQLite store (thread-safe; one connection guarded by a lock; one run per file).

    ``wait``: when another run holds the file, False (default) raises
    :class:`~kimi_files.errors.StateLockedError` at once, True waits for it however long,
    a number waits that many seconds and then raises.
    """

    def __init__(self, path: str | os.PathLike[str], *, wait: bool | float = False) -> None:
        patience = _wait_deadline(wait)
        self.path = Path(os.path.abspath(path))
        #: The lock file next to the store (kept after close: see the module docs).
        self.lock_path = _lock_path(self.path)
        self._lock = threading.Lock()
        self._closed = False
        self._lock_file = self._take_lock(patience)
        try:
            self._db = self._open_db()
            try:
                self._db_id = self._identity(self.path)
                self._lock_id = self._fd_identity()
                self._journal_ids = {side: self._identity(side) for side in self.files[1:3]
                                     if side.exists()}
            except OSError as exc:
                self._db.close()
                raise self._failed(exc) from exc
        except BaseException:
            self._lock_file.close()
            raise

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the store keeps (to leave out when walking folders)."""
        return (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), self.lock_path)

    # --- errors -----------------------------------------------------------------------------

    def _error(self, problem: str) -> StateError:
        return StateError(f"state file {self.path} {problem}. {WAY_OUT}", path=str(self.path))

    def _failed(self, exc: BaseException) -> StateError:
        return self._error(describe_failure(exc))

    # --- opening ----------------------------------------------------------------------------

    def _take_lock(self, patience: float | None) -> IO[bytes]:
        import fcntl

        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            pass  # not there yet (or unreachable: said below)
        else:
            if stat.S_ISDIR(mode):
                raise self._error("is a folder, not a file")
            if not stat.S_ISREG(mode):
                raise self._error("is not a regular file")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:  # something that is not a folder has its name
            raise self._error(f"cannot be created: {parent} is a file, not a folder") from exc
        except OSError as exc:
            raise self._error(f"cannot be created: its folder {parent} "
                              f"{describe_failure(exc)}") from exc
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as exc:
            raise self._error(f"cannot be locked: its lock file {self.lock_path} "
                              f"{describe_failure(exc)}") from exc
        fh = os.fdopen(fd, "r+b", buffering=0)
        try:
            deadline = None if patience is None else _clock() + patience
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    left = None if deadline is None else deadline - _clock()
                    if left is not None and left <= 0:
                        raise self._locked(_read_pid(fh), patience or 0.0) from None
                    _poll_sleep(POLL_INTERVAL if left is None else min(POLL_INTERVAL, left))
                    continue
                if _same_file(fh, self.lock_path):
                    break
                # its run removed it as it ended, after this one opened it: take the new one
                fh.close()
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                             0o644)
                fh = os.fdopen(fd, "r+b", buffering=0)
            fh.truncate(0)
            fh.write(f"{os.getpid()}\n".encode())
        except OSError as exc:
            fh.close()
            raise self._error(f"cannot be locked: its lock file {self.lock_path} "
                              f"{describe_failure(exc)}") from exc
        except BaseException:
            fh.close()
            raise
        return fh

    def _locked(self, pid: int | None, waited: float) -> StateLockedError:
        who = ("another run" if pid is None
               else f"this process (pid {pid}), through another StateStore" if pid == os.getpid()
               else f"another run (pid {pid})")
        after = f" after waiting {waited:g} s" if waited else ""
        return StateLockedError(
            f"state file {self.path} is in use by {who}{after}: one run per state file. "
            f"Wait for it to finish, or pass --wait (wait=True in Python) to wait for it. "
            f"(Another state file or none, --state NEW or --no-state, would not know what that "
            f"run uploads: the same files may be stored twice.)", path=str(self.path), pid=pid)

    def _open_db(self) -> sqlite3.Connection:
        import sqlite3

        try:
            db = sqlite3.connect(os.fspath(self.path), check_same_thread=False,
                                 isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise self._error(f"{_DAMAGED[0]} (integrity check: "
                                  f"{check[0] if check else 'no answer'}); {_DAMAGED[1]}")
            db.execute("BEGIN IMMEDIATE")
            self._settle_schema(db)  # before anything is changed: it may be another's file
            # always written, even when nothing changed: a read-only store fails here, at
            # once, rather than at the first upload's record
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file; not inside a transaction
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("SELECT count(*) FROM uploads").fetchone()  # opens the -wal and -shm
        except BaseException as exc:
            db.close()  # an open transaction is rolled back
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise self._failed(exc) from exc
            raise
        return db

    def _settle_schema(self, db: sqlite3.Connection) -> None:
        """Create, check or migrate the schema (inside the opening transaction)."""
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        columns = tuple(r[1] for r in db.execute("PRAGMA table_info(uploads)"))
        not_ours = self._error("is not a kimi-files state file (another program's database?); "
                               "leave it alone")
        if app == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise self._error(
                    f"was made by a newer kimi-files (schema {version}; this one knows up to "
                    f"{SCHEMA_VERSION}): upgrade kimi-files")
            if version < 1 or not set(_COLUMNS_V1) <= set(columns):
                raise self._error(f"{_DAMAGED[0]} (its table of uploads is missing or "
                                  f"incomplete); {_DAMAGED[1]}")
            if version == 1:
                for statement in _MIGRATE_V1_TO_V2:
                    db.execute(statement)
            elif not {"attempts", "suspects"} <= tables:
                raise self._error(f"{_DAMAGED[0]} (its ledger of attempts is missing); "
                                  f"{_DAMAGED[1]}")
            if version < 3:
                attempt_columns = {r[1] for r in db.execute("PRAGMA table_info(attempts)")}
                for column, statement in zip((*_COLUMNS_V3, "proven"), _MIGRATE_V2_TO_V3,
                                             strict=True):
                    if column not in set(columns) | attempt_columns:
                        db.execute(statement)
        elif app == 0 and not tables:  # new (or empty)
            for statement in (*filter(str.strip, (_SCHEMA_V1 + _SCHEMA_V2).split(";")),
                              *_MIGRATE_V2_TO_V3):
                db.execute(statement)
        elif app == 0 and version == 0 and columns == _COLUMNS_V0:  # the first release
            for statement in (*_MIGRATE_V0_TO_V1, *_MIGRATE_V1_TO_V2, *_MIGRATE_V2_TO_V3):
                db.execute(statement)
        else:
            raise not_ours
        db.execute(_SCHEMA_STORED)
        if "created_at" not in {r[1] for r in db.execute("PRAGMA table_info(stored)")}:
            db.execute("ALTER TABLE stored ADD COLUMN created_at INTEGER")  # older records: NULL

    # --- a store removed or replaced under the run ------------------------------------------

    @staticmethod
    def _identity(path: Path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino

    def _fd_identity(self) -> tuple[int, int]:
        st = os.fstat(self._lock_file.fileno())
        return st.st_dev, st.st_ino

    def _check_still_ours(self) -> None:
        for what, path, expected in (("the state file", self.path, self._db_id),
                                     ("the lock file", self.lock_path, self._lock_id)):
            try:
                now: tuple[int, int] | None = self._identity(path)
            except FileNotFoundError:
                now = None
            if now != expected:
                if path == self.path:
                    self._drop_stale_journal()
                how = "removed" if now is None else "replaced by another file"
                other = "" if path == self.path else f" (of the state file {self.path})"
                raise StateError(
                    f"{what} {path}{other} was {how} while this run was using it; nothing more "
                    f"is recorded; {_after_loss(path == self.path, now is None)}",
                    path=str(self.path))

    def _drop_stale_journal(self) -> None:
        """Remove this store's ``-wal`` and ``-shm`` once its database is gone from its path.

        SQLite keeps them by name, not by file: left there, the next opener of whatever file
        takes the name would replay this store's pages into it. What they hold is first
        written into this store's own database (wherever it went: a store moved away keeps
        every row). Only files that are still the very ones this store opened are removed.
        """
        import sqlite3

        if not self._journal_ids:
            return
        with suppress(sqlite3.Error):  # if it fails, the rows are lost with the file anyway
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for side, ident in self._journal_ids.items():
            try:
                if self._identity(side) == ident:
                    side.unlink()
            except OSError:
                pass  # already gone, or not ours to remove
        self._journal_ids = {}

    # --- use --------------------------------------------------------------------------------

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with every failure a StateError."""
        import sqlite3

        with self._lock:
            if self._closed:
                raise self._error("is closed (this StateStore was closed)")
            try:
                self._check_still_ours()
                yield self._db
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_using` as one transaction: every statement in it is kept, or none (a kill
        or a failure between two of them leaves the store as it was)."""
        import sqlite3

        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close the database and release the run's lock (again: no-op)."""
        import sqlite3

        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                try:
                    moved = self._identity(self.path) != self._db_id
                except OSError:
                    moved = True
                if moved:  # removed or replaced, and not yet noticed
                    self._drop_stale_journal()
                self._db.close()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            finally:
                # the lock file goes with its run: removed while still held (see the module)
                if _same_file(self._lock_file, self.lock_path):
                    with suppress(OSError):
                        self.lock_path.unlink()
                self._lock_file.close()  # releases the flock

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _row(row: tuple[bytes, int, int, str, str, str | None, str, str, int | None,
                        int | None, int | None, int | None]) -> Record:
        return Record(os.fsdecode(row[0]), *row[1:])

    def get(self, path: str | os.PathLike[str]) -> Record | None:
        with self._using() as db:
            row = db.execute(f"{_SELECT} WHERE path = ?", (_key(path),)).fetchone()
        return self._row(row) if row else None

    def records(self) -> list[Record]:
        with self._using() as db:
            rows = db.execute(f"{_SELECT} ORDER BY path").fetchall()
        return [self._row(r) for r in rows]

    def begin(self, path: str | os.PathLike[str], *, size: int, mtime_ns: int, sha256: str,
              filename: str, purpose: str = DEFAULT_PURPOSE, server_time: int | None = None,
              proven: bool = True) -> int:
        """Record the intent to upload, right before the first byte is sent, and open its
        attempt in the ledger; returns the attempt's id (for :meth:`done`).

        ``server_time``: the server's clock (Unix seconds) when this attempt began;
        ``proven``: that clock was seen to agree with ``created_at`` (see :meth:`prove`).
        """
        now = time.time()
        with self._transaction() as db:
            attempt = db.execute(
                "INSERT INTO attempts (path, filename, size, purpose, server_time, started, "
                "proven) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_key(path), filename, size, purpose, server_time, now, int(proven))).lastrowid
            db.execute(
                "INSERT INTO uploads (path, size, mtime_ns, sha256, filename, file_id, status, "
                "updated, purpose, server_time) VALUES (?, ?, ?, ?, ?, NULL, 'pending', ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "sha256=excluded.sha256, filename=excluded.filename, file_id=NULL, "
                "status='pending', updated=excluded.updated, purpose=excluded.purpose, "
                "server_time=excluded.server_time",
                (_key(path), size, mtime_ns, sha256, filename, now, purpose, server_time))
        assert attempt is not None
        return attempt

    def done(self, path: str | os.PathLike[str], *, size: int, mtime_ns: int, sha256: str,
             filename: str, file_id: str, purpose: str = DEFAULT_PURPOSE,
             settles: int | None = None, ctime_ns: int | None = None, inode: int | None = None,
             device: int | None = None) -> None:
        """Record a file stored on the server (``server_time`` of its intent is kept).

        ``ctime_ns``, ``inode``, ``device``: the file's, as checked (without them, a later run
        reads the file and compares its hash before taking it as unchanged).

        ``settles``: the attempt whose copy this is, and whose every copy is accounted for:
        it leaves the ledger. (An attempt that also lost an answer stays, so that a copy that
        lands late is reported, never adopted for another file.) One transaction: the
        attempt never leaves the ledger without the record of its copy."""
        with self._transaction() as db:
            if settles is not None:
                db.execute("DELETE FROM attempts WHERE id = ?", (settles,))
            db.execute(
                "INSERT INTO uploads (path, size, mtime_ns, sha256, filename, file_id, status, "
                "updated, purpose, ctime_ns, inode, device) "
                "VALUES (?, ?, ?, ?, ?, ?, 'uploaded', ?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "sha256=excluded.sha256, filename=excluded.filename, file_id=excluded.file_id, "
                "status='uploaded', updated=excluded.updated, purpose=excluded.purpose, "
                "ctime_ns=excluded.ctime_ns, inode=excluded.inode, device=excluded.device",
                (_key(path), size, mtime_ns, sha256, filename, file_id, time.time(), purpose,
                 ctime_ns, inode, device))

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

    def forget(self, path: str | os.PathLike[str]) -> bool:
        """Delete the row of ``path``; True if there was one."""
        with self._using() as db:
            return db.execute("DELETE FROM uploads WHERE path = ?", (_key(path),)).rowcount > 0

    def integrity_ok(self) -> bool:
        with self._using() as db:
            return bool(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


# seams for tests: the clock and the pause of a store waiting for the lock
_clock = time.monotonic
_poll_sleep = time.sleep


# --- the files of a state folder: listing and cleaning ------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SUFFIXES = {".cache.sqlite3": "cache", ".sqlite3": "state"}


def file_kind(path: Path) -> str | None:
    """"state" or "cache" when ``path`` is a kimi-files database, recognised as the store
    recognises its own: by its header (the SQLite magic and the ``application_id`` at byte 68,
    what ``PRAGMA application_id`` reads) and its tables; else None. Takes no lock and writes
    nothing."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return None
    app = int.from_bytes(head[68:72], "big")
    kind = {APPLICATION_ID: "state", CACHE_APPLICATION_ID: "cache"}.get(app)
    return kind if kind is not None and _schema_is(path, kind) else None


def _schema_is(path: Path, kind: str) -> bool:
    """Does the database hold the tables of a state store (``uploads`` with every column of
    schema 1 on) or of a reuse cache (``files`` and ``texts``)? Read as an immutable file: no
    lock, no journal replayed, nothing written (what only a journal holds is not seen, so a
    file is rather not recognised than wrongly)."""
    import sqlite3
    from urllib.parse import quote

    try:
        db = sqlite3.connect(f"file:{quote(os.fspath(path))}?immutable=1", uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if kind == "cache":
            return {"files", "texts"} <= tables
        columns = {r[1] for r in db.execute("PRAGMA table_info(uploads)")}
        return set(_COLUMNS_V1) <= columns
    except sqlite3.Error:
        return False
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class StateFile:
    """A state store or reuse cache of the state folder (with its journal files)."""

    path: Path
    #: "state" or "cache"
    kind: str
    #: ``<host>_<port>-<hash of the key>``: the base URL and the account (never the key)
    account: str
    #: bytes of the database and its journal files (and lock)
    size: int
    #: the last change to any of them (Unix seconds)
    last_used: float
    #: a live run holds the account's lock (its state is in use)
    in_use: bool

    @property
    def files(self) -> tuple[Path, ...]:
        """The database, its journal files and (for a state) its lock file."""
        extra = (_lock_path(self.path),) if self.kind == "state" else ()
        return (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), *extra)


def _account_of(name: str) -> tuple[str, str] | None:
    """(account, kind by name) of a file name the state folder uses, else None. Pure."""
    for suffix, kind in _SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return None


def lock_held(lock: Path) -> bool:
    """Does a live run hold this lock file? (Taken and let go at once when free; a missing
    lock file is free.)"""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def state_files(folder: Path | None = None) -> list[StateFile]:
    """The state stores and reuse caches in ``folder`` (default: the state folder), by name,
    each recognised as ours by its header (another program's database of the same name is not
    listed)."""
    folder = default_state_dir() if folder is None else folder
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        named = _account_of(name)
        if named is None:
            continue
        path = folder / name
        account, kind = named
        if kind == "state" and account.endswith(".cache"):
            continue  # named as a cache: listed as one
        if file_kind(path) != kind:
            continue
        size, last = 0, 0.0
        lock = _lock_path(folder / f"{account}.sqlite3")
        members = (path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                   *((lock,) if kind == "state" else ()))
        for member in members:
            with suppress(OSError):
                st = os.stat(member)
                size += st.st_size
                last = max(last, st.st_mtime)
        out.append(StateFile(path, kind, account, size, last, lock_held(lock)))
    return out


def loopback_address(account: str) -> tuple[str, int] | None:
    """(host, port) of an account whose base URL is this machine (``127.0.0.1_8000-…``,
    ``localhost_8000-…``, ``_1_8000-…`` for ``::1``), else None. Pure."""
    where = account.rsplit("-", 1)[0]
    host, _, port = where.rpartition("_")
    if not port.isdigit() or not (host == "localhost" or host.startswith("127.")
                                  or host == "_1"):  # ::1
        return None
    return ("::1" if host == "_1" else host), int(port)


def loopback_port(account: str) -> int | None:
    """The port of an account whose base URL is this machine, else None. Pure."""
    found = loopback_address(account)
    return None if found is None else found[1]


def answers(address: tuple[str, int]) -> bool:
    """Does anything listen at this loopback address? (Only ever called for loopback
    addresses: never the network.)"""
    import socket

    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def clean_choice(files: Iterable[StateFile], *, now: float, older_than_days: float | None,
                 unreachable: Iterable[str] = ()) -> list[StateFile]:
    """The files ``state clean`` removes: those unused for more than ``older_than_days``
    days, and those of the ``unreachable`` accounts; never one whose account's lock a live
    run holds. Pure."""
    gone = set(unreachable)
    out = []
    for f in files:
        if f.in_use:
            continue
        old = older_than_days is not None and f.last_used < now - older_than_days * 86400
        if old or f.account in gone:
            out.append(f)
    return out


def remove_account_files(chosen: StateFile) -> list[Path]:
    """Remove a state store or cache (with its journal files; a state with its lock file),
    under the account's lock and only while its header still says it is ours; the paths
    removed. Nothing is removed when a live run holds the lock.

    Raises:
        StateLockedError: a run took the lock meanwhile.
        StateError: a file cannot be removed.
    """
    import fcntl

    lock = _lock_path(chosen.path.with_name(f"{chosen.account}.sqlite3"))
    fd = None
    had_lock = lock.exists()
    if chosen.kind == "state" or had_lock:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            assert fd is not None
            os.close(fd)
            raise StateLockedError(f"state file {chosen.path} is in use by another run; "
                                   "nothing removed", path=str(chosen.path)) from None
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            raise StateError(f"state file {chosen.path}: its lock {lock} "
                             f"{describe_failure(exc)}", path=str(chosen.path)) from None
    removed: list[Path] = []
    try:
        if file_kind(chosen.path) != chosen.kind:
            return removed  # changed since it was listed: not ours any more, left alone
        # the journal files first: a database left without them is whole (what they held
        # is lost with it anyway), while journal files left without their database would be
        # replayed into the next database of that name
        db_file, wal, shm = chosen.files[:3]
        for member in (wal, shm, db_file):
            try:
                member.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StateError(f"{member} cannot be removed ({describe_failure(exc)}); "
                                 "remove it by hand", path=str(member)) from None
            removed.append(member)
        if fd is not None and chosen.kind == "state":
            with suppress(FileNotFoundError):
                lock.unlink()  # while held, as a run's own lock goes (see the module)
                if had_lock:
                    removed.append(lock)
    finally:
        if fd is not None:
            os.close(fd)
    return removed


def remove_account(state_path: Path) -> list[Path]:
    """Remove the state store at ``state_path`` and the reuse cache beside it, as
    :func:`remove_account_files` does (ours only, not while a live run holds the lock; a lock
    held or a file that cannot go is left, and said at DEBUG); the paths removed. What a run
    against an ephemeral emulator does as it ends (nothing it recorded outlives the server)."""
    import logging

    account = state_path.name.removesuffix(".sqlite3")
    removed: list[Path] = []
    for f in state_files(state_path.parent):
        if f.account != account or f.in_use:
            continue
        try:
            removed += remove_account_files(f)
        except StateError as exc:
            logging.getLogger("kimi_files").debug("left in place: %s", exc)
    return removed


#: Beside the state of an account whose server said it is an ephemeral emulator: an empty
#: file ``<account>.ephemeral``; once nothing answers on that loopback port any more, the
#: account's state, lock and cache can only pile up (:func:`sweep_ephemeral`).
EPHEMERAL_SUFFIX = ".ephemeral"


def mark_ephemeral(state_path: Path, ephemeral: bool) -> None:
    """Mark (or, for a server that keeps its files, unmark) the account of ``state_path`` as
    an ephemeral emulator's."""
    marker = state_path.with_name(state_path.name.removesuffix(".sqlite3") + EPHEMERAL_SUFFIX)
    with suppress(OSError):
        if ephemeral:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink()


def sweep_ephemeral(folder: Path | None = None, *,
                    alive: Callable[[tuple[str, int]], bool] = answers) -> list[Path]:
    """Remove the state, lock and cache of every account marked as an ephemeral emulator's
    whose loopback port no longer answers (the emulator is gone, and all it stored with it);
    ours only, never while a run holds the lock. The paths removed."""
    folder = default_state_dir() if folder is None else folder
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed: list[Path] = []
    for name in sorted(names):
        if not name.endswith(EPHEMERAL_SUFFIX):
            continue
        account = name[: -len(EPHEMERAL_SUFFIX)]
        address = loopback_address(account)
        marker = folder / name
        if address is None or marker.is_symlink() or not marker.is_file() or alive(address):
            continue
        removed += remove_account(folder / f"{account}.sqlite3")
    return removed + drop_orphan_markers(folder)


def drop_orphan_markers(folder: Path) -> list[Path]:
    """Remove the ephemeral marks of accounts with no state or cache left; those removed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    left = {f.account for f in state_files(folder)}
    removed = []
    for name in sorted(names):
        marker = folder / name
        if (name.endswith(EPHEMERAL_SUFFIX) and name[: -len(EPHEMERAL_SUFFIX)] not in left
                and not marker.is_symlink() and marker.is_file()
                and marker.stat().st_size == 0):
            with suppress(OSError):
                marker.unlink()
                removed.append(marker)
    return removed
