"""Local checks of a file before any byte of it is sent.

The rules are pure functions (:func:`check_purpose`, :func:`check_size`,
:func:`type_refusal` and :func:`classify_type`, :func:`check_jsonl_lines`,
:func:`upload_filename`); :func:`inspect_file` does the I/O (stat, open, python-magic, pypdf
when installed) and applies them. Every refusal is a :class:`~kimi_files.PreflightError`
whose message names the file, the rule and what to do.

A symbolic link is checked as what it points to: its type, size and content are the target's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import mimetypes
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .cache import APPLICATION_ID as CACHE_APPLICATION_ID
from .config import KNOWN_PURPOSES, Limits
from .errors import (
    LocalEmptyFileError,
    LocalFileError,
    LocalFileTooLargeError,
    LocalInvalidPurposeError,
    UnsupportedFileTypeError,
)
from .quota import fmt_bytes
from .state import APPLICATION_ID

__all__ = [
    "IMAGE_TYPES",
    "VIDEO_TYPES",
    "LocalFile",
    "TypeRefusal",
    "check_jsonl_lines",
    "check_purpose",
    "check_size",
    "classify_type",
    "detect_mime",
    "detect_mime_of",
    "inspect_file",
    "inspect_file_head",
    "is_state_store",
    "pdf_text_warning",
    "refused_kind",
    "type_refusal",
    "upload_filename",
]

#: Content types the extractor cannot read, by what they are (the refusal names it). libmagic
#: names one format differently across versions (application/x-sqlite3 and vnd.sqlite3, zip and
#: x-zip): each name it has used is listed. See also :data:`_REFUSED_PARTS`.
_REFUSED_KINDS: dict[str, frozenset[str]] = {
    "unknown binary data": frozenset({"application/octet-stream"}),
    "an executable or compiled code": frozenset({
        "application/x-executable", "application/x-sharedlib", "application/x-pie-executable",
        "application/x-mach-binary", "application/x-dosexec", "application/x-msdownload",
        "application/vnd.microsoft.portable-executable", "application/x-object",
        "application/x-coredump", "application/x-coff", "application/x-java-applet",
        "application/x-bytecode.python", "application/wasm", "application/x-elc",
        "application/x-dosdriver", "application/x-java-jmod", "application/x-ios-app",
        "application/x-silverlight-app", "application/x-windows-gadget",
        "application/x-nekovm-bytecode", "application/x-t3vm-image", "application/x-glulx",
        "application/x-zmachine", "application/x-shockwave-flash",
    }),
    "an archive or compressed data": frozenset({
        "application/zip", "application/x-zip", "application/x-zip-compressed",
        "application/gzip", "application/x-gzip", "application/x-tar", "application/x-gtar",
        "application/x-ustar", "application/x-bzip", "application/x-bzip2", "application/x-xz",
        "application/x-7z-compressed", "application/x-rar", "application/vnd.rar",
        "application/x-rar-compressed", "application/zstd", "application/x-zstd",
        "application/x-lzma", "application/x-lzip", "application/x-lz4", "application/x-lz4+json",
        "application/x-lrzip", "application/x-lzop", "application/zlib", "application/x-compress",
        "application/x-cpio", "application/x-archive", "application/java-archive",
        "application/x-arc", "application/x-arj", "application/x-lha",
        "application/x-lzh-compressed", "application/x-zoo", "application/x-stuffit",
        "application/x-xar", "application/x-snappy-framed", "application/x-qpress",
        "application/x-dzip", "application/x-fzip", "application/x-ace-compressed",
        "application/vnd.ms-cab-compressed", "application/x-ms-wim", "application/x-ia-arc",
        "application/warc", "application/x-acronis-tib", "application/vnd.comicbook",
        "application/vnd.google-earth.kmz", "application/x-chrome-extension",
        "application/x-windows-themepack", "application/x-java-pack200",
    }),
    "a software package": frozenset({
        "application/vnd.debian.binary-package", "application/x-debian-package",
        "application/x-deb", "application/x-rpm", "application/x-redhat-package-manager",
        "application/x-svr4-package", "application/vnd.android.package-archive",
        "application/x-msi", "application/x-ole-storage+msi", "application/x-installshield",
        "application/x-innosetup", "application/vnd.symbian.install",
        "application/vnd.gentoo.gpkg", "application/vnd.gentoo.xpak", "application/x-xpinstall",
        "application/vnd.openofficeorg.extension",
    }),
    "a SQLite database": frozenset({"application/vnd.sqlite3", "application/x-sqlite3"}),
    "a database": frozenset({
        "application/x-msaccess", "application/msaccess", "application/vnd.ms-works-db",
        "application/x-dbf", "application/x-dbm", "application/x-gdbm", "application/x-ms-ese",
        "application/x-dbase-index", "application/x-tokyocabinet-btree",
        "application/x-tokyocabinet-fixed", "application/x-tokyocabinet-hash",
        "application/x-tokyocabinet-table", "application/x-clamav-database",
    }),
    "a disk image": frozenset({
        "application/x-iso9660-image", "application/x-qemu-disk", "application/x-virtualbox-vhd",
        "application/x-virtualbox-vdi", "application/x-vhd", "application/x-vmdk",
        "application/x-raw-disk-image", "application/x-apple-diskimage",
        "application/x-amiga-disk-format", "application/x-nrg", "application/x-compressed-iso",
    }),
    "binary data": frozenset({
        "application/x-hdf5", "application/x-hdf", "application/x-netcdf",
        "application/x-numpy-data", "application/x-matlab-data", "application/x-grib",
        "application/x-grib2", "application/cbor", "application/vnd.tcpdump.pcap",
        "application/x-bittorrent", "application/x-git", "application/x-blender",
        "application/dicom", "application/x-java-keystore", "application/x-java-jce-keystore",
        "application/x-ms-pdb", "application/x-ms-evtx", "application/x-ms-thumbnail",
        "application/x-terminfo", "application/x-terminfo2", "application/x-gettext-translation",
        "application/vnd.iccprofile", "application/pgp-encrypted", "application/x-aes-encrypted",
        "application/x-crypt-nc", "application/ogg",
        "application/mxf", "application/vnd.rn-realmedia", "application/x-sereal",
        "application/x-ms-shortcut", "application/x-ms-jumplist", "application/x-clamav",
        "application/x-avira-qua", "application/x-tplink-bin", "application/x-maxis-dbpf",
        "application/x-pnf", "application/x-intel-aml", "application/x-edid-dump",
        "application/x-grub-keyboard", "application/x-omf-lib", "application/x-xbmc-xbt",
    }),
    "a private key": frozenset({"application/x-putty-private-key"}),
}
#: Parts of a type name that mark it refused, whatever else it says: libmagic knows dozens of
#: compressors, executables, ROMs, disk images and packages, and keeps adding names.
_REFUSED_PARTS = (
    ("sqlite", "a SQLite database"),
    ("compress", "an archive or compressed data"),
    ("archive", "an archive or compressed data"),
    ("executable", "an executable or compiled code"),
    ("bytecode", "an executable or compiled code"),
    ("-exec", "an executable or compiled code"),
    ("-package", "a software package"),
    ("disk-image", "a disk image"),
    ("floppy", "a disk image"),
    ("-disk", "a disk image"),
    ("-dsk", "a disk image"),
    ("eeprom", "a disk image"),
    ("-dmp", "binary data"),
    ("-rom", "a disk image"),
    ("encrypted", "binary data"),
    ("keystore", "binary data"),
)
#: Every type name refused by :data:`_REFUSED_KINDS` (a type matching :data:`_REFUSED_PARTS`
#: is refused too).
REFUSED_TYPES = frozenset().union(*_REFUSED_KINDS.values())
REFUSED_FAMILIES = ("audio/", "video/", "font/", "model/")

#: Formats that are zip or gzip containers underneath; libmagic may call them by the container.
CONTAINER_EXTENSIONS = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".epub": "application/epub+zip",
    ".svgz": "image/svg+xml",
}

#: What ``purpose="image"`` (vision) accepts: png, jpeg, webp, gif. SVG, BMP, TIFF, HEIC are refused.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
#: What ``purpose="video"`` accepts: mp4, mpeg, mov, avi, x-flv, mpg, webm, wmv, 3gpp, under
#: the names libmagic gives them (mov is video/quicktime, avi video/x-msvideo, wmv an ASF file).
VIDEO_TYPES = frozenset({
    "video/mp4", "video/mpeg", "video/mpg", "video/quicktime", "video/x-msvideo", "video/avi",
    "video/msvideo", "video/x-flv", "video/webm", "video/x-ms-wmv", "video/x-ms-asf",
    "video/3gpp",
})
_IMAGE_NAMES = "PNG, JPEG, WebP, GIF"
_VIDEO_NAMES = "mp4, mpeg, mov, avi, flv, mpg, webm, wmv, 3gpp"
#: Pages of a PDF looked at for a text layer before it is called textless.
PDF_TEXT_PAGES = 5

#: Two names of one type (mimetypes' name -> libmagic's): no mismatch warning between them.
_ALIASES = {"video/x-ms-wmv": "video/x-ms-asf", "audio/3gpp": "video/3gpp",
            "image/x-ms-bmp": "image/bmp"}

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
    #: the inode's change time, number and device when checked: with size and mtime, what
    #: says "unchanged" without reading the file (a rewrite with its mtime put back changes
    #: the ctime; a file replaced by another, the inode)
    ctime_ns: int = 0
    inode: int = 0
    device: int = 0


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


class TypeRefusal(NamedTuple):
    """Why a purpose cannot take a content type: the rule, the reason (continuing "the
    content is X"), and the way out besides ``allow_any_type``."""

    rule: str
    reason: str
    remedy: str = ""


def type_refusal(send: str, ext: str, purpose: str) -> TypeRefusal | None:
    """Why ``purpose`` cannot take content of type ``send``; None when it can. ``ext`` is the
    file's lower-case extension. Pure."""
    if purpose == "image":
        if send in IMAGE_TYPES:
            return None
        return TypeRefusal("image_type", f", but purpose 'image' accepts only {_IMAGE_NAMES} "
                           f"({', '.join(sorted(IMAGE_TYPES))})", "convert it to one of those")
    if purpose == "video":
        if send in VIDEO_TYPES:
            return None
        return TypeRefusal("video_type", f", but purpose 'video' accepts only {_VIDEO_NAMES}",
                           "convert it to one of those")
    if purpose == "batch":
        if ext == ".jsonl" and _is_textish(send):
            return None
        return TypeRefusal(
            "batch_type", f"{' named ' + ext if ext else ' with no extension'}, but purpose "
            "'batch' takes a .jsonl file (one JSON request object per line)",
            "write the requests as JSON lines in a file named *.jsonl")
    if send.startswith("image/"):
        if send in IMAGE_TYPES:
            remedy = 'upload it with purpose="image" (--purpose image) for vision'
        else:
            remedy = (f"convert it to {_IMAGE_NAMES} and upload that with purpose=\"image\" "
                      "(--purpose image) for vision")
        return TypeRefusal("image_not_extracted", ", an image: the platform no longer extracts "
                           f"text from images under purpose {purpose!r}", remedy)
    if send in VIDEO_TYPES:
        return TypeRefusal("type", f", a video, which purpose {purpose!r} cannot use",
                           'upload it with purpose="video" (--purpose video)')
    kind = refused_kind(send)
    if kind is not None:
        what = "" if kind == "unknown binary data" else f" ({kind})"
        return TypeRefusal("type", f"{what}, which purpose {purpose!r} cannot use (executables, "
                           "archives, packages, databases, disk images, media and binary data "
                           "are refused)")
    return None


def refused_kind(mime: str) -> str | None:
    """What content of type ``mime`` is ("an archive or compressed data", "a SQLite
    database"...) when no document purpose can take it; None when it may be a document. Pure."""
    mime = mime.lower()
    for kind, names in _REFUSED_KINDS.items():
        if mime in names:
            return kind
    if mime.startswith(REFUSED_FAMILIES):
        return "media or a font"
    if mime.startswith("application/"):
        for part, kind in _REFUSED_PARTS:
            if part in mime:
                return kind
    return None


def classify_type(
    path: str, filename: str, detected: str, purpose: str, *, allow_any_type: bool = False
) -> tuple[str, tuple[str, ...]]:
    """(content type to send, warnings) for a detected MIME type; refuses what ``purpose``
    cannot use (see :func:`type_refusal`).

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
        and _ALIASES.get(expected, expected) != _ALIASES.get(detected, detected)
        and not (_is_textish(expected) and _is_textish(detected))
    ):
        warnings.append(
            f"{path}: the extension {ext} suggests {expected}, but the content is {detected}"
        )
    refusal = type_refusal(send, ext, purpose)
    if refusal is not None and not allow_any_type:
        what = "unknown binary data" if send == "application/octet-stream" else send
        anyway = "pass allow_any_type=True (--allow-any-type) to send it anyway"
        raise UnsupportedFileTypeError(
            f"{path}: the content is {what}{refusal.reason}; "
            + (f"{refusal.remedy}, or {anyway}" if refusal.remedy else anyway),
            path=path,
            rule=refusal.rule,
        )
    return send, tuple(warnings)


def check_jsonl_lines(path: str, lines: Iterable[bytes]) -> None:
    """Every non-blank line is a JSON object (a ``batch`` file). Pure over ``lines``, which
    it consumes one at a time: memory is bounded by the longest line, not the file."""
    requests = 0
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        why = ""
        try:
            value = json.loads(raw.rstrip(b"\r\n"))
        except UnicodeDecodeError:
            why = "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            why = f"{exc.msg} at column {exc.colno}"
        else:
            if not isinstance(value, dict):
                why = f"it is a JSON {_json_kind(value)}, not an object"
        if why:
            raise UnsupportedFileTypeError(
                f"{path}: line {number} is not a JSON object: {why}; purpose 'batch' needs one "
                "JSON request object per line: fix that line",
                path=path,
                rule="jsonl",
            )
        requests += 1
    if requests == 0:
        raise UnsupportedFileTypeError(
            f"{path}: no JSON lines in the file (only blank lines); purpose 'batch' needs one "
            "JSON request object per line",
            path=path,
            rule="jsonl",
        )


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return "literal"
    return "number"


def is_state_store(header: bytes) -> bool:
    """Is this the start (at least 72 bytes) of a kimi-files state store or reuse cache: a
    SQLite database whose ``application_id`` is one of theirs? Pure."""
    return (header.startswith(b"SQLite format 3\0") and len(header) >= 72
            and int.from_bytes(header[68:72], "big") in (APPLICATION_ID, CACHE_APPLICATION_ID))


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
    """The MIME type of the file's content, by libmagic (python-magic).

    The file is opened and its descriptor given to libmagic, so a symbolic link is typed as
    its target (libmagic, given a link's name, answers ``inode/symlink``)."""
    import magic

    try:
        # O_NONBLOCK: opening a FIFO must not hang (a regular file ignores the flag)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as fh:
            mime = str(_magic().from_descriptor(fh.fileno()))
            if mime == "application/octet-stream":
                fh.seek(0)
                if looks_like_text(fh.read(8192)):
                    mime = "text/plain"
        return mime
    except (OSError, magic.MagicException) as exc:
        raise LocalFileError(f"{path}: cannot read the file to detect its type: {exc}",
                             path=str(path), rule="readable") from None


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
    # a state store is never sent, whatever the type rules allow: it lists the path of every
    # file uploaded (and so do its -wal file and, as junk, its lock file)
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
