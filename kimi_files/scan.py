"""Scanning: which files a batch holds (walking folders) and their local checks and hashes.

Pure but for the file system: nothing here talks to the service. :func:`collect` walks the
paths; :func:`check_files` preflights each file locally; :func:`hash_where_needed` hashes the
files whose content could match something already known.
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import os
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Limits
from .errors import KimiError, LocalFileError
from .preflight import LocalFile, inspect_file
from .report import FileResult
from .state import Record, sha256_of

__all__ = ["SKIPPED_DIRS", "Item", "check_files", "collect", "hash_where_needed",
           "matches_filters"]

#: Folders never walked into (besides hidden ones): build caches, not documents.
SKIPPED_DIRS = frozenset({"__pycache__"})


def matches_filters(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Is a file (path relative to its root, '/'-separated) selected by the glob filters?

    A pattern matches the relative path or the file's name. With includes, one must match;
    no exclude may.
    """
    name = rel.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern)

    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def _inside(real: str, root_real: str) -> bool:
    """Is the resolved path ``real`` the folder ``root_real`` or under it? Pure."""
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _left_out(rel_parts: Sequence[str]) -> bool:
    """Would the walk leave out a path with these parts (relative to its root)? Pure."""
    return any(part.startswith(".") or part in SKIPPED_DIRS for part in rel_parts)


def collect(
    paths: Iterable[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip: Iterable[Path] = (),
    follow_links: bool = False,
) -> tuple[list[Path], list[FileResult]]:
    """The files named or found under the folders named, in order, without repeats.

    Folders are walked recursively; hidden files and folders inside them, ``__pycache__``
    folders and the paths in ``skip`` are left out. A missing path is a rejected result.

    Symbolic links met in a folder: a link to a file the walk would take from the same folder
    is collected (and checked as its target by the preflight); a link to a directory is not
    descended. A link that leads anywhere else (outside the folder, or to something the walk
    leaves out, such as a hidden file) is a rejected result that says where it points, unless
    ``follow_links`` is true: then file links are collected wherever they lead and directory
    links are descended, each real directory at most once (no loops). A broken link is
    collected so that the preflight reports it. Paths named explicitly are always taken.
    """
    skipped = {os.path.abspath(p) for p in skip}
    skipped_real = {os.path.realpath(p) for p in skip}
    seen: set[str] = set()
    files: list[Path] = []
    rejected: list[FileResult] = []

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key in seen or key in skipped or (
                skipped_real and os.path.islink(p) and os.path.realpath(p) in skipped_real):
            return
        seen.add(key)
        files.append(p)

    def refuse_link(link: Path, why: str) -> None:
        shown = os.fsdecode(link)
        rejected.append(FileResult(shown, "rejected", error=LocalFileError(
            f"{shown}: not followed: a symbolic link to {os.path.realpath(link)}, {why}; pass "
            "--follow-links (follow_links=True) to include it", path=shown, rule="link")))

    def link_verdict(link: Path, root_real: str) -> str | None:
        """None when the walk may take a link without follow_links, else why not."""
        real = os.path.realpath(link)
        if not _inside(real, root_real):
            return "outside the folder given"
        if real != root_real and _left_out(os.path.relpath(real, root_real).split(os.sep)):
            return "a hidden or skipped path inside the folder, which the walk leaves out"
        return None

    for raw in paths:
        root = Path(raw)
        shown = os.fsdecode(root)
        if root.is_dir():
            found = 0
            root_real = os.path.realpath(root)
            walked = {root_real}
            for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
                here = Path(dirpath)
                kept = []
                for d in sorted(dirnames):
                    if d.startswith(".") or d in SKIPPED_DIRS:
                        continue
                    sub = here / d
                    real = os.path.realpath(sub) if follow_links else ""
                    if sub.is_symlink():
                        if not matches_filters(sub.relative_to(root).as_posix(), (), exclude):
                            continue
                        why = link_verdict(sub, root_real)
                        if why is None:
                            continue  # its target is walked under its own name
                        if not follow_links:
                            refuse_link(sub, why)
                            found += 1
                            continue
                        if real in walked or _inside(root_real, real):
                            continue  # walked already, or an ancestor of the folder: a loop
                    elif follow_links and real in walked:
                        continue  # reached through a followed link before
                    walked.add(real)
                    kept.append(d)
                dirnames[:] = kept
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    full = here / name
                    rel = full.relative_to(root).as_posix()
                    if not matches_filters(rel, include, exclude):
                        continue
                    if not follow_links and full.is_symlink() and os.path.exists(full):
                        why = link_verdict(full, root_real)
                        if why is not None:
                            refuse_link(full, why)
                            found += 1
                            continue
                    add(full)
                    found += 1
            if found == 0:
                rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                    f"{shown}: no eligible files in this folder (hidden files are skipped"
                    + (", and the --include/--exclude filters applied" if include or exclude
                       else "") + ")", path=shown, rule="eligible")))
        elif os.path.lexists(root):
            add(root)  # named explicitly: checked by the preflight (FIFO, loop, ...)
        else:
            rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                f"{shown}: no such file or folder", path=shown, rule="exists")))
    return files, rejected


@dataclass
class Item:
    """A file of the batch that passed the local checks."""

    local: LocalFile
    shown: str
    #: None until a decision needs it: see :func:`hash_where_needed`
    sha256: str | None = None


def check_files(files: Sequence[Path], *, purpose: str, limits: Limits, allow_any_type: bool,
                stop: threading.Event | None = None) -> list[Item | FileResult | None]:
    """Preflight every file locally, on several threads (libmagic releases the GIL); in the
    input order, each an :class:`Item`, a rejected result, or None when ``stop`` was set."""

    def one(path: Path) -> Item | FileResult | None:
        if stop is not None and stop.is_set():
            return None
        shown = os.fsdecode(path)
        try:
            local = inspect_file(path, purpose=purpose, limits=limits,
                                 allow_any_type=allow_any_type)
        except KimiError as exc:
            return FileResult(shown, "rejected", error=exc)
        return Item(local, shown)

    workers = max(1, min(len(files), os.cpu_count() or 1))
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="kimi-check") as pool:
        try:
            return list(pool.map(one, files))
        except KeyboardInterrupt:
            if stop is not None:
                stop.set()  # the checks still queued return at once
            raise


def hash_where_needed(items: Sequence[Item], records: Sequence[Record],
                      reusable_sizes: Collection[int] = ()) -> list[tuple[Item, FileResult]]:
    """Hash, before uploading, only the files whose content could match something: those
    whose size another file of the batch or a file uploaded before shares (identical content
    has identical size), or a file of the reuse cache (``reusable_sizes``), and those an
    interrupted run left an intent for. The others are
    hashed as they are sent. Returns each file that cannot be read, with its rejected result
    (its ``sha256`` stays None)."""
    sizes = Counter(i.local.size for i in items)
    known_sizes = {r.size for r in records if r.status == "uploaded" and r.sha256}
    known_sizes.update(reusable_sizes)
    pending = {r.path for r in records if r.status == "pending"}
    wanted = [i for i in items if sizes[i.local.size] > 1 or i.local.size in known_sizes
              or os.path.abspath(i.local.path) in pending]
    if not wanted:
        return []

    def digest(item: Item) -> tuple[Item, FileResult] | None:
        try:
            item.sha256 = sha256_of(item.local.path)
        except OSError as exc:
            return item, FileResult(item.shown, "rejected", error=LocalFileError(
                f"{item.shown}: cannot read: {exc.strerror or exc}", path=item.shown))
        return None

    workers = max(1, min(len(wanted), os.cpu_count() or 1))
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="kimi-hash") as pool:
        return [r for r in pool.map(digest, wanted) if r is not None]
