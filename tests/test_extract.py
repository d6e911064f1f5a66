"""extract_many / aextract_many: a rolling upload -> text -> delete pipeline within the quota.

Every test talks to the emulator; the decisions themselves are tested in test_extract_rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kimi_files import AsyncKimiFiles, KimiFiles
from kimi_files._config import Limits
from kimi_files._extract_models import extract_state_path
from kimi_files._extraction import ExtractResult, ExtractSummary
from kimi_files._state import StateStore, default_state_path
from kimi_files.emulator import Emulator
from kimi_files.errors import (
    LocalEmptyFileError,
    LocalFileError,
    NoExtractableTextError,
    NotEnoughFileSlotsError,
    TokenQuotaExceededError,
)

from .conftest import API_KEY, write


def _corpus(folder: Path, n: int) -> list[Path]:
    return [write(folder / f"d{i % 3}" / f"doc{i:03d}.txt", f"document {i}\n" * (i + 1))
            for i in range(n)]


def _run(kind: str, emu: Emulator, paths: list[Any], *, max_files: int = 1000,
         take: int | None = None, **options: Any) -> tuple[list[ExtractResult], ExtractSummary]:
    """One run with the client of ``kind``; all its results (or the first ``take``, then
    the iterator is closed) and its summary."""
    emu.state.max_files = max_files
    limits = Limits(max_files=max_files)
    options.setdefault("progress", False)
    if kind == "sync":
        with KimiFiles(api_key=API_KEY, base_url=emu.base_url, limits=limits) as c:
            it = c.extract_many(paths, **options)
            out = []
            for r in it:
                out.append(r)
                if take is not None and len(out) == take:
                    it.close()
                    break
            assert it.summary is not None
            return out, it.summary

    async def go() -> tuple[list[ExtractResult], ExtractSummary]:
        async with AsyncKimiFiles(api_key=API_KEY, base_url=emu.base_url, limits=limits) as c:
            ait = c.extract_many(paths, **options)
            got = []
            async for r in ait:
                got.append(r)
                if take is not None and len(got) == take:
                    await ait.aclose()
                    break
            assert ait.summary is not None
            return got, ait.summary

    return asyncio.run(go())


@pytest.fixture
def peak(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The emulator's stored-file count, taken at every upload it stores."""
    counts: list[int] = []
    store = emulator.state.store

    def counting(*args: Any, **kwargs: Any) -> Any:
        stored = store(*args, **kwargs)
        counts.append(len(emulator.state.files))
        return stored

    monkeypatch.setattr(emulator.state, "store", counting)
    yield counts


kinds = pytest.mark.parametrize("kind", ["sync", "async"])


@kinds
def test_window_never_exceeded(kind: str, emulator: Emulator, tmp_path: Path,
                               peak: list[int]) -> None:
    """40 documents through an account of 10 files: every one ok, never more than the free
    slots on the server (nor the --window asked for), none refused for the count, 0 left."""
    docs = _corpus(tmp_path / "in", 40)
    emulator.state.extract_delay = 0.01
    results, summary = _run(kind, emulator, [tmp_path / "in"], max_files=10, concurrency=8)
    assert sorted(r.path for r in results) == sorted(str(p) for p in docs)
    assert {r.status for r in results} == {"ok"} and max(peak) <= 10
    assert not [r for r in emulator.requests if r.method == "POST" and r.status != 200]
    assert emulator.filenames() == [] and summary.left == [] and summary.window == 10
    for r in results:
        assert r.text == Path(r.path).read_text() and r.deleted and r.origin == "stored"
    # a window smaller than the concurrency holds too
    peak.clear()
    emulator.state.requests.clear()
    results, summary = _run(kind, emulator, [tmp_path / "in"], max_files=10, concurrency=8,
                            window=3, reuse=False)
    assert {r.status for r in results} == {"ok"} and len(results) == 40
    assert max(peak) <= 3 and summary.window == 3 and emulator.filenames() == []


@kinds
def test_no_free_slot_is_a_clear_error_and_nothing_is_sent(kind: str, emulator: Emulator,
                                                           tmp_path: Path) -> None:
    _corpus(tmp_path / "in", 3)
    for i in range(5):
        emulator.seed(f"old{i}.txt", 10)
    with pytest.raises(NotEnoughFileSlotsError) as caught:
        _run(kind, emulator, [tmp_path / "in"], max_files=5)
    message = str(caught.value)
    assert "holds 5 of 5 files" in message and "nothing was sent or deleted" in message
    assert "3 document(s)" in message
    assert {r.method for r in emulator.requests} == {"GET"}  # the one listing
    assert len(emulator.filenames()) == 5


@kinds
def test_every_document_gets_exactly_one_result_of_each_status(
        kind: str, emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "a_fail.txt", "the content call of this one is refused\n")
    ok = write(folder / "b_ok.txt", "plain text\n")
    write(folder / "c_notext.txt", "a" * 6000)  # the service finds no text in it
    write(folder / "d_empty.txt", "")
    emulator.state.add_fault("token_quota", endpoint="content")  # never retried
    results, summary = _run(kind, emulator, [folder, tmp_path / "missing.txt"], concurrency=1)
    by_name = {Path(r.path).name: r for r in results}
    assert len(results) == len(by_name) == 5
    assert by_name["b_ok.txt"].status == "ok" and by_name["b_ok.txt"].text == ok.read_text()
    fail, no_text = by_name["a_fail.txt"], by_name["c_notext.txt"]
    assert fail.status == "failed" and isinstance(fail.error, TokenQuotaExceededError)
    assert fail.file_id is not None and fail.deleted  # stored, then deleted all the same
    assert no_text.status == "no_text" and isinstance(no_text.error, NoExtractableTextError)
    assert "text extract error" in str(no_text.error) and no_text.file_id is None
    empty = by_name["d_empty.txt"]
    assert empty.status == "refused" and isinstance(empty.error, LocalEmptyFileError)
    missing = by_name["missing.txt"]
    assert missing.status == "refused" and isinstance(missing.error, LocalFileError)
    assert "no such file or folder" in str(missing.error)
    assert summary.counts == {"ok": 1, "no_text": 1, "refused": 2, "failed": 1}
    assert emulator.filenames() == []
    line = by_name["b_ok.txt"].to_json()
    assert line["sha256"] and line["bytes"] == ok.stat().st_size and "error" not in line
    assert fail.to_json()["error"]["type"] == "TokenQuotaExceededError"
    # nothing is left in the run's state: no leftover for the next run to look for
    with StateStore(extract_state_path(default_state_path(emulator.base_url, API_KEY))) as s:
        assert s.records() == [] and s.attempts() == []


@kinds
def test_a_look_alike_on_the_account_is_never_deleted(kind: str, emulator: Emulator,
                                                      tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "report.txt", "this year's report\n")
    other = emulator.seed("report.txt", doc.stat().st_size, created_at=int(time.time()) - 60)
    results, summary = _run(kind, emulator, [doc])
    assert [r.status for r in results] == ["ok"] and results[0].file_id != other.id
    assert [f.id for f in emulator.state.listing()] == [other.id]
    assert summary.left == []


@kinds
def test_a_file_the_account_held_is_used_and_never_deleted(kind: str, emulator: Emulator,
                                                           tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "kept.txt", "uploaded before, by kimi-upload\n")
    with KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        held = c.upload(doc, progress=False)
    emulator.state.requests.clear()
    results, _ = _run(kind, emulator, [doc])
    assert [(r.status, r.origin, r.file_id, r.deleted) for r in results] == [
        ("ok", "reused", held.id, False)]
    assert [f.id for f in emulator.state.listing()] == [held.id]
    assert not [r for r in emulator.requests if r.method in ("POST", "DELETE")]


@kinds
def test_a_rerun_reads_texts_from_the_cache_and_skips_what_was_written(
        kind: str, emulator: Emulator, tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "in", 6)
    first, _ = _run(kind, emulator, [tmp_path / "in"])
    emulator.state.requests.clear()
    again, summary = _run(kind, emulator, [tmp_path / "in"])
    assert {r.path: r.text for r in again} == {r.path: r.text for r in first}
    assert {r.origin for r in again} == {"cached"} and summary.uploads == 0
    assert not [r for r in emulator.requests if r.method == "POST" or "content" in r.path]
    # documents already written are skipped: not one request
    emulator.state.requests.clear()
    skipped, _ = _run(kind, emulator, [tmp_path / "in"], skip={str(p) for p in docs})
    assert skipped == [] and emulator.requests == []


@kinds
def test_a_500_on_the_content_call_is_retried(kind: str, emulator: Emulator, tmp_path: Path,
                                              no_wait: list[float]) -> None:
    doc = write(tmp_path / "in" / "flaky.txt", "extracted on the second try\n")
    emulator.state.add_fault("extraction_failed", endpoint="content")
    results, _ = _run(kind, emulator, [doc])
    assert [(r.status, r.text) for r in results] == [("ok", doc.read_text())]
    contents = [r.status for r in emulator.requests if r.path.endswith("/content")]
    assert contents == [500, 200] and no_wait  # retried after a (disabled) wait
    assert emulator.filenames() == []


@kinds
def test_closing_early_deletes_what_the_run_stored(kind: str, emulator: Emulator,
                                                   tmp_path: Path) -> None:
    _corpus(tmp_path / "in", 30)
    emulator.state.extract_delay = 0.02
    results, summary = _run(kind, emulator, [tmp_path / "in"], take=3, concurrency=4)
    assert len(results) == 3
    assert emulator.filenames() == [] and summary.left == []
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert 3 <= len(posts) < 30  # stopped: most documents never started
    with StateStore(extract_state_path(default_state_path(emulator.base_url, API_KEY))) as s:
        assert s.records() == []


@kinds
def test_keep_keeps_the_files_and_a_later_upload_sends_nothing(kind: str, emulator: Emulator,
                                                               tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "in", 4)
    results, _ = _run(kind, emulator, [tmp_path / "in"], keep=True)
    assert {r.status for r in results} == {"ok"} and not any(r.deleted for r in results)
    assert sorted(f.id for f in emulator.state.listing()) == sorted(
        r.file_id for r in results if r.file_id)
    emulator.state.requests.clear()
    with KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        report = c.ingest([tmp_path / "in"], progress=False)
    assert report.count("reused") == len(docs)
    assert not [r for r in emulator.requests if r.method == "POST"]


@kinds
def test_keep_beyond_the_free_slots_refuses_the_rest(kind: str, emulator: Emulator,
                                                     tmp_path: Path) -> None:
    _corpus(tmp_path / "in", 5)
    results, _ = _run(kind, emulator, [tmp_path / "in"], keep=True, max_files=3,
                      concurrency=1)
    statuses = sorted(r.status for r in results)
    assert statuses == ["ok"] * 3 + ["refused"] * 2
    refused = [r for r in results if r.status == "refused"]
    assert all(isinstance(r.error, NotEnoughFileSlotsError) for r in refused)
    assert "are kept (keep)" in str(refused[0].error)
    assert len(emulator.filenames()) == 3


def _killed_run_state(emulator: Emulator, doc: Path) -> Any:
    """The state a run killed right after sending ``doc`` leaves: its intent, and the copy
    the server stored (its answer never read)."""
    path = extract_state_path(default_state_path(emulator.base_url, API_KEY))
    since = int(time.time()) - 1
    with StateStore(path) as store:
        st = doc.stat()
        store.begin(doc, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="", filename=doc.name,
                    server_time=since)
    return emulator.state.store(doc.name, _copy(doc, emulator), st.st_size, "file-extract",
                                "text/plain")


def _copy(doc: Path, emulator: Emulator) -> Path:
    tmp = emulator.state.storage / f".incoming-{doc.name}"
    tmp.write_bytes(doc.read_bytes())
    return tmp


@kinds
def test_what_a_killed_run_stored_is_found_and_deleted(kind: str, emulator: Emulator,
                                                       tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "interrupted.txt", "sent by a run killed before its answer\n")
    landed = _killed_run_state(emulator, doc)
    results, summary = _run(kind, emulator, [doc], skip={str(doc)})  # written already
    assert results == [] and summary.cleaned == 1 and summary.suspects == []
    assert emulator.filenames() == []
    assert [r.path for r in emulator.requests if r.method == "DELETE"] == [
        f"/v1/files/{landed.id}"]


@kinds
def test_a_killed_runs_copy_beside_a_look_alike_is_reported_never_deleted(
        kind: str, emulator: Emulator, tmp_path: Path, no_wait: list[float]) -> None:
    doc = write(tmp_path / "in" / "interrupted.txt", "sent by a run killed before its answer\n")
    other = emulator.seed(doc.name, doc.stat().st_size, created_at=int(time.time()) - 60)
    landed = _killed_run_state(emulator, doc)
    _, summary = _run(kind, emulator, [doc], skip={str(doc)})
    assert summary.cleaned == 0
    assert sorted(f.id for f in summary.suspects) == sorted([other.id, landed.id])
    assert sorted(f.id for f in emulator.state.listing()) == sorted([other.id, landed.id])
    assert not [r for r in emulator.requests if r.method == "DELETE"]


@kinds
def test_a_deletion_that_fails_is_tried_again_at_the_end(kind: str, emulator: Emulator,
                                                         tmp_path: Path) -> None:
    _corpus(tmp_path / "in", 4)
    emulator.state.add_fault("account_suspended", endpoint="delete")  # never retried
    results, summary = _run(kind, emulator, [tmp_path / "in"], window=2, concurrency=2)
    assert {r.status for r in results} == {"ok"} and len(results) == 4
    assert sum(not r.deleted for r in results) == 1
    assert emulator.filenames() == [] and summary.left == []


def test_extract_stays_the_one_document_function() -> None:
    """The pipeline's module is not named ``extract``: importing it never replaces
    ``kimi_files.extract`` (one document's text) with a module."""
    import inspect

    import kimi_files

    assert kimi_files.extract_many is not None and kimi_files.aextract_many is not None
    import kimi_files._extraction

    assert inspect.isfunction(kimi_files.extract) and inspect.isfunction(kimi_files.aextract)


@kinds
def test_a_killed_runs_copy_that_lands_during_the_run_is_found_at_its_end(
        kind: str, emulator: Emulator, tmp_path: Path, no_wait: list[float]) -> None:
    """A request the killed run had in flight lands after this run listed the account: the
    run's last look (after waiting for such a copy, here switched off) finds and deletes it."""
    import threading

    doc = write(tmp_path / "late" / "interrupted.txt", "in flight when the run was killed\n")
    path = extract_state_path(default_state_path(emulator.base_url, API_KEY))
    with StateStore(path) as store:
        st = doc.stat()
        store.begin(doc, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="",
                    filename=doc.name, server_time=int(time.time()) - 1)
    _corpus(tmp_path / "in", 8)
    emulator.state.extract_delay = 0.05
    lands = threading.Timer(0.15, lambda: emulator.state.store(
        doc.name, _copy(doc, emulator), doc.stat().st_size, "file-extract", "text/plain"))
    lands.start()
    try:
        results, summary = _run(kind, emulator, [tmp_path / "in"], concurrency=1)
    finally:
        lands.join()
    assert len(results) == 8 and summary.cleaned == 1 and summary.suspects == []
    assert emulator.filenames() == []
    assert no_wait  # it waited (switched off here) for such copies to land
    with StateStore(path) as store:
        assert store.attempts() == [] and store.records() == []
