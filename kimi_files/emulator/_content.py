"""What the emulated service makes of an uploaded file's content: the 400 it answers when a
purpose refuses it (type, batch lines, no text), and the text its extractor finds."""

from __future__ import annotations

import codecs
import os
import re
import zipfile
from pathlib import Path

from starlette.responses import JSONResponse

from ._answers import _row
from ._batches import json_rows
from ._state import StoredFile

# --- what each purpose accepts ---------------------------------------------------------------

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}
VIDEO_TYPES = {
    "video/mp4": "mp4", "video/mpeg": "mpeg", "video/quicktime": "mov", "video/x-msvideo": "avi",
    "video/avi": "avi", "video/x-flv": "x-flv", "video/mpg": "mpg", "video/webm": "webm",
    "video/x-ms-wmv": "wmv", "video/x-ms-asf": "wmv", "video/3gpp": "3gpp",
}
#: One character repeated over at least this many bytes has "no content" to the service.
REPETITIVE_BYTES = 5 * 1024


def _mime(path: Path) -> str:
    import magic

    return str(magic.from_file(os.fspath(path), mime=True))


def _refuse(path: Path, filename: str, purpose: str, size: int,
            extract_images: bool) -> JSONResponse | None:
    """The 400 the service answers for this content under this purpose; None if accepted.

    The wordings are the emulator's own except ``text extract error`` (the service's)."""
    if purpose == "batch":
        return _batch_refusal(path, filename)
    mime = _mime(path)
    if purpose == "image" and mime not in IMAGE_TYPES:
        accepted = ", ".join(IMAGE_TYPES.values())
        return _row("invalid_request",
                    detail=f"purpose 'image' accepts {accepted} only, not {mime} ({filename})")
    if purpose == "video" and mime not in VIDEO_TYPES:
        accepted = ", ".join(dict.fromkeys(VIDEO_TYPES.values()))
        return _row("invalid_request",
                    detail=f"purpose 'video' accepts {accepted} only, not {mime} ({filename})")
    if purpose == "file-extract":
        if mime.startswith("image/") and not extract_images:
            return _row("invalid_request",
                        detail=f"images ({mime}, {filename}) are no longer extracted under "
                               "purpose 'file-extract'; upload them with purpose 'image'")
        if _no_text(path, mime, size):
            return _row("no_text")
    return None


def _batch_refusal(path: Path, filename: str) -> JSONResponse | None:
    if not filename.lower().endswith(".jsonl"):
        return _row("invalid_request",
                    detail=f"purpose 'batch' takes a .jsonl file, not {filename}")
    with path.open("rb") as fh:
        for number, row in json_rows(fh):
            if row is None:
                return _row("invalid_request",
                            detail=f"purpose 'batch': line {number} of {filename} is not a "
                                   "JSON object")
    return None


def _no_text(path: Path, mime: str, size: int) -> bool:
    """True when the service's extractor would find nothing: a PDF without a text layer, or
    text that is one character repeated (whitespace aside) over 5 KiB or more."""
    if mime == "application/pdf":
        try:
            from pypdf import PdfReader
        except ImportError:  # pragma: no cover - pypdf is part of the emulator extra
            return False
        try:
            reader = PdfReader(os.fspath(path))
            return not "".join((page.extract_text() or "") for page in reader.pages).strip()
        except Exception:  # a broken PDF is another matter
            return False
    if size < REPETITIVE_BYTES or not mime.startswith(_TEXT_TYPES):
        return False
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    seen: set[str] = set()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                seen.update(decoder.decode(chunk))
                seen -= {" ", "\t", "\r", "\n"}
                if len(seen) > 1:
                    return False
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# --- extraction -------------------------------------------------------------------------------

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "image/svg+xml", "application/x-ndjson", "application/csv")


def extract_text(stored: StoredFile) -> tuple[str, str]:
    """(text, file type) as the emulator's extractor sees it; honest about what it cannot do."""
    if stored.path is None:
        return (f"[kimi-files emulator: {stored.filename} was seeded without content]",
                "application/octet-stream")
    import magic

    mime = str(magic.from_file(os.fspath(stored.path), mime=True))
    if mime.startswith(_TEXT_TYPES):
        return stored.path.read_bytes().decode("utf-8", "replace"), mime
    if mime == "application/pdf":
        return _pdf_text(stored.path), mime
    if mime.endswith("wordprocessingml.document") or stored.filename.lower().endswith(".docx"):
        text = _docx_text(stored.path)
        if text is not None:
            return text, mime
    return (f"[kimi-files emulator: no text extraction for {mime} ({stored.bytes} bytes); "
            "the real platform runs OCR or a document parser here]", mime)


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:  # pragma: no cover - pypdf is part of the emulator extra
        return "[kimi-files emulator: install pypdf to extract PDF text]"
    try:
        reader = PdfReader(os.fspath(path))
        return "\n".join((page.extract_text() or "") for page in reader.pages).strip()
    except Exception as exc:  # a broken PDF: say so, as an extractor would
        return f"[kimi-files emulator: could not read this PDF: {type(exc).__name__}]"


def _docx_text(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            xml = zf.read("word/document.xml").decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, OSError):
        return None
    xml = re.sub(r"</w:p>", "\n", xml)
    return re.sub(r"<[^>]+>", "", xml).strip()
