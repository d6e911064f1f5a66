"""The state store's schema: its tables, the migrations from older versions, and the check
that a database opened as a store is one (see :mod:`kimi_files._state`).

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

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._config import STATE_APPLICATION_ID as APPLICATION_ID
from ._state_errors import _DAMAGED
from .errors import StateError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "settle_schema"]

#: The schema this code writes; stores with a lower ``user_version`` are migrated to it.
SCHEMA_VERSION = 3

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


def _key(path: str | os.PathLike[str]) -> bytes:
    """Rows are keyed by the absolute path, as bytes (any file name survives)."""
    return os.fsencode(os.path.abspath(path))


def settle_schema(db: sqlite3.Connection, error: Callable[[str], StateError]) -> None:
    """Create, check or migrate the schema (inside the opening transaction); ``error`` makes
    the store's error of a problem."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    columns = tuple(r[1] for r in db.execute("PRAGMA table_info(uploads)"))
    not_ours = error("is not a kimi-files state file (another program's database?); "
                     "leave it alone")
    if app == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise error(
                f"was made by a newer kimi-files (schema {version}; this one knows up to "
                f"{SCHEMA_VERSION}): upgrade kimi-files")
        if version < 1 or not set(_COLUMNS_V1) <= set(columns):
            raise error(f"{_DAMAGED[0]} (its table of uploads is missing or "
                        f"incomplete); {_DAMAGED[1]}")
        if version == 1:
            for statement in _MIGRATE_V1_TO_V2:
                db.execute(statement)
        elif not {"attempts", "suspects"} <= tables:
            raise error(f"{_DAMAGED[0]} (its ledger of attempts is missing); "
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
