"""What :mod:`kimi_files._extraction` hands out and takes: results, the summary, the options."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._extract_rules import (
    Origin,
    Status,
)
from ._models import FileObject
from ._options import UploadKwargs, UploadOptions, split_upload_options
from ._pacing import check_limits
from ._quota import fmt_bytes
from ._scan import check_pattern_options
from ._state import StateStore
from ._steps import (
    ClientLike,
)
from .errors import (
    ConfigurationError,
    KimiError,
)

log = logging.getLogger("kimi_files")

StateArg = StateStore | str | os.PathLike[str] | bool | None

#: Results waiting for the caller at most (the run pauses when they are not taken).
QUEUED_RESULTS = 64
#: How often a document waiting for room in the window looks again (seconds).
WINDOW_POLL = 0.01
__all__ = ["ExtractKwargs", "ExtractOptions", "ExtractResult", "ExtractSummary",
           "extract_state_path"]



@dataclass(frozen=True, slots=True)
class ExtractResult:
    """What became of one document."""

    path: str
    status: Status
    #: the extracted text (the ``content`` field of the service's answer), for ``ok``
    text: str | None = None
    sha256: str | None = None
    bytes: int = 0
    #: the stored file the text came from (None when it came from the text cache)
    file_id: str | None = None
    error: KimiError | None = None
    origin: Origin | None = None
    #: the file was deleted once the text was saved
    deleted: bool = False

    def to_json(self, *, text: bool = True) -> dict[str, object]:
        """The document's line (``text`` False: without the text, for an index)."""
        line: dict[str, object] = {"path": self.path, "status": self.status}
        if text and self.text is not None:
            line["text"] = self.text
        line["sha256"] = self.sha256
        line["bytes"] = self.bytes
        if self.file_id is not None:
            line["file_id"] = self.file_id
        if self.origin is not None:
            line["origin"] = self.origin
        if self.error is not None:
            line["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
        return line


@dataclass
class ExtractSummary:
    """The run as a whole, once it ended (``Extraction.summary``)."""

    counts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    #: API calls made (list, upload, content, delete; each retry not counted again)
    calls: int = 0
    uploads: int = 0
    contents: int = 0
    elapsed: float = 0.0
    window: int | None = None
    #: files of this run (or of a killed earlier one) still on the server: a deletion failed
    left: list[str] = field(default_factory=list)
    #: files of earlier runs found and deleted at the start
    cleaned: int = 0
    #: files that may be copies stored by a lost or killed attempt, kept: never deleted
    suspects: list[FileObject] = field(default_factory=list)
    interrupted: bool = False

    def lines(self) -> list[str]:
        parts = [f"{n} {s}" for s, n in self.counts.items() if n] or ["no documents"]
        out = [", ".join(parts) + f"; {fmt_bytes(self.bytes)} in {self.elapsed:.1f}s, "
               f"{self.calls} request(s) ({self.uploads} upload(s), {self.contents} content "
               f"call(s)); files left on the server: {len(self.left)}"
               + (" (interrupted)" if self.interrupted else "")]
        if self.cleaned:
            out.append(f"  deleted {self.cleaned} file(s) an interrupted run had left")
        if self.left:
            out.append("  still on the server (a re-run deletes them): " + " ".join(self.left))
        if self.suspects:
            out.append(f"  {len(self.suspects)} file(s) may be copies of interrupted uploads "
                       "but cannot be proven this run's own: kept; remove what is yours with: "
                       "kimi-files delete " + " ".join(f.id for f in self.suspects))
        return out


class ExtractKwargs(UploadKwargs, total=False):
    """The keyword arguments of :func:`extract_many`: every upload option, and these."""

    #: Keep the files stored (default: each is deleted once its text is saved).
    keep: bool
    #: At most this many of the run's files on the server at once (default: the free slots).
    window: int | None
    #: Documents in progress at once (default 4).
    concurrency: int | None
    include: Sequence[str]
    exclude: Sequence[str]
    follow_links: bool
    #: The run's state (a path, a StateStore, None: the account's default, False: none).
    state: StateArg
    #: When another run holds the state: wait (True, or seconds) instead of failing.
    wait: bool | float
    #: Paths (as shown in results) to leave out: documents already written.
    skip: Collection[str]
    #: Set it to stop: nothing new starts, what was stored is deleted.
    stop: threading.Event | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtractOptions:
    """:class:`ExtractKwargs` with their defaults, checked before anything is sent."""

    upload: UploadOptions = field(default_factory=UploadOptions)
    keep: bool = False
    window: int | None = None
    concurrency: int | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    follow_links: bool = False
    state: StateArg = None
    wait: bool | float = False
    skip: Collection[str] = ()
    stop: threading.Event | None = None

    def __post_init__(self) -> None:
        if self.window is not None and (isinstance(self.window, bool)
                                        or not isinstance(self.window, int) or self.window < 1):
            raise ConfigurationError(f"window must be a whole number of at least 1, not "
                                     f"{self.window!r}")
        check_limits(self.concurrency, None, 60.0)
        check_pattern_options(self.include, self.exclude)

    @property
    def workers(self) -> int:
        return self.concurrency or 4

    @classmethod
    def of(cls, options: ExtractKwargs | dict[str, Any]) -> ExtractOptions:
        """The options from keyword arguments.

        Raises:
            ConfigurationError: an unknown option or a value of the wrong kind.
        """
        known = {f.name for f in fields(cls)} - {"upload"}
        upload, rest = split_upload_options(options, known, "extract")
        return cls(upload=upload, **rest)


def extract_state_path(state_path: Path) -> Path:
    """The extract runs' state beside an account's state store (one run at a time)."""
    return state_path.with_name(state_path.name.removesuffix(".sqlite3") + ".extract.sqlite3")


def _open_state(state: StateArg, client: ClientLike, wait: bool | float) -> StateStore | None:
    if state is False:
        return None
    if isinstance(state, StateStore):
        return state
    if state is None or state is True:
        return StateStore(extract_state_path(client.state_path()), wait=wait)
    return StateStore(state, wait=wait)


