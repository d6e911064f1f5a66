"""Scanning: which files a batch holds (walking folders) and their local checks and hashes.

Pure but for the file system: nothing here talks to the service. :func:`collect` walks the
paths; :func:`check_files` preflights each file locally; :func:`hash_where_needed` hashes the
files whose content could match something already known.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._config import Limits
from ._filerules import upload_filename
from ._hashing import sha256_of
from ._preflight import LocalFile, inspect_file_head
from ._report import FileResult
from ._state import Record
from .errors import ConfigurationError, KimiError, LocalFileError

if TYPE_CHECKING:
    import pathspec

__all__ = ["SAMPLE_BYTES", "SKIPPED_DIRS", "Item", "check_files", "check_pattern_options", "check_patterns",
           "check_unverified", "collect", "hash_where_needed", "matches_filters", "read_patterns"]

#: Folders never walked into (besides hidden ones): build caches, not documents.
SKIPPED_DIRS = frozenset({"__pycache__"})

T = TypeVar("T")


@functools.lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def check_patterns(patterns: Sequence[str], *, what: str) -> None:
    """Refuse a pattern gitignore rules cannot read, naming it (``what``: where it came from).

    Raises:
        ConfigurationError: the pattern and why.
    """
    for pattern in patterns:
        try:
            spec = _spec((pattern,))
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{what}: bad pattern {pattern!r} ({exc}); patterns follow "
                                     "gitignore rules") from None
        compiled = list(getattr(spec, "patterns", ()))
        if (pattern.strip() and not pattern.startswith("#") and compiled
                and all(p.include is None for p in compiled)):
            # not blank, no comment, and yet no rule: it can never match (an unclosed '[')
            raise ConfigurationError(f"{what}: bad pattern {pattern!r} (it can never match: an "
                                     "unclosed '[' ?); patterns follow gitignore rules")


def check_pattern_options(include: object, exclude: object) -> None:
    """The ``include`` and ``exclude`` options of a folder walk (``ingest``, ``extract_many``):
    each a list of patterns gitignore rules can read.

    Raises:
        ConfigurationError: the option that is not such a list, or the bad pattern.
    """
    for name, value in (("include", include), ("exclude", exclude)):
        if (isinstance(value, (str, bytes)) or not isinstance(value, Iterable)
                or not all(isinstance(p, str) for p in value)):
            raise ConfigurationError(f"{name} must be a list of glob patterns, not {value!r}")
        check_patterns(list(value), what=name)


def read_patterns(path: str | os.PathLike[str]) -> list[str]:
    """The patterns of a file in gitignore form (``--exclude-from .gitignore``): one a line;
    blank lines and ``#`` comments are kept for the matcher, which skips them.

    Raises:
        ConfigurationError: the file cannot be read, or holds a bad pattern (both named).
    """
    shown = os.fsdecode(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"{shown}: cannot read the patterns file ({why})") from None
    check_patterns(lines, what=shown)
    return lines


def matches_filters(rel: str, include: Sequence[str], exclude: Sequence[str], *,
                    is_dir: bool = False) -> bool:
    """Is a file (path relative to its root, '/'-separated) selected by the filters?

    The patterns follow gitignore rules (pathspec's implementation of git's wildmatch): a
    pattern without a slash matches a name at any depth (``notes`` is the file or the folder
    ``notes`` anywhere, and everything under it), one with a slash is anchored to the root,
    ``**/`` spans folders, a trailing ``/`` matches folders only, and a later ``!pattern``
    takes back what an earlier one matched. With includes, the file must match them; it must
    not match the excludes. ``is_dir``: ``rel`` is a folder.
    """
    shown = rel + "/" if is_dir else rel
    if include and not _spec(tuple(include)).match_file(shown):
        return False
    return not (exclude and _spec(tuple(exclude)).match_file(shown))


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
    out = _Collected(skip)
    prune = bool(exclude) and not any(p.lstrip().startswith("!") for p in exclude)
    for raw in paths:
        root = Path(raw)
        shown = os.fsdecode(root)
        if root.is_dir():
            walk = _FolderWalk(root, out, include, exclude, prune=prune,
                               follow_links=follow_links)
            if walk.run() == 0:
                out.rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                    f"{shown}: no eligible files in this folder (hidden files are skipped"
                    + (", and the --include/--exclude filters applied" if include or exclude
                       else "") + ")", path=shown, rule="eligible")))
        elif os.path.lexists(root):
            out.add(root)  # named explicitly: checked by the preflight (FIFO, loop, ...)
        else:
            out.rejected.append(FileResult(shown, "rejected", error=LocalFileError(
                f"{shown}: no such file or folder", path=shown, rule="exists")))
    return out.files, out.rejected


class _Collected:
    """What :func:`collect` found: the files in order, without repeats or the paths in
    ``skip``, and the rejected results."""

    def __init__(self, skip: Iterable[Path]) -> None:
        self.skipped = {os.path.abspath(p) for p in skip}
        self.skipped_real = {os.path.realpath(p) for p in skip}
        self.seen: set[str] = set()
        self.files: list[Path] = []
        self.rejected: list[FileResult] = []

    def add(self, p: Path) -> None:
        key = os.path.abspath(p)
        if key in self.seen or key in self.skipped or (
                self.skipped_real and os.path.islink(p)
                and os.path.realpath(p) in self.skipped_real):
            return
        self.seen.add(key)
        self.files.append(p)

    def refuse_link(self, link: Path, why: str) -> None:
        shown = os.fsdecode(link)
        self.rejected.append(FileResult(shown, "rejected", error=LocalFileError(
            f"{shown}: not followed: a symbolic link to {os.path.realpath(link)}, {why}; pass "
            "--follow-links (follow_links=True) to include it", path=shown, rule="link")))


def _link_verdict(link: Path, root_real: str) -> str | None:
    """None when the walk may take a link without follow_links, else why not."""
    real = os.path.realpath(link)
    if not _inside(real, root_real):
        return "outside the folder given"
    if real != root_real and _left_out(os.path.relpath(real, root_real).split(os.sep)):
        return "a hidden or skipped path inside the folder, which the walk leaves out"
    return None


class _FolderWalk:
    """The walk of one folder given to :func:`collect` (see its docstring for the rules)."""

    def __init__(self, root: Path, out: _Collected, include: Sequence[str],
                 exclude: Sequence[str], *, prune: bool, follow_links: bool) -> None:
        self.root, self.out = root, out
        self.include, self.exclude = include, exclude
        #: excluded folders are not walked: no "!" pattern could take a file back
        self.prune = prune
        self.follow_links = follow_links
        self.root_real = os.path.realpath(root)
        self.walked = {self.root_real}
        #: files found: taken, or refused as links
        self.found = 0

    def run(self) -> int:
        """Walk the folder; the number of files found."""
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=self.follow_links):
            here = Path(dirpath)
            dirnames[:] = [d for d in sorted(dirnames) if self._descend(here / d)]
            for name in sorted(filenames):
                if not name.startswith("."):
                    self._file(here / name)
        return self.found

    def _descend(self, sub: Path) -> bool:
        """Walk into the folder ``sub``? (A link refused is a result.)"""
        if sub.name.startswith(".") or sub.name in SKIPPED_DIRS:
            return False
        rel = sub.relative_to(self.root).as_posix()
        if self.prune and not matches_filters(rel, (), self.exclude, is_dir=True):
            return False  # excluded, and no "!" pattern could take a file back
        real = os.path.realpath(sub) if self.follow_links else ""
        if sub.is_symlink():
            if not matches_filters(rel, (), self.exclude, is_dir=True):
                return False
            why = _link_verdict(sub, self.root_real)
            if why is None:
                return False  # its target is walked under its own name
            if not self.follow_links:
                self.out.refuse_link(sub, why)
                self.found += 1
                return False
            if real in self.walked or _inside(self.root_real, real):
                return False  # walked already, or an ancestor of the folder: a loop
        elif self.follow_links and real in self.walked:
            return False  # reached through a followed link before
        self.walked.add(real)
        return True

    def _file(self, full: Path) -> None:
        """Take the file ``full`` if the filters select it (a link refused is a result)."""
        rel = full.relative_to(self.root).as_posix()
        if not matches_filters(rel, self.include, self.exclude):
            return
        if not self.follow_links and full.is_symlink() and os.path.exists(full):
            why = _link_verdict(full, self.root_real)
            if why is not None:
                self.out.refuse_link(full, why)
                self.found += 1
                return
        self.out.add(full)
        self.found += 1


@dataclass(slots=True)
class Item:
    """A file of the batch that passed the local checks."""

    local: LocalFile
    shown: str
    #: None until a decision needs it: see :func:`hash_where_needed`
    sha256: str | None = None
    #: False for a file taken as unchanged from its record (size, mtime, ctime, inode and
    #: device as recorded): not opened, and its ``local.mime_type`` unknown, until
    #: :func:`check_unverified` checks it
    checked: bool = True
    #: the file id its record holds, when taken as unchanged from it (nothing to rewrite)
    record_id: str | None = None


#: A file this small is hashed as it is checked, from the bytes the check read (no second
#: open when a decision needs its hash); a larger one is compared by its first this many
#: bytes before it is hashed whole (see :func:`hash_where_needed`).
SAMPLE_BYTES = 64 * 1024


def check_files(files: Sequence[Path], *, purpose: str, limits: Limits, allow_any_type: bool,
                stop: threading.Event | None = None,
                records: Sequence[Record] = ()) -> list[Item | FileResult | None]:
    """Preflight every file locally, on several threads (libmagic releases the GIL); in the
    input order, each an :class:`Item`, a rejected result, or None when ``stop`` was set.
    Each file is opened once; one of at most :data:`SAMPLE_BYTES` is hashed from that read.

    A file that ``records`` (the state's) say was uploaded with this purpose, and whose size
    and mtime are still the recorded ones, is not opened: its Item carries the recorded hash
    and ``checked=False`` (see :func:`check_unverified`)."""
    trusted = {r.path: r for r in records
               if r.status == "uploaded" and r.sha256 and r.file_id and r.purpose == purpose}

    def one(path: Path) -> Item | FileResult | None:
        if stop is not None and stop.is_set():
            return None
        shown = os.fsdecode(path)
        rec = trusted.get(os.path.abspath(path)) if trusted else None
        if rec is not None:
            unchanged = _unchanged(path, rec)
            if unchanged is not None:
                return Item(unchanged, shown, rec.sha256, checked=False, record_id=rec.file_id)
        try:
            local, head = inspect_file_head(path, purpose=purpose, limits=limits,
                                            allow_any_type=allow_any_type)
        except KimiError as exc:
            return FileResult(shown, "rejected", error=exc)
        small = len(head) == local.size <= SAMPLE_BYTES
        return Item(local, shown, hashlib.sha256(head).hexdigest() if small else None)

    def run(paths: Sequence[Path]) -> list[Item | FileResult | None]:
        return [one(p) for p in paths]

    # the first files in this thread: when their checks are mostly libmagic's pattern
    # database (which releases the GIL), the rest go to threads in blocks; when they are
    # mostly Python (plain text), threads would only contend for the GIL
    started = time.perf_counter()
    done = run(files[:CHECK_BLOCK])
    rest = files[CHECK_BLOCK:]
    workers = min(os.cpu_count() or 1, -(-len(rest) // CHECK_BLOCK))
    if workers <= 1 or (time.perf_counter() - started) / len(done) < PARALLEL_CHECK_SECONDS:
        return done + run(rest)
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="kimi-check") as pool:
        try:
            for block in pool.map(run, [rest[i:i + CHECK_BLOCK]
                                        for i in range(0, len(rest), CHECK_BLOCK)]):
                done.extend(block)
            return done
        except KeyboardInterrupt:
            if stop is not None:
                stop.set()  # the checks still queued return at once
            raise


#: Files checked together (one task of the check threads).
CHECK_BLOCK = 128
#: Checks slower than this per file (libmagic's pattern database, which releases the GIL)
#: run on threads; faster ones (mostly Python) in one thread, measured on the first block.
PARALLEL_CHECK_SECONDS = 150e-6


def _unchanged(path: Path, rec: Record) -> LocalFile | None:
    """The file as its record describes it, when its size, mtime, ctime, inode and device are
    the recorded ones (as git and rsync judge: a rewrite with its mtime put back changes the
    ctime, a file put in its place the inode). A record without them (an older version's)
    proves nothing: the file is checked and hashed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or (
            st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev) != (
            rec.size, rec.mtime_ns, rec.ctime_ns, rec.inode, rec.device):
        return None
    return LocalFile(path=path, filename=upload_filename(path)[0], size=st.st_size,
                     mtime_ns=st.st_mtime_ns, mime_type="", ctime_ns=st.st_ctime_ns,
                     inode=st.st_ino, device=st.st_dev)


def check_unverified(items: Sequence[Item], records: Sequence[Record],
                     on_server: Collection[str], *, purpose: str, limits: Limits,
                     allow_any_type: bool) -> list[tuple[Item, FileResult | None]]:
    """Check in full the files taken as unchanged (``checked=False``) whose content the
    account no longer holds (no uploaded record of their hash names a file ``on_server``):
    they will be sent. Each such item with None (checked; its ``local`` replaced, the recorded
    hash kept, so the bytes sent are compared with it) or its rejected result."""
    held = {r.sha256 for r in records if r.status == "uploaded" and r.file_id in on_server}
    out: list[tuple[Item, FileResult | None]] = []
    for item in items:
        if item.checked or item.sha256 in held:
            continue
        try:
            item.local = inspect_file_head(item.local.path, purpose=purpose, limits=limits,
                                           allow_any_type=allow_any_type)[0]
        except KimiError as exc:
            out.append((item, FileResult(item.shown, "rejected", error=exc)))
            continue
        item.checked = True
        out.append((item, None))
    return out


def hash_where_needed(items: Sequence[Item], records: Sequence[Record],
                      reusable_sizes: Collection[int] = (), *,
                      listed: Collection[str] | None = None,
                      purpose: str | None = None) -> list[tuple[Item, FileResult]]:
    """Hash, before uploading, only the files whose content could match something: those
    whose size a file uploaded before or a file of the reuse cache (``reusable_sizes``)
    shares (identical content has identical size), those an interrupted run left an intent
    for, and those whose size and first
    :data:`SAMPLE_BYTES` another file of the batch shares. The others are hashed as they are
    sent, and only when the state records them. With ``listed`` (the ids the account lists)
    and ``purpose``, a record counts only while its file is listed and of that purpose: a
    copy that is gone or of another purpose cannot be matched. Returns each file that cannot
    be read, with its rejected result (its ``sha256`` stays None)."""
    sizes = Counter(i.local.size for i in items)
    known_sizes = {r.size for r in records if r.status == "uploaded" and r.sha256
                   and (listed is None or r.file_id in listed)
                   and (purpose is None or r.purpose == purpose)}
    known_sizes.update(reusable_sizes)
    pending = {r.path for r in records if r.status == "pending"}
    must = [i for i in items if i.sha256 is None and (
        i.local.size in known_sizes or os.path.abspath(i.local.path) in pending)]
    # files of one size could be twins: compared by their first bytes, hashed only when those
    # are the same (or when the size is one of the above, whose hash is taken anyway)
    maybe = [i for i in items if i.sha256 is None and sizes[i.local.size] > 1]
    failures: dict[int, tuple[Item, FileResult]] = {}

    def unreadable(item: Item, exc: OSError) -> None:
        failures[id(item)] = item, FileResult(item.shown, "rejected", error=LocalFileError(
            f"{item.shown}: cannot read: {exc.strerror or exc}", path=item.shown))

    def sample(item: Item) -> bytes | None:
        try:
            with open(item.local.path, "rb", buffering=0) as fh:
                return hashlib.sha256(fh.read(SAMPLE_BYTES)).digest()
        except OSError as exc:
            unreadable(item, exc)
            return None

    def digest(item: Item) -> None:
        try:
            item.sha256 = sha256_of(item.local.path)
        except OSError as exc:
            unreadable(item, exc)

    wanted = {id(i): i for i in must}
    hashed_sizes = {i.local.size for i in must}
    to_sample = [i for i in maybe if id(i) not in wanted]
    starts = dict(zip(map(id, to_sample), _each(sample, to_sample), strict=True))
    groups = Counter((i.local.size, starts[id(i)]) for i in to_sample if id(i) not in failures)
    for item in to_sample:
        if id(item) not in failures and (item.local.size in hashed_sizes
                                         or groups[item.local.size, starts[id(item)]] > 1):
            wanted[id(item)] = item
    if wanted:
        _each(digest, list(wanted.values()))
    return [failures[id(i)] for i in items if id(i) in failures]


def _each(fn: Callable[[Item], T], items: Sequence[Item]) -> list[T]:
    """``fn`` over ``items`` in order, on as many threads as cores (hashlib and file reads
    release the GIL), or in this thread for one item."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with cf.ThreadPoolExecutor(min(len(items), os.cpu_count() or 1),
                               thread_name_prefix="kimi-hash") as pool:
        return list(pool.map(fn, items))
