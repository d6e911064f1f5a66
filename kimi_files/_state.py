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

Every failure of the store is a :class:`~kimi_files.errors.StateError` naming the file and the
way out, never a bare ``sqlite3`` or ``OSError``. A store removed or replaced during the run is
noticed before the next operation: nothing more is recorded in a file nobody will read.

The rest of the store lives beside it: its schema and migrations in :mod:`kimi_files._schema`,
its ledger of open attempts, suspects and stored copies in :mod:`kimi_files._ledger`, its
failures in words in :mod:`kimi_files._state_errors`, and the listing and cleaning of the
state folder (:func:`state_files`, :func:`clean_choice`, :func:`remove_account_files`,
:func:`sweep_ephemeral`) in :mod:`kimi_files._state_files`.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ._config import DEFAULT_PURPOSE
from ._ledger import Ledger, OpenAttempt, StoredCopy
from ._schema import _SELECT, APPLICATION_ID, SCHEMA_VERSION, _key, settle_schema
from ._state_errors import _DAMAGED, WAY_OUT, _after_loss, describe_failure
from ._state_files import _lock_path, default_state_path
from .errors import ConfigurationError, StateError, StateLockedError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "OpenAttempt", "Record", "StateStore",
           "StoredCopy", "default_state_path", "describe_failure"]

#: How often a waiting store tries the lock again, in seconds.
POLL_INTERVAL = 0.2


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


class StateStore(Ledger):
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
            settle_schema(db, self._error)  # before anything is changed: it may be another's file
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
