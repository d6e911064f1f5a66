"""Data that crosses module lines: frozen, slotted dataclasses.

Field names follow the openai SDK's ``FileObject`` so code can move between the two.
Parsing is tolerant: unknown fields are kept in ``extra``, missing ones get defaults. What
cannot be tolerated is a :class:`~kimi_files.errors.MalformedResponseError`: a file object
without an ``id`` or with a ``bytes`` that is no size (negative, fractional, absurd), a list
without a ``data`` array. The body kept on the error is redacted (a server may echo the key).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from ._redact import redact_value
from .errors import MalformedResponseError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["FileContent", "FileDeleted", "FileList", "FileObject", "UploadedFile"]

#: Status values that mean the server could not process the file.
FAILED_STATUSES = frozenset({"error", "failed", "fail"})


def _int(value: object) -> int:
    if not isinstance(value, (int, float, str, bytes)):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


#: The largest size a file object may claim (2**53, the largest integer JSON carries exactly):
#: anything above is nonsense, not a size to plan room from.
MAX_LISTED_BYTES = 2**53


def _size(value: object) -> int | None:
    """A file object's ``bytes`` as a whole number from 0 to :data:`MAX_LISTED_BYTES`
    (``12``, ``"12"``, ``12.0``); None for anything else (negative, fractional, true/false,
    null, text). Pure."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        value = value.strip()
        if not value.isdigit() or not value.isascii():
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_LISTED_BYTES:
        return None
    return value


def _created_at(value: object) -> int:
    """A file object's ``created_at`` as a whole number (``12``, ``12.0``, ``12.5``), or 0,
    undated, when it is no number at all: true/false, text, null, NaN. Whether the number is
    a plausible time is judged where a clock is known (:func:`kimi_files._quota.plausibly_dated`);
    the number is kept, so a listing shows what the server said. Pure."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return int(value)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


@dataclass(frozen=True, slots=True)
class FileObject:
    """A file stored on the platform."""

    id: str
    bytes: int = 0
    created_at: int = 0
    filename: str = ""
    object: str = "file"
    purpose: str = ""
    status: str = ""
    status_details: str = ""
    expires_at: int | None = None
    extra: Mapping[str, builtins.object] = field(default_factory=dict, compare=False, repr=False)

    _KNOWN = (
        "id", "bytes", "created_at", "filename", "object", "purpose", "status",
        "status_details", "expires_at",
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, builtins.object]) -> FileObject:
        """Parse a file object; one without a usable ``id`` is a MalformedResponseError."""
        file_id = data.get("id")
        if not isinstance(file_id, str) or not file_id.strip():
            raise MalformedResponseError(
                f"the server answered with a file object that has no usable id ({file_id!r:.60})",
                status_code=200,
                body=redact_value(dict(data)),
            )
        size = _size(data["bytes"]) if "bytes" in data else 0
        if size is None:
            # a size to plan room from: a negative or absurd one is not a number to trust
            raise MalformedResponseError(
                f"the server answered with a file object ({file_id!r}) whose size is not a "
                f"whole number of bytes from 0 to 2**53 (bytes={data['bytes']!r:.60})",
                status_code=200,
                body=redact_value(dict(data)),
            )
        expires = data.get("expires_at")
        return cls(
            id=file_id,
            bytes=size,
            created_at=_created_at(data.get("created_at")),
            filename=_str(data.get("filename")),
            object=_str(data.get("object")) or "file",
            purpose=_str(data.get("purpose")),
            status=_str(data.get("status")),
            status_details=_str(data.get("status_details")),
            expires_at=_int(expires) if expires is not None else None,
            extra={k: v for k, v in data.items() if k not in cls._KNOWN},
        )

    def to_dict(self) -> dict[str, builtins.object]:
        out: dict[str, builtins.object] = {k: getattr(self, k) for k in self._KNOWN}
        if out["expires_at"] is None:
            del out["expires_at"]
        out.update(self.extra)
        return out

    def as_content_part(self) -> dict[str, str | dict[str, str]]:
        """This image or video as a part of a chat message, the form the vision models take:
        ``{"type": "image_url", "image_url": {"url": "ms://<id>"}}`` (or ``video_url``).

        Raises:
            ValueError: the file was not uploaded with ``purpose="image"`` or ``"video"``.
        """
        kind = {"image": "image_url", "video": "video_url"}.get(self.purpose)
        if kind is None:
            raise ValueError(f"{self.id} ({self.filename}) has purpose {self.purpose!r}: only "
                             "files uploaded with purpose 'image' or 'video' are content parts; "
                             "put a document's text in a system message (FileContent.as_message)")
        return {"type": kind, kind: {"url": f"ms://{self.id}"}}

    @property
    def failed(self) -> bool:
        """True when the server says processing (extraction) of this file failed (``status``
        ``error``, the documented value, or ``failed``)."""
        return self.status.lower() in FAILED_STATUSES


@dataclass(frozen=True, slots=True)
class UploadedFile(FileObject):
    """The result of :func:`kimi_files.upload`: the stored file plus what it took."""

    path: str = ""
    attempts: int = 1
    #: True when a lost response was recovered by adopting the copy the server had stored.
    adopted: bool = False
    #: Files deleted to make room for this one, oldest first.
    deleted: tuple[FileObject, ...] = ()
    mime_type: str = ""
    warnings: tuple[str, ...] = ()
    #: Files that may be extra copies an earlier attempt of this upload stored but that
    #: cannot be proven ours: kept, never adopted or deleted; ``kimi-files delete ID``.
    suspects: tuple[FileObject, ...] = ()
    #: True when nothing was sent: the account already held this content (same SHA-256,
    #: same purpose, still listed with the same size), recorded in the reuse cache.
    reused: bool = False
    #: The SHA-256 of the content, when it was taken (for reuse, or while sending).
    sha256: str | None = None

    @property
    def stored_as(self) -> str:
        """The name the server stores the file under (its ``filename``: the server keeps base
        names only, so ``a/d1.txt`` and ``b/d1.txt`` are both ``d1.txt`` there; a reused file
        keeps the name it was first stored under)."""
        return self.filename

    @classmethod
    def of(cls, obj: FileObject, **kw: Unpack[_Took]) -> UploadedFile:
        base = {k: getattr(obj, k) for k in FileObject._KNOWN}
        return cls(**base, extra=obj.extra, **kw)


class _Took(TypedDict, total=False):
    """What :meth:`UploadedFile.of` adds to a file object: the fields of UploadedFile."""

    path: str
    attempts: int
    adopted: bool
    deleted: tuple[FileObject, ...]
    mime_type: str
    warnings: tuple[str, ...]
    suspects: tuple[FileObject, ...]
    reused: bool
    sha256: str | None


@dataclass(frozen=True, slots=True)
class FileList:
    """All files of the account, each id once (the client follows the pages of a server that
    pages its listing, see :func:`kimi_files._client.list_steps`)."""

    data: tuple[FileObject, ...] = ()
    object: str = "list"

    @classmethod
    def of(cls, files: Iterable[FileObject], object: str = "list") -> FileList:
        """A listing holding each id once, as it first appears: a listing that repeats an id
        must not make one file count, or be deleted, more than once."""
        unique: dict[str, FileObject] = {}
        for f in files:
            unique.setdefault(f.id, f)
        return cls(data=tuple(unique.values()), object=object)

    @classmethod
    def from_dict(cls, data: Mapping[str, builtins.object]) -> FileList:
        """Parse a list answer; one without a ``data`` array is a MalformedResponseError (never
        read as an empty account)."""
        rows = data.get("data")
        if not isinstance(rows, list):
            raise MalformedResponseError(
                "the server answered the file list without a 'data' array",
                status_code=200,
                body=redact_value(dict(data)),
            )
        return cls.of((FileObject.from_dict(x) for x in rows if isinstance(x, Mapping)),
                      _str(data.get("object")) or "list")

    def __iter__(self) -> Iterator[FileObject]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.data)


@dataclass(frozen=True, slots=True)
class FileDeleted:
    id: str
    deleted: bool = True
    object: str = "file"

    @classmethod
    def from_dict(cls, data: Mapping[str, builtins.object]) -> FileDeleted:
        return cls(
            id=_str(data.get("id")),
            deleted=bool(data.get("deleted", True)),
            object=_str(data.get("object")) or "file",
        )


@dataclass(frozen=True, slots=True)
class FileContent:
    """The extracted text of a file.

    ``text`` is the extracted text. When the platform answers with its JSON document
    (``{"content", "file_type", "filename", "title", "type"}``) the document is kept whole
    in ``document`` and its fields are exposed; otherwise ``text`` is the raw body. ``raw`` is
    the body exactly as the server sent it: :meth:`as_message` puts it in a chat message.
    """

    text: str
    document: Mapping[str, object] | None = None
    raw: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_body(cls, body: str) -> FileContent:
        """The content of a body: the platform's JSON document when it is one, else the body
        as text (a batch file's JSONL)."""
        return cls.from_document(body) or cls(text=body, raw=body)

    @classmethod
    def from_document(cls, body: str) -> FileContent | None:
        """The content of a body that is the platform's JSON document (an object with a string
        ``content``); None for anything else (cut-off JSON, an empty body, an HTML page)."""
        import json

        if not body.lstrip().startswith("{"):
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("content"), str):
            return cls(text=doc["content"], document=doc, raw=body)
        return None

    def as_message(self) -> dict[str, str]:
        """``{"role": "system", "content": <the whole JSON text>}``: the system message the
        Kimi docs build from ``files.content(id).text`` (the body as sent, not only ``text``)."""
        if self.raw is not None:
            content = self.raw
        elif self.document is not None:
            import json

            content = json.dumps(dict(self.document), ensure_ascii=False)
        else:
            content = self.text
        return {"role": "system", "content": content}

    def _field(self, name: str) -> str:
        return _str(self.document.get(name)) if self.document else ""

    @property
    def file_type(self) -> str:
        return self._field("file_type")

    @property
    def filename(self) -> str:
        return self._field("filename")

    @property
    def title(self) -> str:
        return self._field("title")

    def __str__(self) -> str:
        return self.text
