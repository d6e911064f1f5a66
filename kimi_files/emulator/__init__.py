"""A faithful local emulator of the Kimi Files API, for tests, demos and offline pipelines.

::

    from kimi_files.emulator import Emulator

    with Emulator() as emu:                       # a real HTTP server on a free loopback port
        client = kimi_files.KimiFiles(api_key="any", base_url=emu.base_url)
        emu.fail_next("extraction_failed")        # inject a row of the error table
        client.upload("report.pdf")               # retried, then stored

From the shell: ``python -m kimi_files.emulator --port 8000 [--api-key KEY]``.

It serves the five endpoints with the documented shapes and enforces the limits with the
platform's exact error bodies: the purpose, zero size, 100 MB per file, 1,000 files and
10 GB per account (all configurable), 401 for a wrong key, 404 for an unknown id. Like the
service it answers ``text extract error: 没有解析出内容`` to a PDF without a text layer or to
5 KiB of one repeated character, checks each purpose's content types (images are refused
under ``file-extract`` unless ``extract_images=True``), sends ``Msh-Request-Id`` on every
answer and no ``Retry-After`` / ``X-RateLimit-*`` on 429s. The list honours ``after`` and
``limit`` and answers ``has_more`` (``page_size`` pages it by default). Uploads are streamed
to disk. Faults (``fail_next``)
cover every row of the error table and every wording captured from real accounts
(:data:`CAPTURED_ROWS`), plus HTML gateway pages, garbage and truncated bodies, delays,
hangs, dropped connections, "store the file, then drop the connection" and "store it late,
after the client gave up". Tiers can be emulated with ``max_concurrency`` and ``rpm``; the
clocks are injectable (``clock=``, ``wall=``), and the ``Date`` header can be made to disagree
with ``created_at`` (``date_offset=``, seconds; None: no ``Date``). It also serves the Batch
API (``/v1/batches``: create, retrieve, list, cancel; output and error files in the OpenAI
line shape, a deterministic answer per request, faults ``batch_line_errors`` and ``batch_expire``) and the
token estimate (``/v1/tokenizers/estimate-token-count``, a documented formula): see
``emu.state.batches`` (progress by the injectable clock, per look, or ``advance()``) and
``kimi_files.emulator._batches``. Needs the ``emulator`` extra:
``pip install 'kimi-files[emulator]'``.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from ._state import (
    CAPTURED_ROWS,
    CHAOS_KINDS,
    ERROR_ROWS,
    FAULT_KINDS,
    TRANSPORT_FAULTS,
    EmulatorState,
    Fault,
    LoggedRequest,
)

if TYPE_CHECKING:
    import uvicorn
    from typing_extensions import Unpack

    from ._state import FaultOptions, StateOptions, StoredFile

__all__ = [
    "CAPTURED_ROWS",
    "CHAOS_KINDS",
    "ERROR_ROWS",
    "FAULT_KINDS",
    "TRANSPORT_FAULTS",
    "Emulator",
    "EmulatorState",
    "Fault",
    "LoggedRequest",
]


class Emulator:
    """The emulator served by uvicorn in a background thread, on ``host`` and a free port.

    Keyword arguments other than ``host``, ``port`` and ``log_level`` configure the
    :class:`EmulatorState` (``api_key``, ``max_files``, ``max_total_bytes``,
    ``max_file_bytes``, ``extract_delay``, ``max_concurrency``, ``rpm``, ``rate_window``,
    ``storage_dir``, ``extract_images``, ``page_size``, ``clock``, ``wall``, ``date_offset``).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 **state_options: Unpack[StateOptions]) -> None:
        self.state = EmulatorState(**state_options)
        self.host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the emulator is not running")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (no path)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL a client uses: ``http://host:port/v1``."""
        return f"{self.url}/v1"

    def start(self) -> Emulator:
        import uvicorn

        from ._app import create_app

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(2048)
        sock.set_inheritable(True)
        self._sock = sock
        config = uvicorn.Config(
            create_app(self.state),
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            date_header=False,  # the app sends the emulated one
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="kimi-emulator",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the emulator failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.state.closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = None
        self.state.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- conveniences over the state ------------------------------------------------------

    def fail_next(self, kind: str, times: int = 1, *, endpoint: str = "upload",
                  **params: Unpack[FaultOptions]) -> Fault:
        """Answer the next ``times`` requests to ``endpoint`` with fault ``kind``."""
        return self.state.add_fault(kind, times=times, endpoint=endpoint, **params)

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received, in order."""
        return self.state.requests

    def uploads(self) -> list[LoggedRequest]:
        """The upload requests received, in order."""
        return [r for r in self.state.requests if r.method == "POST"]

    def filenames(self) -> list[str]:
        return [f.filename for f in self.state.listing()]

    def seed(self, filename: str, size: int, *, created_at: int | None = None,
             purpose: str = "file-extract", status: str = "ok") -> StoredFile:
        return self.state.seed_file(filename, size, created_at=created_at, purpose=purpose,
                                    status=status)

