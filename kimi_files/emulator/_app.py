"""The emulator's HTTP face: a Starlette app over :class:`EmulatorState` (its error and fault
answers in ``_answers.py``, what a purpose accepts and the extracted text in ``_content.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._config import EMULATOR_HEADER
from ._answers import _drop, _Dropped, _fault_response, _not_found, _row
from ._batches import MODELS, EmuBatch, estimate_tokens
from ._content import _refuse, extract_text
from ._state import EmulatorState, Fault, LoggedRequest, StoredFile

#: A route's handler: the request, the fault it takes (if any), its log entry -> the answer.
Handler = Callable[[Request, Fault | None, LoggedRequest], Awaitable[Response]]


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
                      handler: Handler) -> Response:
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

    async def dispatch(self, request: Request, endpoint: str, handler: Handler) -> Response:
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
            no_room = self._no_room(size)
            if no_room is not None:
                return no_room
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
            if isinstance(stored, str):  # filled up by uploads that ran at the same time
                tmp.unlink(missing_ok=True)
                return _full(state, stored)
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

    def _no_room(self, size: int) -> JSONResponse | None:
        """The answer to an upload of ``size`` bytes the account has no room for (or an
        empty one); None when it fits."""
        state = self.state
        if size == 0:
            return _row("file_empty")
        if size > state.max_file_bytes:
            return _row("file_too_large")
        with state.lock:
            full = state.room_for(size)
        # refused early; checked again, atomically, when the file is stored
        return None if full is None else _full(state, full)

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
        if fault is not None and fault.kind == "lone_surrogate":
            doc["content"] = f"{text}\ud800"  # as JSON may say it: "\ud800", no pair
            return Response(json.dumps(doc), media_type="application/json")
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json")

    # --- the Batch API and the token estimate ---------------------------------------------------

    async def _json_body(self, request: Request) -> object:
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
        more: bool | str = has_more
        if fault is not None and fault.kind == "has_more_text":
            more = "true" if has_more else "false"
        return JSONResponse({"object": "list", "data": data,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": more})

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


def _full(state: EmulatorState, what: str) -> JSONResponse:
    """The service's refusal of an upload past the account's file count or bytes."""
    if what == "files":
        return _row("too_many_files", limit=state.max_files)
    return _row("invalid_request", detail="the total size of your files would exceed the "
                                          "account limit, please delete previous uploaded files")


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

    def route(path: str, endpoint: str, handler: Handler, method: str) -> Route:
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
