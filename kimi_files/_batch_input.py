"""The Batch API's input and output files, as pure functions (no I/O, no client).

Not :mod:`kimi_files._batch` (the folder upload executor behind ``ingest``): this is the
platform's *Batch API*, where a ``.jsonl`` of chat requests is uploaded with purpose
``batch`` and answered later, all at once.

* :func:`custom_id_for` and :func:`request_line`: one chat request per document, with a
  ``custom_id`` that is the same for the same path on every run.
* :class:`InputChecker`: every rule of the platform's input file, fed one line at a time
  (memory bounded by the longest line and the set of ids), each refusal a
  :class:`Violation` naming its line and its rule. :data:`RULES` lists them.
* :class:`PartPlanner`: where an input over 100 MB is cut into several batches (whole lines,
  each part at most :data:`MAX_INPUT_BYTES`).
* :func:`result_row` and :func:`join_results`: the output and error files' lines, joined
  back to the documents by ``custom_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["CHAT_ENDPOINT", "MAX_INPUT_BYTES", "MAX_METADATA_KEYS", "RULES", "InputChecker",
           "PartPlanner", "Violation", "custom_id_for", "join_results", "request_line",
           "result_row"]

#: The one endpoint the platform's Batch API serves.
CHAT_ENDPOINT = "/v1/chat/completions"
#: The largest input file the platform takes (the per-file cap of the Files API).
MAX_INPUT_BYTES = 100 * 1024 * 1024
#: The most ``metadata`` keys a batch may carry.
MAX_METADATA_KEYS = 16

#: Every rule :class:`InputChecker` applies: its name and what it asks.
RULES: dict[str, str] = {
    "jsonl_name": "the file's name ends in .jsonl",
    "not_empty": "the file holds at least one request",
    "line_size": f"one request line is at most {MAX_INPUT_BYTES // (1024 * 1024)} MB (an input "
                 "over that is split into several batches between lines, never inside one)",
    "json": "every non-blank line is a JSON object in UTF-8",
    "custom_id": "every line has a custom_id, a non-empty string",
    "unique_custom_id": "no custom_id appears twice",
    "method": 'every line has "method": "POST"',
    "url": f'every line has "url": "{CHAT_ENDPOINT}"',
    "body": 'every line has a "body" object with a "messages" list and a "model" string',
    "one_model": "every line asks the same model",
    "known_model": "the model is one the platform is known to serve "
                   "(kimi_files._tokens.CONTEXT_WINDOWS; --any-model sends another)",
}
#: The public name of RULES: every rule a Batch API input line is checked against.
BATCH_INPUT_RULES = RULES


class ResultRow(TypedDict):
    """One request's result, as :func:`result_row` reads it from an output or error line."""

    custom_id: object  # a str on any line the platform wrote; whatever else a line holds
    status: str
    answer: str | None
    usage: object
    error: object


class JoinedRow(ResultRow):
    """A result joined to its document: ``path`` None for a custom_id no document has."""

    path: str | None


def dig(value: object, *keys: str | int) -> object:
    """``value[k1][k2]...`` through JSON objects (str keys) and arrays (int indexes); None
    where a key is missing or a value is not the container the key needs. Pure."""
    for key in keys:
        if isinstance(key, str) and isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(key, int) and isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


@dataclass(frozen=True, slots=True)
class Violation:
    """One refusal: the line (1-based; 0 for the whole file), the rule and what is wrong."""

    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "the file"
        return f"{where}: {self.message} (rule {self.rule}: {RULES[self.rule]})"


def custom_id_for(path: str) -> str:
    """A stable ``custom_id`` for a document: a hash of its path as given, so the same path
    gets the same id on every run and on every machine. Pure."""
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()
    return f"doc-{digest[:24]}"


def request_line(custom_id: str, model: str, document: Mapping[str, str], prompt: str,
                 body: Mapping[str, object] | None = None) -> bytes:
    """One input line: a chat request with the document's system message (as
    :func:`kimi_files.messages` builds it) and the prompt as the user message; ``body`` adds
    request fields (``max_tokens``...). Compact JSON, non-ASCII kept as it is, and a newline:
    the same input gives the same bytes. Pure."""
    request = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT,
               "body": {**(body or {}), "model": model,
                        "messages": [dict(document), {"role": "user", "content": prompt}]}}
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "object"


@dataclass
class PartPlanner:
    """Cuts an input into parts of at most ``limit`` bytes, between lines, in order: feed
    each line's size; ``parts`` is the number of lines of each part. Pure."""

    limit: int = MAX_INPUT_BYTES
    parts: list[int] = field(default_factory=list)
    _bytes: int = 0

    def feed(self, size: int) -> bool:
        """Place one line; False when the line alone is over the limit (it cannot be sent)."""
        if size > self.limit:
            return False
        if not self.parts or self._bytes + size > self.limit:
            self.parts.append(0)
            self._bytes = 0
        self.parts[-1] += 1
        self._bytes += size
        return True


class InputChecker:
    """The platform's rules for a Batch API input file, one line at a time. Pure.

    ``feed`` every line (bytes, with or without its newline) in order, then ``finish``.
    ``violations`` keeps the first ``keep`` refusals (``count`` counts them all); ``requests``
    counts the request lines, ``model`` is the first line's model and ``parts`` the lines of
    each batch the input will be sent as (one unless it is over 100 MB). ``models``: the
    models known to exist (rule ``known_model``); None checks no name.
    """

    def __init__(self, name: str, *, limit: int = MAX_INPUT_BYTES, keep: int = 1000,
                 models: Collection[str] | None = None) -> None:
        self.name = name
        self.models = models
        self.keep = keep
        self.violations: list[Violation] = []
        self.count = 0
        self.requests = 0
        self.size = 0
        self.model: str | None = None
        self._model_line = 0
        self._seen: dict[str, int] = {}
        self._line = 0
        self._nonblank = 0
        self._planner = PartPlanner(limit)
        if not name.lower().endswith(".jsonl"):
            self._refuse(0, "jsonl_name", f"{name} is not named *.jsonl")

    @property
    def parts(self) -> list[int]:
        return self._planner.parts

    def _refuse(self, line: int, rule: str, message: str) -> None:
        self.count += 1
        if len(self.violations) < self.keep:
            self.violations.append(Violation(line, rule, message))

    def feed(self, raw: bytes) -> None:
        self._line += 1
        line = self._line
        self.size += len(raw)
        if not raw.strip():
            self._planner.feed(len(raw))
            return
        self._nonblank += 1
        if not self._planner.feed(len(raw)):
            self._refuse(line, "line_size", f"the line is {len(raw):,} bytes")
            return
        try:
            row = json.loads(raw)
        except UnicodeDecodeError:
            self._refuse(line, "json", "the line is not UTF-8 text")
            return
        except ValueError as exc:
            self._refuse(line, "json", f"the line is not JSON ({getattr(exc, 'msg', exc)})")
            return
        if not isinstance(row, dict):
            self._refuse(line, "json", f"the line is a JSON {_kind(row)}, not an object")
            return
        self.requests += 1
        self._check_row(line, row)

    def _check_row(self, line: int, row: dict[str, object]) -> None:
        cid = row.get("custom_id")
        if not isinstance(cid, str) or not cid:
            self._refuse(line, "custom_id", f"custom_id is {json.dumps(cid)[:60]}" if "custom_id"
                         in row else "no custom_id")
        elif cid in self._seen:
            self._refuse(line, "unique_custom_id",
                         f"custom_id {cid!r} is also on line {self._seen[cid]}")
        else:
            self._seen[cid] = line
        if row.get("method") != "POST":
            self._refuse(line, "method", f"method is {json.dumps(row.get('method'))[:40]}")
        if row.get("url") != CHAT_ENDPOINT:
            self._refuse(line, "url", f"url is {json.dumps(row.get('url'))[:80]}")
        body = row.get("body")
        if not isinstance(body, dict):
            self._refuse(line, "body", "no body object" if body is None
                         else f"body is a JSON {_kind(body)}")
            return
        model = body.get("model")
        if not isinstance(body.get("messages"), list) or not isinstance(model, str) or not model:
            missing = [k for k, ok in (("messages", isinstance(body.get("messages"), list)),
                                       ("model", isinstance(model, str) and bool(model)))
                       if not ok]
            self._refuse(line, "body", f"body has no {' and no '.join(missing)}")
            return
        if self.model is None:
            self.model, self._model_line = model, line
            if self.models is not None and model not in self.models:
                self._refuse(line, "known_model",
                             f"model {model!r} is not one the platform is known to serve "
                             f"({', '.join(sorted(self.models))})")
        elif model != self.model:
            self._refuse(line, "one_model",
                         f"model {model!r}, but line {self._model_line} asks {self.model!r}")

    def feed_all(self, lines: Iterable[bytes]) -> InputChecker:
        for raw in lines:
            self.feed(raw)
        return self.finish()

    def finish(self) -> InputChecker:
        """Apply the whole-file rules; returns itself."""
        if self._nonblank == 0:
            self._refuse(0, "not_empty", f"{self.name} holds no request")
        return self

    @property
    def ok(self) -> bool:
        return self.count == 0


# --- results --------------------------------------------------------------------------------------


def _answer(body: object) -> str | None:
    content = dig(body, "choices", 0, "message", "content")
    return content if isinstance(content, str) else None


def result_row(line: Mapping[str, object]) -> ResultRow:
    """One line of an output or error file as a result: ``custom_id``, ``status`` (``ok`` or
    ``error``), ``answer`` (the text), ``usage`` and ``error`` (the platform's error object).
    Pure."""
    response = line.get("response")
    response = response if isinstance(response, Mapping) else {}
    body = response.get("body")
    code = response.get("status_code")
    error = line.get("error")
    if not error and isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = dict(body["error"])
    if not error and code is not None and code != 200:
        error = {"code": str(code), "message": f"the request was answered {code}"}
    ok = not error and code == 200
    if ok and _answer(body) is None:
        error = {"code": "no_answer", "message": "the response holds no answer text"}
        ok = False
    return {
        "custom_id": line.get("custom_id"),
        "status": "ok" if ok else "error",
        "answer": _answer(body) if ok else None,
        "usage": body.get("usage") if isinstance(body, Mapping) else None,
        "error": None if ok else error,
    }


def _rows(lines: Iterable[bytes], source: str) -> Iterator[ResultRow]:
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            yield {"custom_id": None, "status": "error", "answer": None, "usage": None,
                   "error": {"code": "unreadable_line",
                             "message": f"line {number} of the {source} file is not a JSON object"}}
            continue
        yield result_row(line)


#: Why a request has no result, when no batch failed.
ENDED_EARLY = "no result for this request: the batch ended before it was done"


def join_results(ids: Mapping[str, str | None], output: Iterable[bytes],
                 errors: Iterable[bytes] = (), *,
                 missing: str = ENDED_EARLY) -> Iterator[JoinedRow]:
    """One result per request, joined to its document by ``custom_id``: ``ids`` maps each
    custom_id to its path, in input order, and the results come in that order (then any line
    whose custom_id is unknown, with ``path`` None). A request with no line in either file
    (the batch expired or was cancelled before it, or failed) is ``status: "missing"``, with
    the message ``missing``. A custom_id in
    both files keeps its answer. Pure (the lines are read once)."""
    found: dict[str, ResultRow] = {}
    strays: list[ResultRow] = []
    for source, lines in (("output", output), ("error", errors)):
        for row in _rows(lines, source):
            cid = row["custom_id"]
            if not isinstance(cid, str):
                strays.append(row)
            elif cid not in found or found[cid]["status"] != "ok":
                found[cid] = row
    for cid, path in ids.items():
        joined = found.pop(cid, None)
        if joined is None:
            yield {"custom_id": cid, "path": path, "status": "missing", "answer": None,
                   "usage": None, "error": {"code": "missing", "message": missing}}
        else:
            yield _placed(joined, cid, path)
    for row in [*found.values(), *strays]:
        yield _placed(row, row["custom_id"], None)


def _placed(row: ResultRow, custom_id: object, path: str | None) -> JoinedRow:
    return {"custom_id": custom_id, "path": path, "status": row["status"],
            "answer": row["answer"], "usage": row["usage"], "error": row["error"]}
