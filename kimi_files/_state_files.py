"""The files of a state folder: where an account's state lives, and listing and cleaning the
state stores and reuse caches there (see :mod:`kimi_files._state`).

:func:`state_files` lists the state and cache files of a folder (account, size, last use),
recognised as ours by their header (``application_id``) the way the store recognises its own
databases; :func:`clean_choice` (pure) picks those to remove, and :func:`remove_account_files`
removes them, never one whose lock a live run holds. :func:`sweep_ephemeral` removes what was
kept for an ephemeral emulator once it is gone.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ._config import CACHE_APPLICATION_ID
from ._schema import _COLUMNS_V1, APPLICATION_ID
from ._state_errors import describe_failure
from .errors import StateError, StateLockedError

__all__ = ["EPHEMERAL_SUFFIX", "StateFile", "clean_choice", "default_state_dir",
           "default_state_path", "drop_orphan_markers", "file_kind", "lock_held",
           "loopback_address", "mark_ephemeral", "remove_account",
           "remove_account_files", "state_files", "sweep_ephemeral"]


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


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


# --- listing and cleaning -----------------------------------------------------------------------

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
    ours only, never while a run holds the lock. The paths removed.

    Raises:
        Nothing: a folder that cannot be read removes nothing; a path that cannot be removed
        is left.
    """
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
