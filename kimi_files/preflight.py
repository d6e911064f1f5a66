"""Local checks of a file before any byte of it is sent.

The rules are pure functions (:func:`check_purpose`, :func:`check_size`,
:func:`classify_type`, :func:`upload_filename`); :func:`inspect_file` does the I/O (stat,
open, python-magic) and applies them. Every refusal is a :class:`~kimi_files.PreflightError`
whose message names the file, the rule and what to do.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import KNOWN_PURPOSES, Limits
from .errors import (
    LocalEmptyFileError,
    LocalFileError,
    LocalFileTooLargeError,
    LocalInvalidPurposeError,
    UnsupportedFileTypeError,
)
from .quota import fmt_bytes

__all__ = [
    "LocalFile",
    "check_purpose",
    "check_size",
    "classify_type",
    "detect_mime",
    "inspect_file",
    "upload_filename",
]

#: Content types the extractor cannot read: executables, archives, unknown binary data.
REFUSED_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/x-executable",
        "application/x-sharedlib",
        "application/x-pie-executable",
        "application/x-mach-binary",
        "application/x-dosexec",
        "application/vnd.microsoft.portable-executable",
        "application/x-object",
        "application/x-coredump",
        "application/java-archive",
        "application/x-java-applet",
        "application/x-archive",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-bzip2",
        "application/x-xz",
        "application/x-7z-compressed",
        "application/x-rar",
        "application/vnd.rar",
        "application/zstd",
        "application/x-lzma",
        "application/x-lzip",
        "application/x-compress",
        "application/x-cpio",
        "application/x-iso9660-image",
        "application/x-sqlite3",
        "application/x-bytecode.python",
    }
)
REFUSED_FAMILIES = ("audio/", "video/", "font/", "model/")

#: Formats that are zip or gzip containers underneath; libmagic may call them by the container.
CONTAINER_EXTENSIONS = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".epub": "application/epub+zip",
    ".svgz": "image/svg+xml",
}

_TEXTISH = ("text/", "application/json", "application/xml", "application/javascript",
            "image/svg+xml", "application/x-ndjson", "application/csv")


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file that passed the local checks."""

    path: Path
    filename: str
    size: int
    mtime_ns: int
    mime_type: str
    warnings: tuple[str, ...] = ()


# --- pure rules -------------------------------------------------------------------------------


def check_purpose(purpose: str, path: str | None = None) -> None:
    if purpose not in KNOWN_PURPOSES:
        known = ", ".join(sorted(KNOWN_PURPOSES))
        raise LocalInvalidPurposeError(
            f"{path + ': ' if path else ''}purpose {purpose!r} is not accepted by the platform; "
            f"use one of {known} (file-extract to read a document's text)",
            path=path,
            rule="purpose",
        )


def check_size(path: str, size: int, limits: Limits) -> None:
    if size == 0:
        raise LocalEmptyFileError(
            f"{path}: the file is empty (0 bytes); the platform refuses empty files",
            path=path,
            rule="empty",
        )
    if size > limits.max_file_bytes:
        raise LocalFileTooLargeError(
            f"{path}: {size:,} bytes is over the per-file limit of {fmt_bytes(limits.max_file_bytes)}"
            "; split or compress it first",
            path=path,
            rule="max_file_bytes",
        )


def _is_textish(mime: str) -> bool:
    return mime.startswith(_TEXTISH)


def classify_type(
    path: str, filename: str, detected: str, purpose: str, *, allow_any_type: bool = False
) -> tuple[str, tuple[str, ...]]:
    """(content type to send, warnings) for a detected MIME type; refuses what cannot be read.

    ``allow_any_type`` skips the refusal (the server decides), but not the warnings.
    """
    ext = os.path.splitext(filename)[1].lower()
    expected = CONTAINER_EXTENSIONS.get(ext) or mimetypes.guess_type(filename)[0]
    warnings: list[str] = []
    send = detected
    if ext in CONTAINER_EXTENSIONS and detected in ("application/zip", "application/gzip",
                                                    "application/x-gzip"):
        send = CONTAINER_EXTENSIONS[ext]
    elif (
        expected
        and expected != detected
        and not (_is_textish(expected) and _is_textish(detected))
    ):
        warnings.append(
            f"{path}: the extension {ext} suggests {expected}, but the content is {detected}"
        )
    refused = send in REFUSED_TYPES or send.startswith(REFUSED_FAMILIES)
    if purpose == "image" and not send.startswith("image/"):
        refused = True
    if purpose == "video" and not send.startswith("video/"):
        refused = True
    if purpose == "video" and send.startswith("video/"):
        refused = False
    if purpose == "batch" and not (_is_textish(send) and ext == ".jsonl"):
        refused = True
    if refused and not allow_any_type:
        what = "unknown binary data" if send == "application/octet-stream" else send
        raise UnsupportedFileTypeError(
            f"{path}: the content is {what}, which purpose {purpose!r} cannot use "
            "(executables, archives, media and unknown binary data are refused); "
            "pass allow_any_type=True (--allow-any-type) to send it anyway",
            path=path,
            rule="type",
        )
    return send, tuple(warnings)


def upload_filename(path: Path) -> tuple[str, tuple[str, ...]]:
    """The filename to send: the path's name, made valid UTF-8 if the name is not."""
    name = path.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fixed = os.fsencode(name).decode("utf-8", "replace")
        return fixed, (f"{path!s:.200}: the name is not valid UTF-8; uploaded as {fixed!r}",)
    return name, ()


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


def _magic() -> Any:
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


def detect_mime(path: Path) -> str:
    """The MIME type of the file's content, by libmagic (python-magic)."""
    import magic

    try:
        mime = str(_magic().from_file(os.fspath(path)))
        if mime == "application/octet-stream":
            with open(path, "rb") as fh:
                if looks_like_text(fh.read(8192)):
                    mime = "text/plain"
        return mime
    except (OSError, magic.MagicException) as exc:
        raise LocalFileError(f"{path}: cannot read the file to detect its type: {exc}",
                             path=str(path), rule="readable") from None


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


def stat_file(path: Path) -> os.stat_result:
    """stat() with errors that name the path and the cause."""
    shown = os.fsdecode(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise LocalFileError(f"{shown}: broken symbolic link", path=shown,
                                 rule="exists") from None
        raise LocalFileError(f"{shown}: no such file", path=shown, rule="exists") from None
    except PermissionError:
        raise LocalFileError(f"{shown}: permission denied", path=shown,
                             rule="readable") from None
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise LocalFileError(f"{shown}: {reason}", path=shown, rule="exists") from None
    if not stat.S_ISREG(st.st_mode):
        raise LocalFileError(
            f"{shown}: {_describe_mode(st.st_mode)}, not a regular file; only files can be uploaded",
            path=shown,
            rule="regular",
        )
    return st


def inspect_file(
    path: str | os.PathLike[str],
    *,
    purpose: str,
    limits: Limits,
    allow_any_type: bool = False,
) -> LocalFile:
    """Run every local check on ``path``; returns what the upload needs."""
    p = Path(path)
    shown = os.fsdecode(p)
    check_purpose(purpose, shown)
    st = stat_file(p)
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise LocalFileError(f"{shown}: permission denied (cannot read the file)", path=shown,
                             rule="readable") from None
    except OSError as exc:
        raise LocalFileError(f"{shown}: cannot read: {exc.strerror or exc}", path=shown,
                             rule="readable") from None
    check_size(shown, st.st_size, limits)
    filename, name_warnings = upload_filename(p)
    mime, type_warnings = classify_type(
        shown, filename, detect_mime(p), purpose, allow_any_type=allow_any_type
    )
    return LocalFile(
        path=p,
        filename=filename,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        mime_type=mime,
        warnings=name_warnings + type_warnings,
    )
