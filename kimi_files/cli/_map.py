"""``kimi-files map [PATH...]``: which stored file each document maps to, under which name."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from .._client import KimiFiles
    from .._models import FileObject
    from .._state import Record
    from ._common import Subparsers

from ._common import EXIT_FAILED, EXIT_OK, _client
from ._output import _emit, _emit_json, _say


class _Row(TypedDict):
    """One path's line (``--json`` prints it as it is)."""

    path: str
    file_id: str | None
    stored_as: str | None
    purpose: str | None
    bytes: int | None
    listed: bool
    source: str | None
    changed: bool


def _records(client: KimiFiles, where: str | None) -> dict[str, Record]:
    """Absolute path -> its record of an uploaded file, from the state (none when it does
    not exist: nothing is created for a look)."""
    from .._state import StateStore

    path = Path(where) if where else client.state_path()
    if not path.exists():
        return {}
    with StateStore(path) as store:
        return {r.path: r for r in store.records() if r.status == "uploaded" and r.file_id}


def _by_content(client: KimiFiles, path: Path, listed: dict[str, FileObject]
                ) -> tuple[str, str, str, int] | None:
    """(file id, name, purpose, size) of a stored file the reuse cache says holds this file's
    content, preferring one the account still lists; None when the cache knows none."""
    from .._hashing import sha256_of

    cache = client.reuse_cache()
    if cache is None:
        return None
    try:
        sha = sha256_of(path)
    except OSError:
        return None
    entries = [e for e in cache.entries() if e.sha256 == sha]
    entries.sort(key=lambda e: e.file_id not in listed)  # listed first, else newest first
    if not entries:
        return None
    e = entries[0]
    return e.file_id, e.filename, e.purpose, e.size


def _stored(rec: Record) -> tuple[str, str, str, int]:
    """(file id, name, purpose, size) of a record of :func:`_records` (each has an id)."""
    return rec.file_id or "", rec.filename, rec.purpose, rec.size


def _changed(path: str, rec: Record) -> bool:
    """Is the file at ``path`` no longer the one its record of an upload describes (size,
    mtime, ctime, inode, device differ, as kimi-upload judges; by its hash for a record
    without them), or gone?"""
    from .._hashing import sha256_of
    from .._scan import _unchanged

    if _unchanged(Path(path), rec) is not None:
        return False
    if rec.ctime_ns is not None:
        return True
    try:  # an older record: its hash decides
        return bool(sha256_of(Path(path)) != rec.sha256)
    except OSError:
        return True


def _do_map(args: argparse.Namespace) -> int:
    from .._scan import collect

    with _client(args) as client:
        listed = {f.id: f for f in client.list()}  # the one list call
        records = _records(client, args.state)
        rows: list[_Row] = []

        def row(path: str, source: str, found: tuple[str, str, str, int] | None,
                changed: bool = False) -> None:
            if found is None:
                rows.append({"path": path, "file_id": None, "stored_as": None, "purpose": None,
                             "bytes": None, "listed": False, "source": None, "changed": False})
                return
            fid, name, purpose, size = found
            f = listed.get(fid)
            rows.append({"path": path, "file_id": fid,
                         "stored_as": f.filename if f is not None else name,
                         "purpose": (f.purpose or purpose) if f is not None else purpose,
                         "bytes": f.bytes if f is not None else size,
                         "listed": f is not None, "source": source, "changed": changed})

        def from_state(path: str, rec: Record) -> None:
            if not _changed(path, rec):
                row(path, "state", _stored(rec))
                return
            # its content now: a stored file the reuse cache knows, else the old record, said
            now = _by_content(client, Path(path), listed) if os.path.isfile(path) else None
            if now is not None:
                row(path, "cache", now)
            else:
                row(path, "state", _stored(rec), True)

        if not args.paths:
            for r in records.values():
                from_state(r.path, r)
        else:
            files, missing = collect(args.paths, skip=[])
            for p in files:
                rec = records.get(os.path.abspath(p))
                if rec is not None:
                    from_state(os.fsdecode(p), rec)
                else:
                    row(os.fsdecode(p), "cache", _by_content(client, p, listed))
    refused = [] if not args.paths else missing
    _show(rows, args.json)
    for m in refused:  # no such file, or none that could be stored: said, exit 1
        _say(f"kimi-files: {m.path}: {m.error}")
    return EXIT_FAILED if refused else EXIT_OK


def _show(rows: list[_Row], as_json: bool) -> None:
    for r in rows:
        if as_json:
            _emit_json(r)
        elif r["file_id"] is None:
            _emit(sys.stdout, f"{r['path']}: no stored file known (not in the state, and the "
                              "reuse cache knows no file with its content)")
        else:
            where = "listed" if r["listed"] else "NOT LISTED (gone from the account)"
            changed = ("; CHANGED since it was stored: the stored file is an older version "
                       "(upload it again)" if r["changed"] else "")
            _emit(sys.stdout, f"{r['path']} -> {r['file_id']} stored as {r['stored_as']!r} "
                              f"({r['purpose']}, {r['bytes']:,} bytes, {where}; from the "
                              f"{r['source'] if r['source'] == 'state' else 'reuse cache'})"
                              f"{changed}")


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    mp = sub.add_parser(
        "map", parents=parents,
        help="which stored file each local document maps to, under which name",
        description="Each local path with the file id it maps to, the name it is stored under "
                    "(the server keeps base names only), its purpose, size, and whether the "
                    "account still lists it (one list call): from the state, else (for PATHs "
                    "given) the reuse cache by content.")
    mp.add_argument("paths", nargs="*", metavar="PATH",
                    help="files and folders to look up (default: every file the state knows)")
    mp.add_argument("--state", metavar="FILE",
                    help="the state file to read (default: this account's)")
    mp.add_argument("--json", action="store_true",
                    help="one JSON object per path: path, file_id, stored_as, purpose, bytes, "
                         "listed, source, changed")
    mp.set_defaults(func=_do_map, not_on_emulator="the emulator is new each run: nothing to map")
