"""The emulator's answers besides the normal ones: the platform's error rows, and what an
injected fault answers instead (an nginx HTML page, an empty or broken body, a dropped line)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ._state import ERROR_ROWS, Fault

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


def _row(name: str, **fmt: object) -> JSONResponse:
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
