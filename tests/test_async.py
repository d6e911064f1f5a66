"""AsyncKimiFiles: the same surface as KimiFiles, the event loop never blocked by local work,
constant memory, and cancellation the asyncio way. (The reliability tests run against both
clients from one body, through the ``api`` fixture; these are what only async has.)"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files._cache import ReuseCache
from kimi_files._state import StateStore
from kimi_files.emulator import Emulator

from .conftest import API_KEY, emulator_process, write


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_every_method_of_the_sync_client_is_there_and_awaited(emulator: Emulator,
                                                              tmp_path: Path) -> None:
    sync_methods = {n for n in dir(kf.KimiFiles) if not n.startswith("_")} - {"close"}
    async_methods = {n for n in dir(kf.AsyncKimiFiles) if not n.startswith("_")} - {"aclose"}
    assert sync_methods == async_methods
    p = write(tmp_path / "a.txt", "hello async\n")

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            up = await c.upload(p)
            assert (await c.retrieve(up.id)).filename == "a.txt"
            assert [f.id for f in await c.list()] == [up.id]
            assert (await c.content(up.id)).text == "hello async\n"
            assert await c.extract(file_id=up.id) == "hello async\n"
            check = await c.preflight(p)
            assert check.file.size == 12 and check.plan.deletions == ()
            assert (await c.delete(up.id)).deleted
            report = await c.ingest([tmp_path], state=tmp_path / "s.db")
            assert report.ok and report.count("uploaded") == 1

    _run(main())
    assert emulator.filenames() == ["a.txt"]


def test_module_level_async_twins(emulator: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path / "b.txt", "twins\n")

    async def main() -> tuple[kf.UploadedFile, str, kf.BatchReport]:
        up = await kf.aupload(p, api_key=API_KEY, base_url=emulator.base_url)
        text = await kf.aextract(file_id=up.id, api_key=API_KEY, base_url=emulator.base_url)
        report = await kf.aingest([p], api_key=API_KEY, base_url=emulator.base_url,
                                  state=tmp_path / "s.db")
        return up, text, report

    up, text, report = _run(main())
    assert text == "twins\n" and up.filename == "b.txt"
    # the batch finds the content the library uploaded: reused, not sent again
    assert report.ok and report.count("reused") == 1 and emulator.filenames() == ["b.txt"]


def test_blocking_local_work_never_runs_on_the_event_loop(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._scan as scan
    import kimi_files._uploader as uploader

    threads: dict[str, set[int]] = {}

    def recorded(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.get_ident())
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(uploader, "inspect_file", recorded("inspect", uploader.inspect_file))
    monkeypatch.setattr(scan, "inspect_file_head", recorded("scan-inspect", scan.inspect_file_head))
    monkeypatch.setattr(scan, "sha256_of", recorded("hash", scan.sha256_of))
    monkeypatch.setattr(StateStore, "begin", recorded("begin", StateStore.begin))
    monkeypatch.setattr(StateStore, "done", recorded("done", StateStore.done))
    monkeypatch.setattr(ReuseCache, "remember", recorded("cache", ReuseCache.remember))
    same = b"".join(b"line %06d, the same in every file\n" % i for i in range(3000))
    for i in range(3):
        write(tmp_path / "in" / f"f{i}.txt", same)  # equal sizes and starts: hashed up front
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            await c.upload(tmp_path / "in" / "f0.txt")
            await c.ingest([tmp_path / "in"], state=tmp_path / "s.db", reuse=False)

    _run(main())
    assert set(threads) == {"inspect", "scan-inspect", "hash", "begin", "done", "cache"}
    for name, idents in threads.items():
        assert loop_thread[0] not in idents, f"{name} ran on the event loop"


def test_an_async_upload_streams_in_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    line = b"constant memory under asyncio as well: chunks, never the whole file.\n"
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        block = line * (1024 * 1024 // len(line))
        for _ in range(48):
            fh.write(block)
    small = write(tmp_path / "warm-up.txt", "imports the async stack before anything is traced\n")
    # the emulator in a process of its own: what is traced is the client's memory alone
    with emulator_process() as base_url:
        _run(kf.aupload(small, api_key=API_KEY, base_url=base_url, progress=False))
        tracemalloc.start()
        try:
            up = _run(kf.aupload(big, api_key=API_KEY, base_url=base_url, progress=False))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * 1024 * 1024 < up.bytes / 5, f"peak {peak:,} bytes"


def test_cancelling_aingest_leaves_the_state_consistent_and_a_rerun_completes(
        emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = [write(folder / f"f{i:02d}.txt", f"document {i}\n") for i in range(12)]
    state = tmp_path / "s.db"
    emulator.state.extract_delay = 0.2

    async def cancel_midway() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            task = asyncio.ensure_future(c.ingest([folder], state=state, concurrency=3))
            while len(emulator.uploads()) < 4:  # some stored, some in flight
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    _run(cancel_midway())
    # a cancelled request may still be finishing on the server: let it land
    for _ in range(500):
        if not emulator.state.in_flight:
            break
        threading.Event().wait(0.02)
    emulator.state.extract_delay = 0.0
    on_server = {f.id for f in emulator.state.listing()}
    with StateStore(state) as store:
        assert store.integrity_ok()
        records = store.records()
    recorded = {r.file_id for r in records if r.status == "uploaded"}
    assert recorded <= on_server
    # every file the server holds is recorded, or covered by an intent the next run settles
    pending = [r for r in records if r.status == "pending"]
    assert len(on_server - recorded) <= len(pending)
    assert len(on_server) < len(paths)  # the cancel really stopped the batch

    report = _run(kf.aingest([folder], api_key=API_KEY, base_url=emulator.base_url,
                             state=state))
    assert report.ok, report.summary()
    assert Counter(emulator.filenames()) == Counter(p.name for p in paths)


def test_cancelling_aupload_raises_cancelled_and_leaves_nothing_half_done(
        emulator: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path / "slow.txt", "slow\n")
    emulator.state.extract_delay = 1.0

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            task = asyncio.ensure_future(c.upload(p))
            while not emulator.uploads():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await c.list()).data == ()  # still extracting: nothing stored yet

    _run(main())
    for _ in range(500):  # the server finishes the request it was given: let it land
        if not emulator.state.in_flight:
            break
        threading.Event().wait(0.02)
