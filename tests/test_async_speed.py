"""Issue #20, "async at sync speed", tested by behaviour, never by time. The async upload body:
a file larger than one piece is read on one worker thread a bounded number of pieces ahead of
the sending, and nothing of that reading outlives the request (not the thread, not the file).
The cold path: a plain-http base URL builds no TLS context, and one small upload imports
nothing it does not use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._uploader import PIECE_BYTES, READ_AHEAD, FileBody, MultipartBody, ReadAhead
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write


def _text(n_bytes: int) -> bytes:
    """Varied lines (the emulator refuses repetitive text), exactly ``n_bytes`` long."""
    return b"".join(b"line %08d of the read-ahead\n" % i
                    for i in range(n_bytes // 28 + 1))[:n_bytes]


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kimi-read"]


async def _until(condition: object, what: str) -> None:
    """Wait (bounded, generously) until ``condition()`` holds: no race on real time."""
    for _ in range(5000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def test_the_read_ahead_never_holds_more_than_its_depth_and_does_fill_it() -> None:
    total = 4 * READ_AHEAD + 2
    made = 0
    finished = 0  # items the consumer is done with (it asked for the next one)
    held: list[int] = []  # items made and not finished, seen each time one is made

    def pieces() -> Iterator[bytes]:
        nonlocal made
        for i in range(total):
            made += 1
            held.append(made - finished)
            yield b"%d" % i

    async def consume() -> list[bytes]:
        nonlocal finished
        got: list[bytes] = []
        async for item in ReadAhead(pieces()):
            got.append(item)
            # the worker reads ahead while this item is held, up to the depth, then waits
            await _until(lambda: made == min(total, len(got) - 1 + READ_AHEAD),
                         f"the reader filled its {READ_AHEAD} places")
            await asyncio.sleep(0.005)  # and goes no further, however long we take
            assert made == min(total, len(got) - 1 + READ_AHEAD)
            finished = len(got)
        return got

    got = asyncio.run(consume())
    assert got == [b"%d" % i for i in range(total)]
    assert max(held) == READ_AHEAD  # reached, never passed
    assert not _reader_threads()


def test_a_larger_file_goes_through_the_read_ahead_with_the_same_bytes_checks_and_rewinds(
        tmp_path: Path) -> None:
    data = _text(3 * PIECE_BYTES + 4321)
    p = write(tmp_path / "big.txt", data)
    reads: list[int] = []
    rewinds: list[int] = []

    async def twice(multipart: MultipartBody) -> list[list[bytes]]:
        out = []
        for _ in range(2):  # a retry reads the file again from its start
            it = multipart.__aiter__()
            assert isinstance(it, ReadAhead)
            out.append([piece async for piece in it])
        return out

    with p.open("rb") as fh:
        body = FileBody(fh, len(data), "big.txt", on_read=lambda c: reads.append(len(c)),
                        on_rewind=lambda: rewinds.append(1))
        multipart = MultipartBody(body, filename="big.txt", purpose="file-extract",
                                  content_type="text/plain")
        first, second = asyncio.run(twice(multipart))
        assert first == second == list(multipart)
    assert reads == [PIECE_BYTES, PIECE_BYTES, PIECE_BYTES, 4321] * 3
    assert rewinds == [1, 1]

    with p.open("rb") as fh:  # the file shrank since it was checked: raised to the consumer
        shrunk = MultipartBody(FileBody(fh, len(data) + 10, "big.txt"), filename="big.txt",
                               purpose="file-extract", content_type="text/plain")

        async def drain() -> None:
            async for _ in shrunk:
                pass

        with pytest.raises(kf.LocalFileError, match="big.txt: the file shrank during the upload"):
            asyncio.run(drain())
    assert not _reader_threads()


def _open_paths() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_cancelling_an_upload_mid_send_stops_the_reader_and_closes_the_file(
        emulator: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path / "big.txt", _text(24 * PIECE_BYTES))
    # the server takes the request and reads none of it: the send stalls with the body half out
    emulator.fail_next("hang", endpoint="upload", delay=2)

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            task = asyncio.ensure_future(c.upload(p, progress=False))
            await _until(lambda: _reader_threads() and os.path.realpath(p) in _open_paths(),
                         "the upload is reading ahead")
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not _reader_threads()
            assert os.path.realpath(p) not in _open_paths()

    asyncio.run(main())


# --- the cold path: no TLS context for a plain-http base URL -------------------------------------


def _record_ssl_contexts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ssl.SSLContext made from here on (httpx's and httpcore's both go through it)."""
    import ssl

    made: list[object] = []
    real = ssl.SSLContext.__new__

    def new(cls: type[ssl.SSLContext], *args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(cls)
        return real(cls, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "__new__", new)
    return made


def test_a_plain_http_base_url_builds_no_tls_context_and_https_still_verifies(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    made = _record_ssl_contexts(monkeypatch)
    p = write(tmp_path / "one.txt", "one small file\n")
    up = kf.upload(p, api_key=API_KEY, base_url=emulator.base_url, progress=False)
    assert up.bytes == p.stat().st_size

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            assert (await c.list()).data[0].id == up.id

    asyncio.run(main())
    assert made == []

    sync, aclient = kf.KimiFiles(api_key="k"), kf.AsyncKimiFiles(api_key="k")
    try:
        for client in (sync, aclient):
            context = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
            assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    finally:
        sync.close()
        asyncio.run(aclient.aclose())
    assert made  # the recorder sees what is built


def test_one_small_upload_imports_nothing_it_does_not_use(emulator: Emulator,
                                                          tmp_path: Path) -> None:
    import subprocess
    import sys

    p = write(tmp_path / "one.txt", "one small file, plain text\n")
    unused = ("queue", "asyncio", "concurrent.futures.thread", "tqdm", "magic",
              "kimi_files._batch", "kimi_files._scan", "kimi_files._planner", "kimi_files._chat",
              "kimi_files.cli", "kimi_files.emulator")
    code = ("import sys, kimi_files; "
            f"kimi_files.upload({str(p)!r}, api_key={API_KEY!r}, base_url={emulator.base_url!r}, "
            f"progress=False); print([m for m in {unused!r} if m in sys.modules])")
    env = {**os.environ, "KIMI_FILES_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "[]"
    assert len(emulator.uploads()) == 1


def test_a_reader_left_unclosed_still_ends_its_worker() -> None:
    import gc

    go = threading.Event()

    def pieces() -> Iterator[bytes]:
        yield b"first"
        go.wait()  # the worker is in a read when the loop closes
        yield b"second"

    async def take_one(reader: ReadAhead) -> bytes:
        return await reader.__anext__()

    reader = ReadAhead(pieces())
    assert asyncio.run(take_one(reader)) == b"first"  # the loop is closed on return
    go.set()  # the read ends, and its piece has no loop to go to: the worker ends
    asyncio.run(_until(lambda: not _reader_threads(), "the worker ended"))

    dropped = ReadAhead(iter([b"x"] * (READ_AHEAD + 5)))

    async def fill(reader: ReadAhead) -> None:
        assert await reader.__anext__() == b"x"
        # every place taken and handed over: the worker now waits for room nobody frees
        await _until(lambda: reader._ready.qsize() == READ_AHEAD - 1, "the reader filled")

    asyncio.run(fill(dropped))
    assert _reader_threads()
    del dropped
    gc.collect()
    asyncio.run(_until(lambda: not _reader_threads(), "the dropped reader's worker ended"))
