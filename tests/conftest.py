from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from kimi_files import AsyncKimiFiles, KimiFiles
from kimi_files._progress import disable_progress_bars
from kimi_files._retry import waiting_disabled
from kimi_files.emulator import Emulator

API_KEY = "sk-test-0123456789abcdefSECRET"

disable_progress_bars()


# Property tests check rules, not speed: no per-example deadline (on 2 busy cores a slow
# example is load, not a failure), and the same examples on every run of CI.
settings.register_profile("kimi-files", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("kimi-files")

@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MOONSHOT_API_KEY", "MOONSHOT_BASE_URL", "KIMI_API_KEY", "KIMI_BASE_URL",
                 "KIMI_FILES_STATE_DIR", "KIMI_FILES_MAX_FILES", "KIMI_FILES_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture(scope="session")
def session_emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def emulator(session_emulator: Emulator) -> Iterator[Emulator]:
    """The shared emulator, emptied and reset for each test (once a request an earlier test
    left in flight, such as a cancelled upload the server still extracts, has landed)."""
    for _ in range(1000):
        if not session_emulator.state.in_flight:
            break
        threading.Event().wait(0.01)
    session_emulator.state.reset()
    yield session_emulator


@pytest.fixture
def client(emulator: Emulator) -> Iterator[KimiFiles]:
    with KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        yield c


@pytest.fixture
def no_wait() -> Iterator[list[float]]:
    with waiting_disabled() as waits:
        yield waits


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MOONSHOT_API_KEY", "KIMI_API_KEY")}



@pytest.fixture
def limited(emulator: Emulator) -> Iterator[Any]:
    """A factory of clients that agree with the emulator on smaller account limits."""
    from kimi_files._config import Limits

    made: list[KimiFiles] = []

    def make(*, max_files: int = 1000, max_total_bytes: int = 10 * 1024**3,
             **options: Any) -> KimiFiles:
        emulator.state.max_files = max_files
        emulator.state.max_total_bytes = max_total_bytes
        c = KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                      limits=Limits(max_files=max_files, max_total_bytes=max_total_bytes),
                      **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class Api:
    """One face over :class:`KimiFiles` and :class:`AsyncKimiFiles`, so one test body runs
    against both: each call goes to the client of its kind (the async one on an event loop
    of its own, in a thread) and returns the result."""

    def __init__(self, kind: str, **client_options: Any) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind == "sync":
            self.client: Any = KimiFiles(**client_options)
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> AsyncKimiFiles:
            return AsyncKimiFiles(**client_options)

        self.client = self.wait(make())

    def wait(self, value: Any) -> Any:
        """The value itself (sync), or the coroutine's result run on the loop (async)."""
        if self._loop is None:
            return value
        return asyncio.run_coroutine_threadsafe(value, self._loop).result(timeout=300)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: self.wait(method(*args, **kwargs))

    def close(self) -> None:
        if self._loop is None:
            self.client.close()
            return
        self.wait(self.client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, emulator: Emulator) -> Iterator[Api]:
    """The emulator's client, once as KimiFiles and once as AsyncKimiFiles."""
    face = Api(request.param, api_key=API_KEY, base_url=emulator.base_url)
    yield face
    face.close()


@contextlib.contextmanager
def emulator_process(*options: str) -> Iterator[str]:
    """An emulator in a process of its own (its base URL), for what must not count the
    server's own memory or threads (tracemalloc traces the whole process)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "kimi_files.emulator", "--port", str(port),
                             "--api-key", API_KEY, "--log-level", "warning", *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{base_url}/files", headers={"Authorization": f"Bearer {API_KEY}"})
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:  # pragma: no cover
            pytest.fail("the emulator did not start")
        yield base_url
    finally:
        proc.terminate()
        proc.wait(10)
