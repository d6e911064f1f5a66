"""A fast stand-in for the Kimi Files API, for benchmarks: the client is the bottleneck.

    python benchmarks/fastserver.py [--port 0] [--delay SECONDS]

prints ``http://127.0.0.1:PORT/v1`` on its first line, then serves until killed.

Not the emulator, and no model of the service: raw sockets, HTTP/1.1 with keep-alive and
TCP_NODELAY, one thread per connection. An upload's body is drained as fast as it comes
(``recv_into`` a 1 MiB buffer; nothing parsed but the first and last 64 KiB), and the answer,
a file object, goes out at once in one write. Two traps it avoids: an answer written in two
pieces without TCP_NODELAY stalls every kept-alive request by ~40 ms (delayed ACK), and an
``Expect: 100-continue`` left unanswered makes curl wait a second before sending.

``bytes`` in the answer is the size of the file part (what kimi-files checks against the size
it sent): the file part's headers are read from the head of the body, its end is the first
delimiter after them, found in the tail. Files are "stored" (their objects only, not their
bytes), so ``GET /v1/files`` lists them, ``GET``/``DELETE /v1/files/{id}`` work, and
``GET /v1/files/{id}/content`` answers a fixed text. Every answer has a ``Date`` header.

Two routes for the benchmark runner, outside /v1 and without a key: ``POST /bench/reset``
forgets every file and count, ``POST /bench/reset-counts`` only the counts,
``GET /bench/stats`` answers ``{"requests": {"GET /v1/files":
n, ...}, "files": n}``. ``--delay`` sleeps that long before each /v1 answer (a server's time).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from typing import Any

#: How much of the head and of the tail of an upload body is kept for its multipart framing.
EDGE = 64 * 1024
RECV = 1024 * 1024
MAX_HEADER = 64 * 1024

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}


class _Closed(Exception):
    """The peer closed the connection (between requests: the normal end)."""


class Store:
    """The file objects "stored" so far, and the request counts (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self._ids = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.files.clear()
            self.counts.clear()

    def add(self, filename: str, size: int, purpose: str) -> dict[str, Any]:
        with self.lock:
            file_id = f"fs{next(self._ids):012x}"
            obj = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
                   "filename": filename, "purpose": purpose, "status": "ok",
                   "status_details": ""}
            self.files[file_id] = obj
            return obj


class _Date:
    """The Date header's value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_date = _Date()


def _param(header: bytes, name: bytes) -> str | None:
    """A parameter of a Content-Disposition header (quoted or not), decoded as UTF-8."""
    m = re.search(rb';\s*' + name + rb'="((?:[^"\\]|\\.)*)"', header, re.I)
    if m is None:
        m = re.search(rb';\s*' + name + rb'=([^;\s]*)', header, re.I)
    if m is None:
        return None
    value = m.group(1).decode("utf-8", "replace")
    # httpx escapes ", \r and \n as %22, %0D, %0A; curl escapes with a backslash
    value = value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
    return re.sub(r'\\(.)', r'\1', value)


def file_part(head: bytes, tail: bytes, tail_at: int, boundary: bytes) -> tuple[str, int, str]:
    """(filename, size of the file part's content, purpose) of a multipart body.

    ``head`` is the start of the body, ``tail`` its end, starting at offset ``tail_at``
    (they overlap, or are the same bytes, for a small body). Raises ValueError when the body
    has no file part whose framing fits in them.
    """
    delim = b"--" + boundary
    purpose = "file-extract"
    filename: str | None = None
    data_start = -1
    pos = head.find(delim)
    while pos >= 0:
        hdr_end = head.find(b"\r\n\r\n", pos)
        if hdr_end < 0:
            break
        headers = head[pos + len(delim):hdr_end]
        name = _param(headers, b"name")
        if _param(headers, b"filename") is not None and filename is None:
            filename = _param(headers, b"filename") or ""
            data_start = hdr_end + 4
            break
        nxt = head.find(b"\r\n" + delim, hdr_end)
        if name == "purpose" and nxt >= 0:
            purpose = head[hdr_end + 4:nxt].decode("utf-8", "replace")
        pos = nxt + 2 if nxt >= 0 else -1
    if filename is None:
        raise ValueError("no file part in the first 64 KiB of the body")
    end_mark = b"\r\n" + delim
    start_in_tail = max(0, data_start - tail_at)
    end = tail.find(end_mark, start_in_tail)
    if end < 0:
        raise ValueError("no delimiter after the file part in the last 64 KiB of the body")
    size = tail_at + end - data_start
    # a purpose field after the file (curl -F file=@x -F purpose=y)
    m = re.search(rb'name="purpose"\r\n(?:[^\r\n]*\r\n)*\r\n([^\r]*)\r\n', tail[end:])
    if m is not None:
        purpose = m.group(1).decode("utf-8", "replace")
    return filename, size, purpose


class Connection:
    """One kept-alive client connection: reads requests, answers each in one write."""

    def __init__(self, sock: socket.socket, store: Store, delay: float) -> None:
        self.sock = sock
        self.store = store
        self.delay = delay
        self.buf = bytearray(RECV)
        self.view = memoryview(self.buf)
        self.pending = b""  # bytes received past the end of what was consumed

    # --- reading ---------------------------------------------------------------------------

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self.buf)
        if n == 0:
            raise _Closed
        return bytes(self.view[:n])

    def _head(self) -> bytes:
        data = self.pending
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEADER:
                raise ValueError("request headers too large")
            try:
                data += self._recv()
            except _Closed:
                if data:
                    raise ValueError("connection closed inside the request headers") from None
                raise
        head, _, self.pending = data.partition(b"\r\n\r\n")
        return head

    def _drain(self, length: int) -> tuple[bytes, bytes, int]:
        """Consume a body of ``length`` bytes; (its first EDGE bytes, last EDGE, where they start)."""
        got = self.pending[:length]
        self.pending = self.pending[length:]
        head = got[:EDGE]
        tail_at = max(0, length - EDGE)
        tail = bytearray(got[tail_at:]) if len(got) > tail_at else bytearray()
        received = len(got)
        sock, buf, view = self.sock, self.buf, self.view
        while received < length:
            n = sock.recv_into(buf, min(RECV, length - received))
            if n == 0:
                raise ValueError("connection closed inside the request body")
            if len(head) < EDGE:
                head += bytes(view[:min(n, EDGE - len(head))])
            end = received + n
            if end > tail_at:
                tail += view[max(0, tail_at - received):n]
            received = end
        return head, bytes(tail), tail_at

    def _drain_chunked(self) -> tuple[bytes, bytes, int]:
        """Consume a chunked body; (its first EDGE bytes, last EDGE, where they start)."""
        head = bytearray()
        tail = bytearray()
        total = 0
        data = self.pending
        self.pending = b""
        while True:
            while b"\r\n" not in data:
                data += self._recv()
            line, _, data = data.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while not data.startswith(b"\r\n") and b"\r\n\r\n" not in data:
                    data += self._recv()
                self.pending = data[2:] if data.startswith(b"\r\n") else data.partition(b"\r\n\r\n")[2]
                break
            while len(data) < size + 2:
                data += self._recv()
            chunk = memoryview(data)[:size]
            if len(head) < EDGE:
                head += chunk[:EDGE - len(head)]
            tail += chunk[-EDGE:]
            del tail[:-EDGE]
            total += size
            data = data[size + 2:]
        return bytes(head), bytes(tail), total - len(tail)

    # --- answering -------------------------------------------------------------------------

    def send(self, status: int, body: Any, *, keep_alive: bool = True) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctype = "text/plain" if isinstance(body, bytes) else "application/json"
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Date: {_date.get()}\r\nServer: kimi-files-fastserver\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        self.sock.sendall(head.encode() + payload)  # one write

    def serve(self) -> None:
        try:
            while True:
                try:
                    head = self._head()
                except _Closed:
                    return
                if not self.one(head):
                    return
        except (OSError, ValueError):
            return
        finally:
            self.sock.close()

    def one(self, head: bytes) -> bool:
        """Answer one request; False to close the connection."""
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close"
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        path = target.split("?", 1)[0]
        body_head, body_tail, tail_at = b"", b"", 0
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body_head, body_tail, tail_at = self._drain_chunked()
        elif "content-length" in headers:
            body_head, body_tail, tail_at = self._drain(int(headers["content-length"]))
        with self.store.lock:
            self.store.counts[f"{method} {path}"] += 1
        if path.startswith("/bench/"):
            if path == "/bench/reset" and method == "POST":
                self.store.reset()
                self.send(200, {"reset": True}, keep_alive=keep_alive)
            elif path == "/bench/reset-counts" and method == "POST":
                with self.store.lock:
                    self.store.counts.clear()
                self.send(200, {"reset": True}, keep_alive=keep_alive)
            elif path == "/bench/stats":
                with self.store.lock:
                    stats = {"requests": dict(self.store.counts), "files": len(self.store.files)}
                self.send(200, stats, keep_alive=keep_alive)
            else:
                self.send(404, _error("not_found", "no such bench route"), keep_alive=keep_alive)
            return keep_alive
        if not headers.get("authorization", "").startswith("Bearer "):
            self.send(401, _error("incorrect_api_key_error", "Invalid Authentication"),
                      keep_alive=keep_alive)
            return keep_alive
        if self.delay:
            time.sleep(self.delay)
        status, body = self.route(method, path, headers, body_head, body_tail, tail_at)
        self.send(status, body, keep_alive=keep_alive)
        return keep_alive

    def route(self, method: str, path: str, headers: dict[str, str], body_head: bytes,
              body_tail: bytes, tail_at: int) -> tuple[int, Any]:
        store = self.store
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "files"]:
            return 404, _error("resource_not_found_error", f"no route {path}")
        if len(parts) == 2:
            if method == "GET":
                with store.lock:
                    data = list(store.files.values())
                return 200, {"object": "list", "data": data, "has_more": False}
            if method == "POST":
                m = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
                if m is None:
                    return 400, _error("invalid_request_error", "not a multipart/form-data body")
                try:
                    filename, size, purpose = file_part(body_head, body_tail, tail_at,
                                                        m.group(1).encode("latin-1"))
                except ValueError as exc:
                    return 400, _error("invalid_request_error", str(exc))
                return 200, store.add(filename, size, purpose)
            return 405, _error("invalid_request_error", f"{method} {path}")
        with store.lock:
            obj = store.files.get(parts[2])
        if obj is None:
            return 404, _error("resource_not_found_error", f"No such file: {parts[2]}")
        if len(parts) == 3 and method == "GET":
            return 200, obj
        if len(parts) == 3 and method == "DELETE":
            with store.lock:
                store.files.pop(parts[2], None)
            return 200, {"deleted": True, "id": parts[2], "object": "file"}
        if len(parts) == 4 and parts[3] == "content" and method == "GET":
            return 200, json.dumps({"content": f"the text of {obj['filename']}",
                                    "file_type": "text/plain", "filename": obj["filename"],
                                    "title": "", "type": "file"}).encode()
        return 405, _error("invalid_request_error", f"{method} {path}")


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


class FastServer:
    """The server on 127.0.0.1, in a thread of this process (for tests; the benchmarks run
    it in a process of its own so it shares no GIL with the client)."""

    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        self.store = Store()
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.port = int(self.sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=Connection(conn, self.store, self.delay).serve,
                             daemon=True).start()

    def __enter__(self) -> FastServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to wait before each /v1 answer (default 0)")
    args = parser.parse_args(argv)
    server = FastServer(args.port, args.delay)
    print(server.base_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
