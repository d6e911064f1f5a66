"""The emulator's HTTP face: a Starlette app over :class:`EmulatorState`."""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import secrets
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import EMULATOR_HEADER
from ._batches import MODELS, EmuBatch, estimate_tokens, json_rows
from ._state import ERROR_ROWS, EmulatorState, Fault, LoggedRequest, StoredFile

_HTML = ("<html><head><title>{code} {reason}</title></head><body><center><h1>{code} {reason}"
         "</h1></center><hr><center>nginx</center></body></html>")
_REASONS = {200: "OK", 502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


class _Dropped(Response):
    """Sends nothing: the connection was already closed."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def _drop(request: Request) -> Response:
    """Close the client's connection without an answer (uvicorn); else fail the request."""
    raw_send = request.scope.get("kimi.send")
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None:  # pragma: no cover - not served by uvicorn
        raise RuntimeError("emulated connection drop")
    transport.close()
    cycle.disconnected = True
    return _Dropped()


def _error(status: int, etype: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": etype, "message": message}}, status_code=status)


def _not_found(what: str, key: str) -> JSONResponse:
    return _error(404, "resource_not_found_error", f"Not found the {what} {key} or Permission denied")


def _row(name: str, **fmt: Any) -> JSONResponse:
    status, etype, template = ERROR_ROWS[name]
    return _error(status, etype, template.format(**fmt))


def _fault_response(request: Request, fault: Fault) -> Response | None:
    """The answer a fault gives instead of the normal one (None: answer normally)."""
    kind = fault.kind
    if kind in ERROR_ROWS:
        status, body = fault.error()
        return JSONResponse(body, status_code=status)
    if kind.startswith("html_"):
        code = int(kind[5:])
        return Response(_HTML.format(code=code, reason=_REASONS[code]), status_code=code,
                        media_type="text/html")
    if kind == "empty_500":
        return Response(b"", status_code=500)
    if kind == "garbage":
        return Response(b"\x00\xffnot json at all<<", status_code=200,
                        media_type="application/json")
    if kind == "truncated_json":
        return Response(b'{"id": "cl-trunc", "object": "fi', status_code=200,
                        media_type="application/json")
    if kind == "no_data":
        return JSONResponse({"object": "list"})
    if kind == "empty_200":
        return Response(b"", status_code=200, media_type="application/json")
    if kind == "drop":
        return _drop(request)
    return None


class Emulated:
    """The route handlers; one instance per app."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # --- common -------------------------------------------------------------------------------

    def _auth(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _row("incorrect_api_key")
        if self.state.api_key is not None and key != self.state.api_key:
            return _row("invalid_authentication")
        return None

    async def _handle(self, request: Request, endpoint: str, entry: LoggedRequest,
                      handler: Any) -> Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        limited = self.state.admit()
        if limited is not None:
            status, body = limited
            return JSONResponse(body, status_code=status)
        try:
            fault = self.state.take_fault(endpoint)
            if fault is not None and fault.kind in ("delay", "hang"):
                if fault.kind == "hang":
                    fault.held.set()
                if fault.kind == "hang" and fault.release is not None:
                    await self._released(fault.release)
                deadline = asyncio.get_running_loop().time() + fault.delay
                while not self.state.closing and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(min(0.05, fault.delay))
                if fault.kind == "hang":
                    return _drop(request)
                fault = None
            response: Response = await handler(request, fault, entry)
            if fault is not None and fault.kind == "cut_body" and response.status_code == 200:
                whole = bytes(response.body)
                return Response(whole[:len(whole) // 2], status_code=200,
                                media_type=response.media_type)
            return response
        finally:
            self.state.release()

    async def dispatch(self, request: Request, endpoint: str, handler: Any) -> Response:
        entry = self.state.log(request.method, request.url.path)
        entry.request_id = str(request.scope.get("kimi.request_id", ""))
        response = await self._handle(request, endpoint, entry, handler)
        entry.status = 0 if isinstance(response, _Dropped) else response.status_code
        if not entry.outcome:
            entry.outcome = "dropped" if isinstance(response, _Dropped) else str(entry.status)
        return response

    def _file(self, file_id: str) -> StoredFile | JSONResponse:
        with self.state.lock:
            stored = self.state.files.get(file_id)
        return _not_found("file", file_id) if stored is None else stored

    # --- endpoints ----------------------------------------------------------------------------

    async def upload(self, request: Request, fault: Fault | None,
                     entry: LoggedRequest) -> Response:
        state = self.state
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception as exc:  # malformed multipart of any kind
            return _row("invalid_request", detail=f"malformed multipart body ({exc})")
        try:
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile):
                return _row("invalid_request", detail="the 'file' field is required")
            size = upload.size if upload.size is not None else 0
            entry.body_bytes = size
            if fault is not None and (early := _fault_response(request, fault)) is not None:
                return early
            if not isinstance(purpose, str) or purpose not in state.purposes:
                return _row("invalid_purpose")
            if size == 0:
                return _row("file_empty")
            if size > state.max_file_bytes:
                return _row("file_too_large")
            with state.lock:
                count = len(state.files)
                total = sum(f.bytes for f in state.files.values())
            if count >= state.max_files:
                return _row("too_many_files", limit=state.max_files)
            if total + size > state.max_total_bytes:
                return _row("invalid_request",
                            detail="the total size of your files would exceed the account "
                                   "limit, please delete previous uploaded files")
            if state.extract_delay:
                await asyncio.sleep(state.extract_delay)
            filename = _form_decode(upload.filename or "upload")
            content_type = upload.content_type or "application/octet-stream"
            tmp = await run_in_threadpool(_spill, upload, state.storage)
            refusal = await run_in_threadpool(_refuse, tmp, filename, purpose, size,
                                              state.extract_images)
            if refusal is not None:
                tmp.unlink(missing_ok=True)
                return refusal
            if fault is not None and fault.kind == "store_late":
                fault.held.set()
                if fault.release is not None:
                    await self._released(fault.release)
                await self._until_client_left(request, fault.delay)
            # "error" is the documented status of a failed extraction
            status = "error" if fault is not None and fault.kind == "status_failed" else "ok"
            stored = state.store(filename, tmp, size, purpose, content_type, status)
            if status == "error":
                stored.status_details = "Failed to extract file: emulated extraction failure"
            entry.outcome = f"stored {stored.id}"
            if fault is not None and fault.kind in ("store_then_drop", "store_late"):
                if fault.kind == "store_late":
                    entry.outcome += " late, after the client left"
                fault.stored.set()
                return _drop(request)
            if fault is not None and fault.kind == "no_id":
                fault.stored.set()
                return JSONResponse({**stored.to_dict(), "id": ""})
            return JSONResponse(stored.to_dict())
        finally:
            await form.close()

    async def _released(self, release: threading.Event) -> None:
        """Wait until a test sets ``release`` (or the server stops)."""
        while not self.state.closing and not release.is_set():
            await asyncio.sleep(0.01)

    async def _until_client_left(self, request: Request, delay: float) -> None:
        """Wait ``delay`` seconds, then until the client has gone (at most a minute more)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while not self.state.closing and loop.time() < deadline:
            await asyncio.sleep(min(0.02, delay))
        give_up = loop.time() + 60
        while (not self.state.closing and loop.time() < give_up
               and not await request.is_disconnected()):
            await asyncio.sleep(0.02)

    async def list(self, request: Request, fault: Fault | None, entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        files = self.state.listing()
        after = request.query_params.get("after")
        if after:  # the files listed after that one (by id when it is gone)
            known = next((f for f in files if f.id == after), None)
            if known is not None:
                files = files[files.index(known) + 1:]
            else:
                files = [f for f in files if f.id > after]
        limit_text = request.query_params.get("limit")
        limit = self.state.page_size
        if limit_text is not None:
            try:
                limit = int(limit_text)
            except ValueError:
                limit = 0
            if not 1 <= limit <= 10_000:
                return _row("invalid_request", detail=f"limit must be 1 to 10000, not {limit_text!r}")
        if fault is not None and fault.kind == "has_more_stuck":
            files = self.state.listing()  # the first page again, whatever `after` said
        has_more = limit is not None and len(files) > limit
        if limit is not None:
            files = files[:limit]
        rows = [f.to_dict() for f in files]
        if fault is not None and rows:
            if fault.kind == "repeated_ids":
                rows += [dict(rows[-1]), dict(rows[-1])]
            elif fault.kind == "bad_created_at":
                rows[-1]["created_at"] = fault.value
        if fault is not None and fault.kind in ("has_more_stuck", "has_more_empty"):
            has_more = True
            rows = [] if fault.kind == "has_more_empty" else rows
        if fault is not None and fault.kind == "has_more_text":
            return JSONResponse({"object": "list", "data": rows,
                                 "has_more": "true" if has_more else "false"})
        return JSONResponse({"object": "list", "data": rows, "has_more": has_more})

    async def retrieve(self, request: Request, fault: Fault | None,
                       entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        stored = self._file(request.path_params["file_id"])
        return stored if isinstance(stored, JSONResponse) else JSONResponse(stored.to_dict())

    async def delete(self, request: Request, fault: Fault | None,
                     entry: LoggedRequest) -> Response:
        file_id = request.path_params["file_id"]
        stored = self._file(file_id)
        if isinstance(stored, JSONResponse):
            return stored
        if fault is not None and fault.kind in ("store_then_drop",):
            self.state.delete(file_id)
            return _drop(request)
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        self.state.delete(file_id)
        entry.outcome = f"deleted {file_id}"
        return JSONResponse({"deleted": True, "id": file_id, "object": "file"})

    async def content(self, request: Request, fault: Fault | None,
                      entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        stored = self._file(request.path_params["file_id"])
        if isinstance(stored, JSONResponse):
            return stored
        if stored.purpose in ("batch", "batch_output") and stored.path is not None:
            # a batch file is not extracted: its content is the JSONL as uploaded
            raw = await run_in_threadpool(stored.path.read_bytes)
            return Response(raw, media_type="application/jsonl")
        text, file_type = await run_in_threadpool(extract_text, stored)
        doc = {"content": text, "file_type": file_type, "filename": stored.filename,
               "title": "", "type": "file"}
        if fault is not None and fault.kind == "other_document":
            doc.update(content="the text of someone else's document", filename="other.pdf")
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json")

    # --- the Batch API and the token estimate ---------------------------------------------------

    async def _json_body(self, request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            return None

    async def batch_create(self, request: Request, fault: Fault | None,
                           entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        made = self.state.batches.create(await self._json_body(request), fault)
        if isinstance(made, tuple):
            return _row("invalid_request", detail=made[1])
        entry.outcome = f"created {made.id}"
        return JSONResponse(made.to_dict())

    def _batch(self, request: Request, fault: Fault | None) -> EmuBatch | Response:
        """The batch the path names, or the answer instead (a fault's, or a 404)."""
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        batch_id = request.path_params["batch_id"]
        with self.state.lock:
            batch = self.state.batches.batches.get(batch_id)
        return _not_found("batch", batch_id) if batch is None else batch

    async def batch_retrieve(self, request: Request, fault: Fault | None,
                             entry: LoggedRequest) -> Response:
        batch = self._batch(request, fault)
        if isinstance(batch, Response):
            return batch
        await run_in_threadpool(self.state.batches.look, batch)
        return JSONResponse(batch.to_dict())

    async def batch_list(self, request: Request, fault: Fault | None,
                         entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        text = request.query_params.get("limit", "20")
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return _row("invalid_request", detail=f"limit must be 1 to 100, not {text!r}")
        items, has_more = self.state.batches.listing(request.query_params.get("after"), limit)
        for b in items:
            await run_in_threadpool(self.state.batches.look, b)
        data = [b.to_dict() for b in items]
        return JSONResponse({"object": "list", "data": data,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    async def batch_cancel(self, request: Request, fault: Fault | None,
                           entry: LoggedRequest) -> Response:
        batch = self._batch(request, fault)
        if isinstance(batch, Response):
            return batch
        refused = self.state.batches.cancel(batch)
        if refused is not None:
            return _row("invalid_request", detail=refused)
        return JSONResponse(batch.to_dict())

    async def tokens(self, request: Request, fault: Fault | None,
                     entry: LoggedRequest) -> Response:
        if fault is not None and (early := _fault_response(request, fault)) is not None:
            return early
        body = await self._json_body(request)
        model = body.get("model") if isinstance(body, dict) else None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(model, str) or not isinstance(messages, list):
            return _row("invalid_request", detail="model and messages are required")
        if model not in MODELS:
            return _row("model_not_found", detail=model)
        return JSONResponse({"data": {"total_tokens": estimate_tokens(messages)}})


def _form_decode(name: str) -> str:
    """Undo the HTML5 form encoding clients (browsers, httpx) apply to `"` and line breaks."""
    return name.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _spill(upload: UploadFile, storage: Path) -> Path:
    """Copy the spooled upload into the storage folder (in chunks)."""
    fd, name = tempfile.mkstemp(dir=storage, prefix=".incoming-")
    src = upload.file
    src.seek(0)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1024 * 1024):
            out.write(chunk)
    return Path(name)


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


# --- the app ----------------------------------------------------------------------------------


class _KeepSend:
    """Outermost ASGI layer: remembers the server's own ``send`` so a fault can drop the line,
    and gives every answer a ``Msh-Request-Id`` header, as the service does, its ``Date``
    (:meth:`EmulatorState.date_header`: the emulated clock, not the ASGI server's), and the
    emulator's own ``X-Kimi-Files-Emulator: ephemeral|persistent`` (what it stores goes when
    it stops, or survives in its storage folder): a client keeps no state for an ephemeral
    one."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["kimi.send"] = send
        request_id = secrets.token_hex(16)
        scope["kimi.request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"msh-request-id", request_id.encode()))
                headers.append((EMULATOR_HEADER.lower().encode(),
                                b"persistent" if self.state.persistent else b"ephemeral"))
                date = self.state.date_header()
                if date is not None:
                    headers.append((b"date", date.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(state: EmulatorState) -> ASGIApp:
    """The emulator as an ASGI app (mount it or serve it with any ASGI server)."""
    h = Emulated(state)

    def route(path: str, endpoint: str, handler: Any, method: str) -> Route:
        async def view(request: Request) -> Response:
            return await h.dispatch(request, endpoint, handler)

        return Route(path, view, methods=[method])

    app = Starlette(routes=[
        route("/v1/files", "upload", h.upload, "POST"),
        route("/v1/files", "list", h.list, "GET"),
        route("/v1/files/{file_id}", "retrieve", h.retrieve, "GET"),
        route("/v1/files/{file_id}", "delete", h.delete, "DELETE"),
        route("/v1/files/{file_id}/content", "content", h.content, "GET"),
        route("/v1/batches", "batch_create", h.batch_create, "POST"),
        route("/v1/batches", "batch_list", h.batch_list, "GET"),
        route("/v1/batches/{batch_id}", "batch_retrieve", h.batch_retrieve, "GET"),
        route("/v1/batches/{batch_id}/cancel", "batch_cancel", h.batch_cancel, "POST"),
        route("/v1/tokenizers/estimate-token-count", "tokens", h.tokens, "POST"),
    ])
    return _KeepSend(app, state)
