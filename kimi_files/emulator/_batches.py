"""The emulator's Batch API and token estimate: plain Python under the ASGI app.

What the platform's docs say is followed (the endpoints, ``input_file_id``, ``endpoint``,
``completion_window``, ``metadata`` of at most 16 keys, the statuses ``validating ->
in_progress -> finalizing -> completed`` or ``failed``, ``expired``, ``cancelling``,
``cancelled``, the results as files, the input rules). Where they are silent the OpenAI Batch
API's shape is used; every such guess is listed in the README ("What the emulator guesses").

Progress is deterministic: a batch moves one phase per :meth:`BatchBook.advance` (tests), per
look when ``steps_per_poll`` is set, or per ``phase_seconds`` of the state's injectable
``clock`` (the default for the served emulator: one second a phase). It never sleeps.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from ._state import EmulatorState, Fault, StoredFile

#: The models the emulator knows, with their context windows in tokens.
MODELS: dict[str, int] = {
    "kimi-k2.5": 262_144, "kimi-k2.6": 262_144, "kimi-k2-0905-preview": 262_144,
    "kimi-k2-turbo-preview": 262_144, "kimi-k2-thinking": 262_144, "kimi-latest": 131_072,
    "moonshot-v1-8k": 8_192, "moonshot-v1-32k": 32_768, "moonshot-v1-128k": 131_072,
    "moonshot-v1-auto": 131_072,
}
CHAT_ENDPOINT = "/v1/chat/completions"
#: Completion windows accepted: 12 hours to 7 days, as ``<n>h`` or ``<n>d`` (a guess).
WINDOW = re.compile(r"^(\d+)([hd])$")
MIN_WINDOW_HOURS, MAX_WINDOW_HOURS = 12, 7 * 24
MAX_METADATA_KEYS = 16
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


# --- the documented, deterministic token estimate --------------------------------------------


def text_tokens(text: str) -> int:
    """The emulator's estimate of a text's tokens: one per CJK (or other wide) character,
    and one per four other characters, rounded up."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + math.ceil((len(text) - wide) / 4)


def estimate_tokens(messages: object) -> int:
    """A chat request's tokens: 3, plus 4 per message and its content's text tokens (an
    image or video part counts 256)."""
    total = 3
    for message in messages if isinstance(messages, list) else ():
        total += 4
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += text_tokens(part["text"])
                else:
                    total += 256
    return total


def answer_for(custom_id: str, messages: object) -> str:
    """The emulator's deterministic answer to a request: it names the request, the
    documents' size and the question, so a join can be checked."""
    system = question = ""
    for m in messages if isinstance(messages, list) else ():
        if isinstance(m, Mapping) and isinstance(m.get("content"), str):
            if m.get("role") == "system":
                system += m["content"]
            elif m.get("role") == "user":
                question = m["content"]
    return (f"[emulated answer] {custom_id}: {len(system)} characters of context read; "
            f"asked: {question[:80]}")


# --- batches ------------------------------------------------------------------------------------


class LineError(TypedDict):
    """One error of a batch's input, as the platform lists them (``errors.data``)."""

    code: str
    message: str
    param: str | None
    line: int | None


@dataclass
class EmuBatch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str]
    created_at: int
    expires_at: int
    endpoint: str = CHAT_ENDPOINT
    status: str = "validating"
    requests: list[dict[str, object]] = field(default_factory=list)
    done: int = 0
    completed: int = 0
    failed: int = 0
    outputs: list[bytes] = field(default_factory=list)
    error_lines: list[bytes] = field(default_factory=list)
    errors: list[LineError] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, int] = field(default_factory=dict)
    fail_every: int = 0
    expire: bool = False
    next_at: float = 0.0

    def to_dict(self) -> dict[str, object]:
        t = self.times
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "in_progress_at": t.get("in_progress"), "expires_at": self.expires_at,
            "finalizing_at": t.get("finalizing"), "completed_at": t.get("completed"),
            "failed_at": t.get("failed"), "expired_at": t.get("expired"),
            "cancelling_at": t.get("cancelling"), "cancelled_at": t.get("cancelled"),
            "request_counts": {"total": len(self.requests), "completed": self.completed,
                               "failed": self.failed},
            "metadata": self.metadata or None,
        }


def _line_error(code: str, message: str, line: int | None = None,
                param: str | None = None) -> LineError:
    return {"code": code, "message": message, "param": param, "line": line}


def json_rows(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, object] | None]]:
    """(line number, the JSON object, or None for a line that is none) of each non-blank
    line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        yield number, row if isinstance(row, dict) else None


def validate_input(raw: bytes) -> tuple[list[dict[str, object]], list[LineError]]:
    """(the requests, the errors) of an input file by the platform's rules."""
    requests: list[dict[str, object]] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    model: str | None = None
    for number, row in json_rows(raw.splitlines()):
        if row is None:
            errors.append(_line_error("invalid_json_line", "This line is not a JSON object.",
                                      number))
            continue
        cid = row.get("custom_id")
        body = _object(row.get("body"))
        if not isinstance(cid, str) or not cid:
            errors.append(_line_error("missing_required_parameter", "custom_id is required.",
                                      number, "custom_id"))
        elif cid in seen:
            errors.append(_line_error("duplicate_custom_id",
                                      f"The custom_id {cid} is used more than once.", number,
                                      "custom_id"))
        if row.get("method") != "POST":
            errors.append(_line_error("invalid_method", "The method must be POST.", number,
                                      "method"))
        if row.get("url") != CHAT_ENDPOINT:
            errors.append(_line_error("invalid_url", f"The url must be {CHAT_ENDPOINT}.", number,
                                      "url"))
        m = body.get("model")
        if not isinstance(m, str) or not isinstance(body.get("messages"), list):
            errors.append(_line_error("missing_required_parameter",
                                      "body.model and body.messages are required.", number,
                                      "body"))
        elif model is None:
            model = m
        elif m != model:
            errors.append(_line_error("mismatched_model",
                                      "Every line of a batch must use the same model.", number,
                                      "body.model"))
        if isinstance(cid, str):
            seen.add(cid)
        requests.append(row)
    if not requests and not errors:
        errors.append(_line_error("empty_file", "The input file holds no request."))
    return requests, errors


def _window_hours(window: object) -> int | None:
    m = WINDOW.match(window) if isinstance(window, str) else None
    if m is None:
        return None
    hours = int(m.group(1)) * (24 if m.group(2) == "d" else 1)
    return hours if MIN_WINDOW_HOURS <= hours <= MAX_WINDOW_HOURS else None


class BatchBook:
    """The account's batches (under the state's lock)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.batches: dict[str, EmuBatch] = {}
        #: seconds of the state's clock per phase; None: only advance() and polls move them
        self.default_phase_seconds: float | None = 1.0
        self.phase_seconds: float | None = self.default_phase_seconds
        #: phases a batch moves each time it is looked at (retrieve or list)
        self.steps_per_poll = 0
        #: how many looks in_progress takes to answer every request
        self.progress_steps = 2

    def reset(self) -> None:
        with self.state.lock:
            self.batches.clear()
            self.phase_seconds = self.default_phase_seconds
            self.steps_per_poll = 0
            self.progress_steps = 2

    # --- create ---------------------------------------------------------------------------------

    def create(self, body: object, fault: Fault | None) -> tuple[int, str] | EmuBatch:
        """The batch, or (400/404, the detail of the refusal)."""
        if not isinstance(body, dict):
            return 400, "the body must be a JSON object"
        file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        window = body.get("completion_window")
        metadata = body.get("metadata") or {}
        with self.state.lock:
            stored = self.state.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            return 400, f"input_file_id {file_id!r} is not a file of this account"
        if stored.purpose != "batch":
            return 400, (f"the input file {file_id} has purpose {stored.purpose!r}; a batch takes "
                         "a file uploaded with purpose 'batch'")
        if endpoint != CHAT_ENDPOINT:
            return 400, f"endpoint must be {CHAT_ENDPOINT}, not {endpoint!r}"
        hours = _window_hours(window)
        if hours is None:
            return 400, (f"completion_window must be {MIN_WINDOW_HOURS}h to "
                         f"{MAX_WINDOW_HOURS // 24}d (as '24h' or '7d'), not {window!r}")
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            return 400, f"metadata takes at most {MAX_METADATA_KEYS} string keys and values"
        with self.state.lock:
            now = int(self.state.wall())
            batch = EmuBatch(f"batch_{secrets.token_hex(12)}", stored.id, str(window), dict(metadata),
                             now, now + hours * 3600)
            if fault is not None and fault.kind == "batch_line_errors":
                batch.fail_every = max(1, fault.limit)
            if fault is not None and fault.kind == "batch_expire":
                batch.expire = True
            batch.next_at = self.state.clock() + (self.phase_seconds or 0)
            self.batches[batch.id] = batch
        return batch

    # --- moving on -----------------------------------------------------------------------------

    def advance(self, steps: int = 1, batch_id: str | None = None) -> None:
        """Move every running batch (or ``batch_id``) ``steps`` phases on."""
        with self.state.lock:
            for b in list(self.batches.values()):
                if batch_id is None or b.id == batch_id:
                    for _ in range(steps):
                        self._step(b)

    def look(self, batch: EmuBatch) -> None:
        """A client looks at the batch: it moves on by the clock and ``steps_per_poll``."""
        with self.state.lock:
            if self.phase_seconds:
                now = self.state.clock()
                while batch.status not in TERMINAL and now >= batch.next_at:
                    self._step(batch)
                    batch.next_at += self.phase_seconds
            for _ in range(self.steps_per_poll):
                self._step(batch)

    def _at(self, b: EmuBatch, what: str) -> None:
        b.times[what] = int(self.state.wall())

    def _step(self, b: EmuBatch) -> None:
        if b.status == "validating":
            stored = self.state.files.get(b.input_file_id)
            raw = stored.path.read_bytes() if stored is not None and stored.path else b""
            b.requests, errors = validate_input(raw)
            if errors:
                b.errors, b.status = errors, "failed"
                self._at(b, "failed")
                return
            b.status = "in_progress"
            self._at(b, "in_progress")
        elif b.status == "in_progress":
            chunk = max(1, math.ceil(len(b.requests) / max(1, self.progress_steps)))
            if b.expire and b.done >= len(b.requests) // 2:
                self._end(b, "expired", "batch_expired",
                          "This request could not be executed before the completion window "
                          "expired.")
                return
            for row in b.requests[b.done:b.done + chunk]:
                self._answer(b, row)
            if b.done >= len(b.requests):
                b.status = "finalizing"
                self._at(b, "finalizing")
        elif b.status == "finalizing":
            self._write_files(b)
            b.status = "completed"
            self._at(b, "completed")
        elif b.status == "cancelling":
            self._end(b, "cancelled", "batch_cancelled",
                      "This request was not executed: the batch was cancelled.")

    def _end(self, b: EmuBatch, status: str, code: str, message: str) -> None:
        for row in b.requests[b.done:]:
            b.error_lines.append(_dump({"id": f"batch_req_{secrets.token_hex(8)}",
                                        "custom_id": row.get("custom_id"), "response": None,
                                        "error": {"code": code, "message": message}}))
            b.failed += 1
        b.done = len(b.requests)
        self._write_files(b)
        b.status = status
        self._at(b, status)

    def _answer(self, b: EmuBatch, row: dict[str, object]) -> None:
        b.done += 1
        cid = str(row.get("custom_id"))
        body = _object(row.get("body"))
        request_id = secrets.token_hex(16)
        if b.fail_every and b.done % b.fail_every == 0:
            b.failed += 1
            b.error_lines.append(_dump({
                "id": f"batch_req_{secrets.token_hex(8)}", "custom_id": cid,
                "response": {"status_code": 400, "request_id": request_id,
                             "body": {"error": {"type": "invalid_request_error",
                                                "message": "Invalid request: emulated failure "
                                                           "of this request"}}},
                "error": None}))
            return
        if body.get("model") not in MODELS:  # as the platform answers a chat request for it
            b.failed += 1
            b.error_lines.append(_dump({
                "id": f"batch_req_{secrets.token_hex(8)}", "custom_id": cid,
                "response": {"status_code": 404, "request_id": request_id,
                             "body": {"error": {"type": "resource_not_found_error",
                                                "message": f"Not found the model "
                                                           f"{body.get('model')} or Permission "
                                                           "denied"}}},
                "error": None}))
            return
        answer = answer_for(cid, body.get("messages"))
        prompt = estimate_tokens(body.get("messages"))
        completion = text_tokens(answer)
        b.completed += 1
        b.outputs.append(_dump({
            "id": f"batch_req_{secrets.token_hex(8)}", "custom_id": cid,
            "response": {"status_code": 200, "request_id": request_id, "body": {
                "id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion",
                "created": int(self.state.wall()), "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}},
            "error": None}))

    def _write_files(self, b: EmuBatch) -> None:
        if b.outputs:
            b.output_file_id = self._store(f"{b.id}_output.jsonl", b"".join(b.outputs)).id
        if b.error_lines:
            b.error_file_id = self._store(f"{b.id}_error.jsonl", b"".join(b.error_lines)).id

    def _store(self, name: str, data: bytes) -> StoredFile:
        return self.state.store_bytes(name, data, "batch_output")

    # --- cancel and list -------------------------------------------------------------------------

    def cancel(self, batch: EmuBatch) -> str | None:
        """Start cancelling; the refusal's detail for a batch that has ended."""
        with self.state.lock:
            if batch.status in TERMINAL or batch.status == "cancelling":
                return (None if batch.status in ("cancelling", "cancelled")
                        else f"batch {batch.id} is {batch.status}: it cannot be cancelled")
            if batch.status == "validating":
                stored = self.state.files.get(batch.input_file_id)
                raw = stored.path.read_bytes() if stored is not None and stored.path else b""
                batch.requests, _ = validate_input(raw)
            batch.status = "cancelling"
            self._at(batch, "cancelling")
            return None

    def listing(self, after: str | None, limit: int) -> tuple[list[EmuBatch], bool]:
        """Newest first; those after ``after``; at most ``limit``."""
        with self.state.lock:
            items = sorted(self.batches.values(), key=lambda b: (b.created_at, b.id),
                           reverse=True)
        if after:
            ids = [b.id for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit


def _object(value: object) -> Mapping[str, object]:
    """A JSON object as it is; anything else as an empty one."""
    return value if isinstance(value, dict) else {}


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode() + b"\n"
