"""Reuse: each document is uploaded at most once per account, its text fetched at most once;
verified against the listing, keyed by content and purpose, shared by library and CLI."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._cache import CacheEntry, ReuseCache, pick
from kimi_files._models import FileObject
from kimi_files.cli import main, upload_main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, Api, write

ROOT = Path(__file__).resolve().parent.parent


def _posts(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.method == "POST")


def _contents(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.path.endswith("/content"))


def test_upload_reuses_the_same_content_and_says_so(emulator: Emulator, api: Api,
                                                    tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "the same words\n")
    b = write(tmp_path / "elsewhere" / "b.txt", "the same words\n")
    first = api.upload(a)
    again = api.upload(b)  # other path, other name, same content
    assert not first.reused and again.reused and again.id == first.id
    assert again.filename == "a.txt" and again.attempts == 0 and _posts(emulator) == 1
    fresh = api.upload(b, reuse=False)
    assert not fresh.reused and fresh.id != first.id and _posts(emulator) == 2


def test_a_file_deleted_on_the_server_is_uploaded_again_never_returned_dead(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "deleted later\n")
    first = client.upload(p)
    emulator.state.delete(first.id)  # gone from the account, still in the cache
    again = client.upload(p)
    assert not again.reused and again.id != first.id
    assert [f.id for f in client.list()] == [again.id]


def test_purpose_is_part_of_the_key(emulator: Emulator, client: kf.KimiFiles) -> None:
    png = ROOT / "examples" / "images" / "chart.png"
    emulator.state.extract_images = True  # the older service: images under file-extract
    as_document = client.upload(png, allow_any_type=True)
    as_image = client.upload(png, purpose="image")
    assert not as_image.reused and as_image.id != as_document.id
    assert as_image.purpose == "image"
    assert client.upload(png, purpose="image").id == as_image.id  # now reused


def test_extract_twice_costs_no_request_the_second_time(emulator: Emulator, api: Api,
                                                       tmp_path: Path) -> None:
    p = write(tmp_path / "doc.txt", "extracted once, ever\n")
    assert api.extract(p) == "extracted once, ever\n"
    before = len(emulator.requests)
    assert api.extract(p) == "extracted once, ever\n"
    assert len(emulator.requests) == before  # no list, no upload, no content call
    assert _contents(emulator) == 1


def test_the_batch_and_the_library_share_the_cache(emulator: Emulator, client: kf.KimiFiles,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lib = client.upload(write(tmp_path / "lib" / "report.txt", "quarterly numbers\n"))
    write(tmp_path / "in" / "copy-of-report.txt", "quarterly numbers\n")
    write(tmp_path / "in" / "new.txt", "something new\n")
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    by_name = {Path(r.path).name: r for r in report.results}
    reused = by_name["copy-of-report.txt"]
    assert reused.status == "reused" and reused.file_id == lib.id
    assert "stored as 'report.txt'" in reused.note
    assert by_name["new.txt"].status == "uploaded"
    # and the other way round: what the batch uploaded, the library reuses
    again = client.upload(tmp_path / "in" / "new.txt")
    assert again.reused and again.id == by_name["new.txt"].file_id
    assert _posts(emulator) == 2


def test_the_cli_reuses_what_the_library_uploaded_and_no_reuse_sends_anyway(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    p = write(tmp_path / "in" / "a.txt", "shared between the library and the CLI\n")
    kf.upload(p)
    assert upload_main(["--no-state", "--no-progress", str(tmp_path / "in")]) == 0
    out = capsys.readouterr().out
    assert "reused" in out and _posts(emulator) == 1
    assert upload_main(["--no-state", "--no-progress", "--no-reuse", str(tmp_path / "in")]) == 0
    assert _posts(emulator) == 2


def test_pick_verifies_size_purpose_and_presence() -> None:
    entry = CacheEntry("h", "file-extract", "f1", "a.txt", 10)
    listed = FileObject(id="f1", bytes=10, purpose="file-extract", filename="a.txt")
    assert pick([entry], [listed], size=10, purpose="file-extract") == (entry, listed)
    assert pick([entry], [], size=10, purpose="file-extract") is None  # deleted
    assert pick([entry], [listed], size=11, purpose="file-extract") is None
    assert pick([entry], [listed], size=10, purpose="image") is None
    failed = FileObject(id="f1", bytes=10, purpose="file-extract", status="error")
    assert pick([entry], [failed], size=10, purpose="file-extract") is None


def _fill(path: str, start: int) -> None:
    with ReuseCache(path) as cache:
        for i in range(start, start + 150):
            cache.remember(f"{i:064x}", "file-extract", f"file-{i}", f"{i}.txt", i)
            if i % 10 == 0:
                cache.remember_text(f"{i:064x}", f"file-{i}", f"text {i}")


def test_two_processes_fill_the_cache_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite3")
    ReuseCache(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill, args=(path, start)) for start in (0, 150)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with ReuseCache(path) as cache:
        assert cache.counts() == (300, 30)


def test_a_corrupt_cache_is_a_clear_error(emulator: Emulator, tmp_path: Path) -> None:
    bad = tmp_path / "cache.sqlite3"
    bad.write_bytes(b"this is not a database at all" * 100)
    p = write(tmp_path / "a.txt", "x")
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, cache=bad) as c, \
            pytest.raises(kf.CacheError) as info:
        c.upload(p)
    text = str(info.value)
    assert str(bad) in text and "kimi-files cache clear" in text and "--no-reuse" in text
    assert info.value.path == str(bad)
    assert isinstance(info.value, kf.ConfigurationError)
    assert emulator.uploads() == []  # nothing sent


def test_another_programs_database_is_not_taken_for_a_cache(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()
    with pytest.raises(kf.CacheError, match="not a kimi-files reuse cache"):
        ReuseCache(other)


def test_kimi_files_cache_show_and_clear(emulator: Emulator, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    up = kf.upload(write(tmp_path / "a.txt", "cached\n"))
    capsys.readouterr()
    assert main(["cache", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [f["file_id"] for f in shown["files"]] == [up.id]
    assert main(["cache", "clear"]) == 0
    assert "forgot 1 file(s)" in capsys.readouterr().err
    assert main(["cache", "show"]) == 0
    assert "0 file(s)" in capsys.readouterr().err
    again = kf.upload(tmp_path / "a.txt")
    assert not again.reused  # the cache was emptied: uploaded again
    assert os.path.exists(shown["path"])


def test_no_reuse_and_cache_clear_are_ways_out_of_a_broken_cache(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    p = write(tmp_path / "in" / "a.txt", "through a broken cache\n")
    with kf.KimiFiles() as c:
        where = c.state_path().with_name(c.state_path().name.replace(".sqlite3",
                                                                     ".cache.sqlite3"))
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(b"garbage" * 500)
    assert upload_main(["--no-state", str(tmp_path / "in")]) == 2  # the cache is broken
    assert "kimi-files cache clear" in capsys.readouterr().err
    assert kf.upload(p, reuse=False).reused is False  # the library's way out works
    assert upload_main(["--no-state", "--no-reuse", str(tmp_path / "in")]) == 0
    # clear removes only a cache it can prove its own: garbage is not (test_trust3b has a
    # damaged cache of ours removed); it names the file, for removal by hand
    assert main(["cache", "clear"]) == 2
    assert f"{where} is not provably a kimi-files reuse cache" in capsys.readouterr().err
    assert where.exists()
    where.unlink()
    assert upload_main(["--no-state", str(tmp_path / "in")]) == 0


def test_an_adopted_copy_never_enters_the_reuse_cache(emulator: Emulator, client: kf.KimiFiles,
                                                      tmp_path: Path,
                                                      no_wait: list[float]) -> None:
    write(tmp_path / "in" / "a.txt", "adopted, not proven\n")
    emulator.fail_next("store_then_drop")
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert report.results[0].note.startswith("adopted")
    cache = client.reuse_cache()
    assert cache is not None and cache.entries() == []


def test_uploads_at_once_never_report_each_others_files(emulator: Emulator, api: Api,
                                                        tmp_path: Path,
                                                        no_wait: list[float]) -> None:
    """Look-alikes uploaded at once on one client, some answers lost: whatever an upload
    suspects, a file another upload got in its own answer is never reported."""
    import concurrent.futures as cf

    paths = [write(tmp_path / f"d{i}" / "report.txt", f"report {i:02d}\n") for i in range(12)]
    emulator.fail_next("drop", times=4)
    emulator.fail_next("store_then_drop", times=2)
    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda p: api.upload(p, reuse=False), paths))
    mine = {r.id for r in results}
    for r in results:
        assert not {f.id for f in r.suspects} & (mine - {r.id}), r
    for r, p in zip(results, paths, strict=True):  # never the wrong file
        assert api.content(r.id).text == p.read_text()


def test_a_cached_size_whose_file_is_gone_costs_no_hash_up_front(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._scan as scan

    big = write(tmp_path / "in" / "big.txt", "x y z\n" * 50_000)  # over one piece
    first = client.upload(big)
    emulator.state.delete(first.id)  # still in the cache, gone from the account
    hashed: list[Path] = []
    real = scan.sha256_of
    monkeypatch.setattr(scan, "sha256_of", lambda p: hashed.append(Path(p)) or real(p))
    report = kf.ingest([tmp_path / "in"], client=client, state=False)
    assert [r.status for r in report.results] == ["uploaded"]
    assert hashed == []  # nothing to reuse, so nothing hashed before sending


@pytest.mark.parametrize("action", [["show"], ["show", "--json"], ["clear"]])
def test_kimi_files_cache_show_makes_no_cache(emulator: Emulator, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             action: list[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KIMI_FILES_STATE_DIR", str(tmp_path / "state"))
    assert main(["cache", *action]) == 0
    out, err = capsys.readouterr()
    assert "no reuse cache yet (0 file(s)" in err or '"files": []' in out
    made = list((tmp_path / "state").glob("*cache*")) if (tmp_path / "state").exists() else []
    assert made == []
