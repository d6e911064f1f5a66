"""Local checks of a file before any byte of it is sent: the I/O (stat, open, python-magic,
pypdf when installed) that feeds the pure rules of :mod:`kimi_files._filerules`, applied by
:func:`inspect_file`. Every refusal is a :class:`~kimi_files.PreflightError` whose message
names the file, the rule and what to do.

A symbolic link is checked as what it points to: its type, size and content are the target's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import Limits
from ._filerules import (
    PDF_TEXT_PAGES,
    LocalFile,
    check_jsonl_lines,
    check_purpose,
    check_size,
    classify_type,
    is_state_store,
    refused_kind,
    upload_filename,
)
from .errors import LocalFileError, UnsupportedFileTypeError

if TYPE_CHECKING:
    import magic

__all__ = [
    "LocalFile",
    "detect_mime_of",
    "inspect_file",
    "inspect_file_head",
    "pdf_text_warning",
]

# --- I/O --------------------------------------------------------------------------------------


def looks_like_text(sample: bytes) -> bool:
    """Is this sample UTF-8 text (libmagic calls very short text "octet-stream")? Pure."""
    if not sample or b"\0" in sample:
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # not just a character cut at the sample's end
            return False
        text = sample[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


_local = threading.local()
#: How much of a file libmagic reads to decide its type.
MAGIC_BYTES = 256 * 1024


def _magic() -> magic.Magic:
    """This thread's libmagic handle (python-magic's shared one serialises every call; with
    one per thread, batch preflight runs on every core, ctypes releasing the GIL)."""
    handle = getattr(_local, "magic", None)
    if handle is None:
        import magic

        handle = _local.magic = magic.Magic(mime=True)
        # libmagic reads up to 7 MiB of each file by default; its verdict needs far less, and
        # reading (and scanning) 7 MiB of a large text file costs memory and time
        handle.setparam(magic.MAGIC_PARAM_BYTES_MAX, MAGIC_BYTES)
    return handle


#: Names whose plain text is typed without libmagic's pattern database (see detect_mime_of).
PLAIN_TEXT_EXTENSIONS = (".txt", ".text")


#: Bytes that are not text to libmagic (its ``text_chars``: C0 controls but BEL, BS, HT, LF,
#: VT, FF, CR and ESC; and DEL); every other byte, for :func:`_plain_text`.
_TEXT_BYTES = bytes(b for b in range(256)
                    if not (b < 0x20 and b not in b"\a\b\t\n\v\f\r\x1b") and b != 0x7F)


def _plain_text(head: bytes) -> bool:
    """Would libmagic's built-in tests call ``head`` plain text (UTF-8, no byte that is not
    text), with no ``<`` (no markup)? Two passes in C, no libmagic."""
    if b"<" in head or head.translate(None, _TEXT_BYTES):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def detect_mime_of(head: bytes, path: str, name: str = "") -> str:
    """The MIME type of content that starts with ``head`` (the file's first
    :data:`MAGIC_BYTES`, or all of it: what libmagic would read of the file), by libmagic.

    A file named ``*.txt`` (``name``: the name sent) whose ``head`` is UTF-8 text (no byte
    libmagic counts as binary) with no ``<`` (no markup: no SVG, HTML or XML) is
    ``text/plain`` without libmagic, whose pattern database takes ~0.3 ms a file (and its
    loading ~20 ms a process): its patterns could only name another text type there (a
    script, a source file), which the type rules treat alike."""
    if name.lower().endswith(PLAIN_TEXT_EXTENSIONS) and _plain_text(head):
        return "text/plain"
    import magic

    try:
        mime = str(_magic().from_buffer(head))
    except magic.MagicException as exc:
        raise LocalFileError(f"{path}: cannot detect the file's type: {exc}",
                             path=path, rule="readable") from None
    if mime == "application/octet-stream" and looks_like_text(head[:8192]):
        mime = "text/plain"
    return mime


def _describe_mode(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _link_target(path: Path) -> str | None:
    """Where a symbolic link points, as written in the link; None when it is not a link."""
    try:
        return os.fsdecode(os.readlink(path))
    except OSError:
        return None


def stat_file(path: Path) -> os.stat_result:
    """stat() of what ``path`` leads to (a link is followed), with errors that name the path,
    where a link points, and the cause."""
    shown = os.fsdecode(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return st  # the common case: no readlink, which only the messages below need
    target = _link_target(path)
    via = "" if target is None else f" (a symbolic link to {target})"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if target is not None:
            raise LocalFileError(
                f"{shown}: broken symbolic link: it points to {target}, which does not exist; "
                "fix or remove the link", path=shown, rule="exists") from None
        raise LocalFileError(f"{shown}: no such file", path=shown, rule="exists") from None
    except PermissionError:
        raise LocalFileError(f"{shown}{via}: permission denied", path=shown,
                             rule="readable") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            where = "on its path" if target is None else (
                f"(it points to {target}, which leads back to itself or through too many links)")
            raise LocalFileError(f"{shown}: symbolic link loop {where}; fix or remove the link",
                                 path=shown, rule="exists") from None
        raise LocalFileError(f"{shown}{via}: {exc.strerror or exc}", path=shown,
                             rule="exists") from None
    if not stat.S_ISREG(st.st_mode):
        raise LocalFileError(
            f"{shown}{via}: {_describe_mode(st.st_mode)}, not a regular file; only files can be "
            "uploaded",
            path=shown,
            rule="regular",
        )
    return st


_pypdf_quiet = threading.Lock()
_pypdf_checks = 0
_pypdf_level = logging.NOTSET


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs what it repairs in a broken file ("EOF marker not found"), unnamed: while
    any check runs (batch checks run on several threads), only its errors pass."""
    global _pypdf_checks, _pypdf_level
    logger = logging.getLogger("pypdf")
    with _pypdf_quiet:
        if _pypdf_checks == 0:
            _pypdf_level = logger.level
            logger.setLevel(max(logging.ERROR, _pypdf_level))
        _pypdf_checks += 1
    try:
        yield
    finally:
        with _pypdf_quiet:
            _pypdf_checks -= 1
            if _pypdf_checks == 0:
                logger.setLevel(_pypdf_level)


def pdf_text_warning(path: Path, shown: str | None = None) -> str | None:
    """A warning when the PDF at ``path`` has no text layer (a scanned, image-only PDF): the
    service refuses such a file with ``text extract error``. No network call.

    Needs pypdf (the ``pdf`` extra); without it, None. Looks at most at the first
    :data:`PDF_TEXT_PAGES` pages and stops at the first text found. Never raises: a PDF pypdf
    cannot read gets a warning that says so."""
    try:
        import pypdf
    except ImportError:
        return None
    shown = os.fsdecode(path) if shown is None else shown
    try:
        # an open file, not a path: given a path, pypdf reads the whole file into memory
        with _quiet_pypdf(), open(path, "rb") as fh:
            reader = pypdf.PdfReader(fh)
            if reader.is_encrypted:
                reader.decrypt("")
            pages = reader.pages
            count = len(pages)
            for i in range(min(count, PDF_TEXT_PAGES)):
                if pages[i].extract_text().strip():
                    return None
    except Exception as exc:  # a broken PDF is the server's to refuse; the check only warns
        return (f"{shown}: could not check the PDF for a text layer ({type(exc).__name__}: "
                f"{str(exc)[:200]}); the service may refuse it")
    where = "" if count <= PDF_TEXT_PAGES else f" in its first {PDF_TEXT_PAGES} pages"
    return (f"{shown}: no extractable text{where} (no text layer: a scanned or image-only "
            "PDF): the service answers `text extract error`; OCR it first or upload the pages "
            'as images with purpose="image"')


_NEVER_STORES = ("it is never uploaded, even with allow_any_type: keep state stores outside the "
                 "folders you upload (--state PATH)")
#: What a state store at ``X`` keeps next to it: ``X-wal``, ``X-shm``, ``X.lock``.
_STORE_SIDE_FILES = ("-wal", "-shm", ".lock")


def _store_of_side_file(path: Path) -> Path | None:
    """The state store whose journal or lock file ``path`` is, if it is one."""
    name = path.name
    for suffix in _STORE_SIDE_FILES:
        if name.endswith(suffix) and len(name) > len(suffix):
            store = path.with_name(name[: -len(suffix)])
            try:
                with open(store, "rb") as fh:
                    if is_state_store(fh.read(100)):
                        return store
            except OSError:
                pass
    return None


def _refuse_state_store(p: Path, shown: str, detected: str, head: bytes) -> None:
    """A state store is never sent, whatever the type rules allow: it lists the path of every
    file uploaded (and so do its -wal file and, as junk, its lock file)."""
    if refused_kind(detected) == "a SQLite database" and is_state_store(head[:100]):
        raise UnsupportedFileTypeError(
            f"{shown}: the content is {detected} (a SQLite database): a kimi-files state store, "
            f"which lists the paths of the files it uploaded; {_NEVER_STORES}",
            path=shown,
            rule="state_store",
        )
    store = _store_of_side_file(p)
    if store is not None:
        raise UnsupportedFileTypeError(
            f"{shown}: a side file of the kimi-files state store {os.fsdecode(store)}; "
            + _NEVER_STORES,
            path=shown,
            rule="state_store",
        )


def inspect_file(
    path: str | os.PathLike[str],
    *,
    purpose: str,
    limits: Limits,
    allow_any_type: bool = False,
) -> LocalFile:
    """Run every local check on ``path``; returns what the upload needs.

    A symbolic link is checked as its target (type, size, content); the type detected (and
    sent as the part's Content-Type) is the target's. ``allow_any_type`` skips the type rules,
    never the purpose, size or JSON-lines (``batch``) rules."""
    return inspect_file_head(path, purpose=purpose, limits=limits,
                             allow_any_type=allow_any_type)[0]


def inspect_file_head(
    path: str | os.PathLike[str],
    *,
    purpose: str,
    limits: Limits,
    allow_any_type: bool = False,
) -> tuple[LocalFile, bytes]:
    """:func:`inspect_file`, and the file's first :data:`MAGIC_BYTES` as read for the checks
    (the whole file when it is that small): the file is opened once, and its type detected
    from those bytes."""
    p = path if isinstance(path, Path) else Path(path)  # no copy: a batch holds thousands
    shown = os.fsdecode(p)
    check_purpose(purpose, shown)
    st = stat_file(p)
    try:
        with open(p, "rb", buffering=0) as fh:
            head = fh.read(min(st.st_size, MAGIC_BYTES) or 1)
    except PermissionError:
        raise LocalFileError(f"{shown}: permission denied (cannot read the file)", path=shown,
                             rule="readable") from None
    except OSError as exc:
        raise LocalFileError(f"{shown}: cannot read: {exc.strerror or exc}", path=shown,
                             rule="readable") from None
    check_size(shown, st.st_size, limits)
    filename, name_warnings = upload_filename(p)
    detected = detect_mime_of(head, shown, filename)
    _refuse_state_store(p, shown, detected, head)
    mime, type_warnings = classify_type(
        shown, filename, detected, purpose, allow_any_type=allow_any_type
    )
    content_warnings: tuple[str, ...] = ()
    if purpose == "batch":
        try:
            with open(p, "rb") as fh:
                check_jsonl_lines(shown, fh)
        except OSError as exc:
            raise LocalFileError(f"{shown}: cannot read: {exc.strerror or exc}", path=shown,
                                 rule="readable") from None
    elif mime == "application/pdf" and purpose == "file-extract":
        warning = pdf_text_warning(p, shown)
        content_warnings = () if warning is None else (warning,)
    return LocalFile(
        path=p,
        filename=filename,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        mime_type=mime,
        warnings=name_warnings + type_warnings + content_warnings,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        device=st.st_dev,
    ), head
