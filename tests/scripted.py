"""A scripted driver for the shared core: step generators fed canned answers, no server.

``Script`` plays the client's side of every action a step generator yields: a Files API call
is answered from the script (a value, an exception to throw in, or a function of the call), a
raw ``Request`` from the ``request`` answers (an ``httpx.Response`` that is not a success is
raised as the error the transport makes of it), a
``Wait`` is recorded and moves the fake clock (``Now`` reads it), a ``Say`` is recorded (not
logged), a ``Progress`` bar and a ``Status`` line are recording stand-ins, ``Stat`` and
``Open`` are answered from the script when it has answers queued for them (``stat``,
``open``) and from the file otherwise, local ``Blocking`` work runs inline, and ``Parallel``
jobs run one after the other.
Nothing here opens a socket or starts a thread, so a scenario (a lost answer, a 429 with a
named wait, a look-alike in the listing, a clock that lies, a file rewritten as it is sent) is
a few lines and runs in milliseconds; ``script.log`` is what the steps asked for, in order.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kimi_files._adoption import AttemptRegistry, ServerClock
from kimi_files._config import Limits, RetryPolicy
from kimi_files._models import FileList, FileObject
from kimi_files._pacing import Pacer
from kimi_files._steps import (
    Advance,
    Blocking,
    Close,
    CreateFile,
    DeleteFile,
    FileStat,
    GetContent,
    ListFiles,
    Now,
    Open,
    Parallel,
    Progress,
    Request,
    Say,
    Stat,
    Status,
    Steps,
    Wait,
)
from kimi_files.errors import error_from_response


class FakeTime:
    """A monotonic clock the test moves (every recorded wait moves it too), and a wall clock
    that moves with it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_offset = 1_760_000_000.0 - self.now

    @property
    def wall(self) -> float:
        return self.now + self.wall_offset

    def __call__(self) -> float:
        return self.now


#: A ``stat`` answer that means: as the file is (the steps' later looks can then be scripted).
AS_IS = object()


class FakeBar:
    """A progress bar that keeps what it was told (``files``: a batch's, counting them)."""

    def __init__(self, total: int, desc: str, unit: str | None = None,
                 files: int | None = None, part_of: FakeBar | None = None) -> None:
        self.total, self.desc, self.unit, self.files = total, desc, unit, files
        self.part_of = part_of
        self.done = 0
        self.files_done = 0
        self.rewinds: list[str] = []
        self.notes: list[str] = []
        self.closed = False

    @property
    def n(self) -> int:
        return self.done

    def advance(self, n: int) -> None:
        self.done += n

    def back(self, n: int) -> None:
        self.done -= n

    def rewind(self, note: str) -> None:
        self.done = 0
        self.rewinds.append(note)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def file_done(self) -> None:
        self.files_done += 1

    def close(self) -> None:
        if not self.closed and self.part_of is not None:
            self.part_of.file_done()  # as ProgressBar counts its file in the overall bar
        self.closed = True


class FakeStatus:
    """A status line (a Heartbeat) that keeps what it was told; ``describe(seconds)`` is the
    line it would say after that long."""

    def __init__(self, describe: Callable[[float], str]) -> None:
        self.describe = describe
        self.touched = 0
        self.closed = False

    def touch(self) -> None:
        self.touched += 1

    def close(self) -> None:
        self.closed = True


def stored(file_id: str, name: str, size: int, created_at: int, *,
           purpose: str = "file-extract", status: str = "ok") -> FileObject:
    """A file object as the service describes a stored file."""
    return FileObject.from_dict({"id": file_id, "object": "file", "bytes": size,
                                 "created_at": created_at, "filename": name, "purpose": purpose,
                                 "status": status, "status_details": ""})


def listing(*files: FileObject) -> FileList:
    return FileList.from_dict({"object": "list", "data": [f.to_dict() for f in files]})


def answer(status: int, type_: str, message: str) -> Exception:
    """The typed error the client raises for this answer of the platform."""
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    return error_from_response(status, body, {})


Outcome = Any  # a value, an exception (thrown in), or a function of the action


@dataclass
class Script:
    """The client side of the steps: plain data the steps read, and canned answers."""

    answers: dict[str, deque[Outcome]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    base_url: str = "http://127.0.0.1:9/v1"
    state: Path | None = None
    cache: Any = None
    time: FakeTime = field(default_factory=FakeTime)
    log: list[tuple[str, Any]] = field(default_factory=list)
    bars: list[FakeBar] = field(default_factory=list)
    statuses: list[FakeStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pacer = Pacer()
        self.clock = ServerClock(monotonic=self.time)
        self.attempts = AttemptRegistry()
        self._opened: dict[int, FileStat] = {}

    # ClientLike
    def state_path(self) -> Path:
        assert self.state is not None, "this scenario keeps no state"
        return self.state

    def reuse_cache(self) -> Any:
        return self.cache

    def on(self, name: str, *outcomes: Outcome) -> Script:
        """Queue answers for ``name``: ``list``, ``create``, ``delete``, ``content``,
        ``request`` (raw requests), ``stat`` or ``open``."""
        self.answers.setdefault(name, deque()).extend(outcomes)
        return self

    def calls(self, name: str) -> list[Any]:
        return [detail for kind, detail in self.log if kind == name]

    @property
    def waits(self) -> list[float]:
        return [seconds for seconds in self.calls("wait")]

    @property
    def said(self) -> list[str]:
        """The lines the steps said, as they would be logged."""
        return [line for _, line in self.calls("say")]

    def _scripted(self, name: str, action: Any) -> tuple[bool, Any]:
        """(True, the next answer queued for ``name``), or (False, None) when none is."""
        queue = self.answers.get(name)
        if not queue:
            return False, None
        outcome = queue.popleft()
        if callable(outcome):
            outcome = outcome(action)
        if isinstance(outcome, BaseException):
            raise outcome
        return True, outcome

    def _local(self, action: Now | Stat | Open | Progress | Advance | Status | Close | Say
               ) -> Any:
        match action:
            case Now(wall=wall):
                return self.time.wall if wall else self.time.now
            case Stat(target=target):
                self.log.append(("stat", target if isinstance(target, (str, os.PathLike))
                                 else "handle"))
                scripted, outcome = self._scripted("stat", action)
                if scripted and outcome is not AS_IS:
                    return outcome
                if not isinstance(target, (str, os.PathLike)):
                    return self._opened[id(target)]  # the file as it was opened
                st = os.stat(target)
                return FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            case Open(path=path):
                self.log.append(("open", path))
                scripted, outcome = self._scripted("open", action)
                if scripted:
                    handle, seen = io.BytesIO(outcome), FileStat(len(outcome), 0, 0)
                else:
                    with open(path, "rb") as fh:  # read now: no handle is left open
                        handle = io.BytesIO(fh.read())
                        st = os.fstat(fh.fileno())
                    seen = FileStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                self._opened[id(handle)] = seen
                return handle
            case Progress(total=total, desc=desc, unit=unit, files=files, part_of=part_of):
                self.bars.append(FakeBar(total, desc, unit, files, part_of))
                return self.bars[-1]
            case Advance(bar=bar, n=n, files=files, note=note):
                if isinstance(bar, FakeStatus):
                    bar.touch()
                    return None
                bar.advance(n)
                bar.files_done += files
                if note is not None:
                    bar.note(note)
                return None
            case Status(describe=describe):
                self.statuses.append(FakeStatus(describe))
                return self.statuses[-1]
            case Close(resource=resource):
                self.log.append(("close", type(resource).__name__))
                resource.close()
                return None
            case Say(level=level, msg=msg, args=args):
                self.log.append(("say", (level, msg % args)))
                return None

    def _answer(self, action: ListFiles | CreateFile | DeleteFile | GetContent) -> Any:
        match action:
            case ListFiles():
                name, detail = "list", ()
            case CreateFile(body=body, filename=filename):
                body.seek(0)
                sent = b"".join(body.pieces())  # what the transport would send
                name, detail = "create", (filename, len(sent))
            case DeleteFile(file_id=file_id):
                name, detail = "delete", (file_id,)
            case GetContent(file_id=file_id):
                name, detail = "content", (file_id,)
        self.log.append((name, detail))
        queue = self.answers.get(name)
        if not queue:
            if name == "delete":
                return None
            raise AssertionError(f"the steps made a {name} call the script did not expect")
        outcome = queue[0] if len(queue) == 1 and name == "list" else queue.popleft()
        if callable(outcome) and not isinstance(outcome, (FileObject, FileList)):
            outcome = outcome(action)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _request(self, action: Request) -> Any:
        """The next ``request`` answer; a Response gets the request it answers, and one that
        is no success is raised as the typed error the transport would raise."""
        params = action.kwargs.get("params") or {}
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        self.log.append(("request", (action.method, action.path + query)))
        scripted, outcome = self._scripted("request", action)
        if not scripted:
            raise AssertionError(f"unexpected raw request {action.method} {action.path}")
        if isinstance(outcome, httpx.Response):
            outcome.request = httpx.Request(action.method, f"{self.base_url}/{action.path}{query}")
            if not outcome.is_success:
                raise error_from_response(outcome.status_code, outcome.content, outcome.headers,
                                          base_url=self.base_url)
        return outcome

    def perform(self, action: Any) -> Any:
        if isinstance(action, (ListFiles, CreateFile, DeleteFile, GetContent)):
            return self._answer(action)
        if isinstance(action, Wait):
            self.log.append(("wait", action.seconds))
            self.time.now += action.seconds
            return True
        if isinstance(action, Blocking):
            return action.fn(*action.args)
        if isinstance(action, Parallel):
            outcomes: list[Any] = []
            for job in action.jobs:
                try:
                    outcomes.append(self.run(job))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes
        if isinstance(action, Request):
            return self._request(action)
        if isinstance(action, (Now, Stat, Open, Progress, Advance, Status, Close, Say)):
            return self._local(action)
        raise AssertionError(f"unknown action {action!r}")

    def run(self, steps: Steps[Any]) -> Any:
        """Drive ``steps`` to the end: their result, or the exception they raise."""
        result: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    action = steps.throw(error) if error is not None else steps.send(result)
                except StopIteration as done:
                    return done.value
                result, error = None, None
                try:
                    result = self.perform(action)
                except Exception as exc:
                    error = exc
        finally:
            steps.close()


def names(files: Iterable[FileObject]) -> list[str]:
    return [f.id for f in files]
