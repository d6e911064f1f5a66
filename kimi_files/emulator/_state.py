"""The emulator's account: stored files, limits, injected faults and a request log.

Plain Python, no web framework: the ASGI app in ``_app.py`` is a thin layer over this.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    import random

    from typing_extensions import Unpack

# Default limits: the platform's.
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_FILES = 1000
MAX_TOTAL_BYTES = 10 * 1024**3

ORG = "org-emulator"
AK = "ak-emulator"

#: Every row of the platform's error table, by the name faults use: (status, type, message).
#: ``{limit}``, ``{after}``, ``{current}`` and ``{detail}`` are filled from the fault.
ERROR_ROWS: dict[str, tuple[int, str, str]] = {
    "content_filter": (400, "content_filter",
                       "The request was rejected because it was considered high risk"),
    "invalid_request": (400, "invalid_request_error", "Invalid request: {detail}"),
    "input_too_long": (400, "invalid_request_error", "Input token length too long"),
    "model_token_limit": (400, "invalid_request_error",
                          "Your request exceeded model token limit : {limit}"),
    "invalid_purpose": (400, "invalid_request_error",
                        "Invalid purpose: only 'file-extract' accepted"),
    "file_too_large": (400, "invalid_request_error",
                       "File size is too large, max file size is 100MB, please confirm and "
                       "re-upload the file"),
    "file_empty": (400, "invalid_request_error",
                   "File size is zero, please confirm and re-upload the file"),
    "too_many_files": (400, "invalid_request_error",
                       "The number of files you have uploaded exceeded the max file count "
                       "{limit}, please delete previous uploaded files"),
    "invalid_authentication": (401, "invalid_authentication_error", "Invalid Authentication"),
    "incorrect_api_key": (401, "incorrect_api_key_error", "Incorrect API key provided"),
    "api_not_open": (403, "permission_denied_error", "The API you are accessing is not open"),
    "other_user_info": (403, "permission_denied_error",
                        "You are not allowed to get other user info"),
    "model_not_found": (404, "resource_not_found_error",
                        "Not found the model {detail} or Permission denied"),
    "engine_overloaded": (429, "engine_overloaded_error",
                          "The engine is currently overloaded, please try again later"),
    "account_suspended": (429, "exceeded_current_quota_error",
                          f"Your account {ORG}<{AK}> is suspended, please check your plan and "
                          "billing details"),
    "token_quota": (429, "exceeded_current_quota_error",
                    f"You exceeded your current token quota: <{ORG}> {{current}}, please check "
                    "your account balance"),
    "max_concurrency": (429, "rate_limit_reached_error",
                        f"Your account {ORG}<{AK}> request reached organization max concurrency: "
                        "{limit}, please try again after {after} seconds"),
    "max_rpm": (429, "rate_limit_reached_error",
                f"Your account {ORG}<{AK}> request reached organization max RPM: {{limit}}, "
                "please try again after {after} seconds"),
    "tpm": (429, "rate_limit_reached_error",
            f"Your account {ORG}<{AK}> request reached organization TPM rate limit, "
            "current:{current}, limit:{limit}"),
    "tpd": (429, "rate_limit_reached_error",
            f"Your account {ORG}<{AK}> request reached organization TPD rate limit,"
            "current:{current}, limit:{limit}"),
    "extraction_failed": (500, "server_error", "Failed to extract file: {detail}"),
    "invalid_state": (500, "unexpected_output", "invalid state transition"),
    # --- wordings real accounts get that the table does not have (see CAPTURED_ROWS) ------
    "max_concurrency_short": (429, "rate_limit_reached_error",
                              "request reached max organization concurrency: {limit}, please "
                              "try again after {after} seconds"),
    "max_request": (429, "rate_limit_reached_error",
                    "request reached max request: {limit}, please try again after {after} "
                    "seconds"),
    "org_rate_limit": (429, "rate_limit_reached_error",
                       "Organization Rate limit exceeded, please try again after {after} "
                       "seconds"),
    "project_tpm": (429, "rate_limit_reached_error",
                    "request reached project TPM rate limit, current: {current}, limit: {limit}, "
                    "see https://platform.moonshot.cn/docs/pricing/limits"),
    "no_text": (400, "invalid_request_error", "text extract error: 没有解析出内容"),
}
#: The rows above captured from real accounts rather than read in the documented table. Their
#: messages are the service's; their ``error.type`` was not captured and is assumed.
CAPTURED_ROWS = frozenset({"max_concurrency_short", "max_request", "org_rate_limit",
                           "project_tpm", "no_text"})

#: Faults that are not rows of the table.
TRANSPORT_FAULTS = frozenset({
    "html_502",         # an HTML 502 page from a gateway
    "html_503",
    "html_504",
    "empty_500",        # a 500 with an empty body
    "garbage",          # 200 with a body that is not JSON
    "truncated_json",   # 200 with JSON cut in the middle
    "drop",             # close the connection without answering; nothing stored
    "store_then_drop",  # store the file, then close the connection without answering
    "status_failed",    # store the file with status "error" (extraction failed)
    "hang",             # answer nothing for `delay` seconds (client time-outs), then drop;
                        # nothing stored
    "delay",            # wait `delay` seconds, then answer normally
    "store_late",       # hold the answer; once `delay` s passed and the client left (timed
                        # out), store the file, then drop: a slow extraction stored late
    "no_id",            # upload: store the file, answer 200 with its object but an empty id
    "no_data",          # 200 with {"object": "list"} and no data array
    "cut_body",         # the normal answer (a file stored, a document...) with its body cut
                        # in the middle: a 200 with JSON cut off
    "empty_200",        # 200 with an empty body
    "html_200",         # 200 with an HTML page (a gateway's or a captive portal's)
    "repeated_ids",     # list: the newest file listed three times
    "bad_created_at",   # list: the newest file's created_at is `value` (default true)
    "has_more_stuck",   # list: has_more true and the same first page, whatever `after` says
    "has_more_empty",   # list: has_more true with no files (no last id to go on from)
    "has_more_text",    # list: has_more as the text "true"/"false", not a boolean
    "other_document",   # content: 200 with the document of another file (another filename)
    "lone_surrogate",   # content: the text ends in a lone surrogate ("\ud800" in the JSON)
})
#: Faults of the Batch API, taken when a batch is created (``endpoint="batch_create"``): some
#: requests fail (every ``limit``-th one), or the batch expires half-way.
BATCH_FAULTS = frozenset({"batch_line_errors", "batch_expire"})
FAULT_KINDS = frozenset(ERROR_ROWS) | TRANSPORT_FAULTS | BATCH_FAULTS
#: The faults a client should survive by retrying: the default mix of :meth:`set_chaos`.
CHAOS_KINDS = ("extraction_failed", "invalid_state", "engine_overloaded", "max_concurrency",
               "max_rpm", "html_502", "html_503", "html_504", "empty_500", "garbage", "drop",
               "store_then_drop", "status_failed")
ENDPOINTS = frozenset({"upload", "list", "retrieve", "delete", "content", "batch_create",
                       "batch_retrieve", "batch_list", "batch_cancel", "tokens", "*"})


@dataclass
class Fault:
    """Answer the next ``times`` requests to ``endpoint`` with ``kind``."""

    kind: str
    times: int = 1
    endpoint: str = "upload"
    limit: int = 1
    after: float = 1
    current: int = 1000
    detail: str = "emulated failure"
    delay: float = 0.0
    #: what ``bad_created_at`` puts in place of the newest file's ``created_at``
    value: object = True
    #: set once a fault that stores (store_then_drop, store_late) has stored its file
    stored: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    #: hang and store_late: when given, wait until it is set instead of for ``delay`` (a
    #: test decides when, with no race against real time)
    release: threading.Event | None = field(default=None, repr=False, compare=False)
    #: set once a hang or store_late request is held (for store_late: its whole body read)
    held: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; known: {sorted(ENDPOINTS)}")

    def error(self) -> tuple[int, ErrorBody]:
        status, etype, template = ERROR_ROWS[self.kind]
        after = int(self.after) if float(self.after).is_integer() else self.after
        message = template.format(limit=self.limit, after=after, current=self.current,
                                  detail=self.detail)
        return status, {"error": {"type": etype, "message": message}}


class ErrorDetail(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    """The platform's error answer: ``{"error": {"type", "message"}}``."""

    error: ErrorDetail


class FaultOptions(TypedDict, total=False):
    """The fields of a :class:`Fault` besides its kind, times and endpoint."""

    limit: int
    after: float
    current: int
    detail: str
    delay: float
    value: object
    release: threading.Event | None


class Limits(TypedDict, total=False):
    """What :meth:`EmulatorState.reset` sets afresh (its constructor's arguments of that name)."""

    max_files: int
    max_total_bytes: int
    max_file_bytes: int
    extract_delay: float
    max_concurrency: int | None
    rpm: int | None
    rate_window: float
    extract_images: bool
    page_size: int | None
    date_offset: float | None


class StateOptions(Limits, total=False):
    """Every argument of :class:`EmulatorState` (what :class:`~kimi_files.emulator.Emulator`
    passes on)."""

    api_key: str | None
    storage_dir: str | os.PathLike[str] | None
    purposes: frozenset[str]
    clock: Callable[[], float]
    wall: Callable[[], float]


#: The file of a persistent storage folder that lists what it holds (one JSON array).
INDEX_NAME = "index.json"


@dataclass
class StoredFile:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str
    status: str = "ok"
    status_details: str = ""
    path: Path | None = None  # None: a seeded file with no content
    content_type: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": self.status_details,
        }


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int = 0
    body_bytes: int = 0
    outcome: str = ""
    at: float = field(default_factory=time.time)
    #: the Msh-Request-Id header of the answer
    request_id: str = ""


class EmulatorState:
    """Everything the emulated account holds. Thread-safe.

    ``clock`` (monotonic seconds) drives the rate windows and ``wall`` (Unix seconds) the
    ``created_at`` of files, the ``Date`` header of answers and the request log, so tests can
    inject both. ``date_offset`` (seconds) sets the ``Date`` header that far from ``wall``, as
    a gateway whose clock disagrees with the storage's would; None sends no ``Date`` at all.
    ``extract_images`` restores the older behaviour of accepting images under
    ``file-extract`` (the newest guide says they are no longer extracted, so they are refused
    by default).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        storage_dir: str | os.PathLike[str] | None = None,
        max_files: int = MAX_FILES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        max_file_bytes: int = MAX_FILE_BYTES,
        extract_delay: float = 0.0,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        rate_window: float = 60.0,
        purposes: frozenset[str] = frozenset({"file-extract", "image", "video", "batch"}),
        extract_images: bool = False,
        page_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        date_offset: float | None = 0.0,
    ) -> None:
        self.api_key = api_key
        self.date_offset = date_offset
        self.extract_images = extract_images
        #: list at most this many files per page unless ``limit`` says otherwise, with
        #: ``has_more`` (as openai-style servers page); None: every file at once
        self.page_size = page_size
        self.clock = clock
        self.wall = wall
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self.max_file_bytes = max_file_bytes
        self.extract_delay = extract_delay
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.rate_window = rate_window
        self.purposes = purposes
        self._own_dir = storage_dir is None
        self.storage = Path(storage_dir or tempfile.mkdtemp(prefix="kimi-emulator-"))
        self.storage.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, StoredFile] = {}
        if self.persistent:
            self._load()
        self.faults: list[Fault] = []
        self.requests: list[LoggedRequest] = []
        self._in_flight = 0
        #: the most requests ever served at once (shows concurrent clients are served together)
        self.peak_in_flight = 0
        #: set when the server stops, so emulated hangs end at once
        self.closing = False
        self._starts: deque[float] = deque()
        self._seq = itertools.count(1)
        self._chaos: tuple[float, tuple[str, ...], str, random.Random | None] = (
            0.0, (), "upload", None)
        self.lock = threading.RLock()
        from ._batches import BatchBook

        #: the Batch API's batches (see kimi_files.emulator._batches)
        self.batches = BatchBook(self)

    # --- a storage folder that survives a restart ---------------------------------------------

    @property
    def persistent(self) -> bool:
        """True when the files live in a folder given (``storage_dir``, ``--storage-dir``):
        kept when the emulator stops, and served again when it starts on that folder."""
        return not self._own_dir

    @property
    def _index(self) -> Path:
        return self.storage / INDEX_NAME

    def _load(self) -> None:
        """Serve again what an earlier emulator stored in this folder (its index, and each
        file's content where it is still there); leftovers of uploads cut off are removed."""
        import json

        for leftover in self.storage.glob(".incoming-*"):
            leftover.unlink(missing_ok=True)
        try:
            rows = json.loads(self._index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"the emulator's index {self._index} cannot be read ({exc}); "
                               "move it aside to start with an empty account") from None
        for row in rows:
            content = self.storage / row["id"]
            f = StoredFile(**{k: v for k, v in row.items() if k != "has_content"})
            f.path = content if row.get("has_content") and content.exists() else None
            self.files[f.id] = f

    def _save(self) -> None:
        """Write the index (atomically: a crash leaves the old one or the new one)."""
        if not self.persistent:
            return
        import json

        with self.lock:
            rows = [{"id": f.id, "filename": f.filename, "bytes": f.bytes,
                     "created_at": f.created_at, "purpose": f.purpose, "status": f.status,
                     "status_details": f.status_details, "content_type": f.content_type,
                     "has_content": f.path is not None} for f in self.files.values()]
            fd, tmp = tempfile.mkstemp(dir=self.storage, prefix=".index-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(rows, fh)
            os.replace(tmp, self._index)

    # --- ids and files ----------------------------------------------------------------------

    def new_id(self, created_at: int) -> str:
        # time-ordered like the platform's ids: "cl" + time + sequence + randomness
        alphabet = "0123456789abcdefghijklmnopqrstuv"
        rand = "".join(secrets.choice(alphabet) for _ in range(4))
        return f"cl{created_at:08x}{next(self._seq):06x}{rand}"

    def seed_file(self, filename: str, size: int, *, created_at: int | None = None,
                  purpose: str = "file-extract", status: str = "ok") -> StoredFile:
        """Add a file without content (for quota tests): it counts toward the limits."""
        with self.lock:
            ts = int(self.wall()) if created_at is None else created_at
            f = StoredFile(self.new_id(ts), filename, size, ts, purpose, status)
            self.files[f.id] = f
            self._save()
            return f

    def room_for(self, size: int) -> str | None:
        """Why a file of ``size`` bytes does not fit the account now (``"files"`` or
        ``"bytes"``), or None. Call it under :attr:`lock`."""
        if len(self.files) >= self.max_files:
            return "files"
        if sum(f.bytes for f in self.files.values()) + size > self.max_total_bytes:
            return "bytes"
        return None

    def store(self, filename: str, src: Path, size: int, purpose: str, content_type: str,
              status: str = "ok", *, limits: bool = True) -> StoredFile | str:
        """Store a file, or say why it does not fit (:meth:`room_for`): the limits are
        checked and the file counted under one lock, so uploads at once never pass them.
        ``limits=False``: a file the service writes itself, stored whatever the count."""
        with self.lock:
            full = self.room_for(size) if limits else None
            if full is not None:
                return full
            ts = int(self.wall())
            f = StoredFile(self.new_id(ts), filename, size, ts, purpose, status,
                           content_type=content_type)
            dest = self.storage / f.id
            self.files[f.id] = f
        shutil.move(os.fspath(src), dest)
        f.path = dest
        self._save()
        return f

    def store_bytes(self, filename: str, data: bytes, purpose: str) -> StoredFile:
        """Store a file the service writes itself (a batch's output or errors)."""
        fd, name = tempfile.mkstemp(dir=self.storage, prefix=".made-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        stored = self.store(filename, Path(name), len(data), purpose, "application/jsonl",
                            limits=False)
        assert isinstance(stored, StoredFile)
        return stored

    def delete(self, file_id: str) -> StoredFile | None:
        with self.lock:
            f = self.files.pop(file_id, None)
            if f is not None:
                self._save()
        if f is not None and f.path is not None:
            f.path.unlink(missing_ok=True)
        return f

    def total_bytes(self) -> int:
        with self.lock:
            return sum(f.bytes for f in self.files.values())

    def listing(self) -> list[StoredFile]:
        with self.lock:
            return sorted(self.files.values(), key=lambda f: (f.created_at, f.id))

    # --- faults -----------------------------------------------------------------------------

    def add_fault(self, kind: str, *, times: int = 1, endpoint: str = "upload",
                  **params: Unpack[FaultOptions]) -> Fault:
        fault = Fault(kind, times=times, endpoint=endpoint, **params)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def set_chaos(self, rate: float, kinds: tuple[str, ...] = (), *, seed: int | None = None,
                  endpoint: str = "upload") -> None:
        """Fail a random ``rate`` of requests to ``endpoint`` with a random one of ``kinds``
        (default: every retryable fault, store-then-drop included). ``rate=0`` turns it off."""
        import random

        for kind in kinds:
            Fault(kind)  # validates
        self._chaos = (rate, kinds or CHAOS_KINDS, endpoint, random.Random(seed))

    def take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            rate, kinds, chaos_endpoint, rng = self._chaos
            if (rate and rng is not None and chaos_endpoint in (endpoint, "*")
                    and rng.random() < rate):
                return Fault(rng.choice(kinds), endpoint=endpoint, after=1, limit=50,
                             delay=0.05)
            for fault in self.faults:
                if fault.endpoint in (endpoint, "*") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # --- rate limits ------------------------------------------------------------------------

    def admit(self) -> tuple[int, ErrorBody] | None:
        """Count a request in; a 429 body when it breaks the emulated tier's limits."""
        with self.lock:
            now = self.clock()
            while self._starts and self._starts[0] <= now - self.rate_window:
                self._starts.popleft()
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return Fault("max_concurrency", limit=self.max_concurrency, after=1).error()
            if self.rpm is not None and len(self._starts) >= self.rpm:
                wait = max(1, math.ceil(self._starts[0] + self.rate_window - now))
                return Fault("max_rpm", limit=self.rpm, after=wait).error()
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            self._starts.append(now)
            return None

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        with self.lock:
            return self._in_flight

    def release(self) -> None:
        with self.lock:
            self._in_flight -= 1

    # --- log ----------------------------------------------------------------------------------

    def date_header(self) -> str | None:
        """The ``Date`` of an answer now (None: none is sent)."""
        if self.date_offset is None:
            return None
        from email.utils import formatdate

        return formatdate(self.wall() + self.date_offset, usegmt=True)

    def log(self, method: str, path: str) -> LoggedRequest:
        entry = LoggedRequest(method, path, at=self.wall())
        with self.lock:
            self.requests.append(entry)
        return entry

    def reset(self, **limits: Unpack[Limits]) -> None:
        """Forget every file, fault, logged request and rate window; set limits afresh
        (the platform's unless given)."""
        for fid in list(self.files):
            self.delete(fid)
        self.batches.reset()
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            self._starts.clear()
            self.peak_in_flight = 0
            self._chaos = (0.0, (), "upload", None)
            self.max_files = limits.pop("max_files", MAX_FILES)
            self.max_total_bytes = limits.pop("max_total_bytes", MAX_TOTAL_BYTES)
            self.max_file_bytes = limits.pop("max_file_bytes", MAX_FILE_BYTES)
            self.extract_delay = limits.pop("extract_delay", 0.0)
            self.max_concurrency = limits.pop("max_concurrency", None)
            self.rpm = limits.pop("rpm", None)
            self.rate_window = limits.pop("rate_window", 60.0)
            self.extract_images = limits.pop("extract_images", False)
            self.page_size = limits.pop("page_size", None)
            self.date_offset = limits.pop("date_offset", 0.0)
            if limits:
                raise TypeError(f"unknown options: {sorted(limits)}")

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.storage, ignore_errors=True)
        else:
            self._save()  # statuses changed since the last upload or deletion
