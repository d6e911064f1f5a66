"""The rules a local file must pass before any byte of it is sent, as pure functions: the
purpose (:func:`check_purpose`), the size (:func:`check_size`), the type
(:func:`type_refusal`, :func:`classify_type`), the lines of a ``batch`` file
(:func:`check_jsonl_lines`), the name it is stored under (:func:`upload_filename`). The I/O
that feeds them (stat, open, python-magic, pypdf) is :mod:`kimi_files._preflight`."""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ._config import CACHE_APPLICATION_ID, KNOWN_PURPOSES, STATE_APPLICATION_ID, Limits
from ._quota import fmt_bytes
from .errors import (
    LocalEmptyFileError,
    LocalFileTooLargeError,
    LocalInvalidPurposeError,
    UnsupportedFileTypeError,
)

__all__ = [
    "IMAGE_TYPES",
    "VIDEO_TYPES",
    "LocalFile",
    "TypeRefusal",
    "check_jsonl_lines",
    "check_purpose",
    "check_size",
    "classify_type",
    "is_state_store",
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
            and int.from_bytes(header[68:72], "big") in (STATE_APPLICATION_ID, CACHE_APPLICATION_ID))


def upload_filename(path: Path) -> tuple[str, tuple[str, ...]]:
    """The filename to send: the path's name, made valid UTF-8 if the name is not."""
    name = path.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fixed = os.fsencode(name).decode("utf-8", "replace")
        return fixed, (f"{path!s:.200}: the name is not valid UTF-8; uploaded as {fixed!r}",)
    return name, ()
