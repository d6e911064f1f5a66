"""From documents to a chat request: messages in the docs' format, a budget that cuts the
largest first, documents the service cannot read, sessions that clean up, prune."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._chat import cut_marker, fit_budget
from kimi_files._models import FileObject
from kimi_files._quota import select_for_pruning
from kimi_files.cli import main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, Api, write

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"


def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file())


def test_messages_follow_the_docs_in_input_order(emulator: Emulator, api: Api,
                                                 tmp_path: Path) -> None:
    a = write(tmp_path / "b-first.txt", "first document\n")
    b = write(tmp_path / "a-second.md", "# second\n")
    found = api.messages([a, b])
    assert [m["role"] for m in found] == ["system", "system"]
    docs = [json.loads(m["content"]) for m in found]  # the whole JSON text of files.content
    assert [d["content"] for d in docs] == ["first document\n", "# second\n"]
    assert [d["filename"] for d in docs] == ["b-first.txt", "a-second.md"]
    assert found.cut == {} and found.failed == {}


def test_a_rerun_over_the_corpus_makes_no_upload_and_no_content_call(
        emulator: Emulator, client: kf.KimiFiles) -> None:
    paths = _corpus()
    first = kf.messages(paths, client=client)
    assert len(first) == len(paths) and not first.failed
    before = len(emulator.requests)
    second = kf.messages(paths, client=client)
    assert list(second) == list(first)
    assert len(emulator.requests) == before  # everything came from the cache


def test_a_budget_cuts_the_largest_first_with_a_visible_marker(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    small = write(tmp_path / "small.txt", "short note\n")
    big = write(tmp_path / "big.txt", "long paragraph of words. " * 400)
    whole = kf.messages([small, big], client=client)
    total = sum(len(m["content"]) for m in whole)
    found = kf.messages([small, big], client=client, max_chars=total // 2)
    assert sum(len(m["content"]) for m in found) <= total // 2
    assert list(found.cut) == [str(big)]  # only the large one was cut
    assert json.loads(found[0]["content"]) == json.loads(whole[0]["content"])
    text = json.loads(found[1]["content"])["content"]  # still valid JSON
    original, kept = found.cut[str(big)]
    assert text.endswith(cut_marker(original - kept, original))
    assert "characters cut here to fit the message budget" in text


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=8), st.integers(0, 20000))
def test_fit_budget_properties(lengths: list[int], budget: int) -> None:
    kept = fit_budget(lengths, budget)
    assert all(0 <= k <= n for k, n in zip(kept, lengths, strict=True))
    if sum(lengths) <= budget:
        assert kept == lengths
    else:
        assert sum(kept) <= budget
        cut = [i for i, (k, n) in enumerate(zip(kept, lengths, strict=True)) if k < n]
        # the cut ones are the largest, all cut to one cap; the rest are whole
        cap = max(kept[i] for i in cut)
        assert all(kept[i] == cap for i in cut)
        assert all(lengths[i] <= cap for i in range(len(lengths)) if i not in cut)


def test_a_document_without_text_is_reported_and_the_rest_returned(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", "readable\n")
    empty = write(tmp_path / "dots.txt", "." * 6000)  # one character repeated: no text
    found = kf.messages([good, empty], client=client)
    assert len(found) == 1 and json.loads(found[0]["content"])["content"] == "readable\n"
    assert isinstance(found.failed[str(empty)], kf.NoExtractableTextError)
    with pytest.raises(kf.NoExtractableTextError):
        kf.messages([good, empty], client=client, strict=True)


def test_content_parts_for_vision(emulator: Emulator, client: kf.KimiFiles) -> None:
    png = CORPUS.parent / "images" / "chart.png"
    up = client.upload(png, purpose="image")
    assert up.as_content_part() == {"type": "image_url", "image_url": {"url": f"ms://{up.id}"}}
    video = FileObject(id="v1", purpose="video")
    assert video.as_content_part() == {"type": "video_url", "video_url": {"url": "ms://v1"}}
    with pytest.raises(ValueError, match="purpose 'file-extract'"):
        FileObject(id="d1", purpose="file-extract").as_content_part()


def _session_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return (write(tmp_path / "new.txt", "new\n"),
            write(tmp_path / "same.txt", "uploaded before the session\n"),
            write(tmp_path / "x.txt", "extracted\n"))


def _check_session(emulator: Emulator, before: kf.UploadedFile, new: kf.UploadedFile,
                   reused: kf.UploadedFile, deleted: list[str], log: str) -> None:
    assert reused.reused and reused.id == before.id
    assert {f.id for f in emulator.state.listing()} == {before.id}  # only the reused one left
    assert new.id in deleted and len(deleted) == 2  # the upload and the extraction's file
    assert f"deleted {new.id} (new.txt) at the end of the session" in log


def test_a_session_deletes_exactly_what_it_stored_even_when_the_body_raises(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    before = client.upload(write(tmp_path / "kept.txt", "uploaded before the session\n"))
    caplog.set_level(logging.INFO, logger="kimi_files")
    new_path, same_path, text_path = _session_files(tmp_path)
    done: dict[str, kf.UploadedFile] = {}
    with pytest.raises(RuntimeError, match="the body failed"), client.session() as s:
        done["new"] = s.upload(new_path)
        done["reused"] = s.upload(same_path)
        assert s.extract(text_path) == "extracted\n"
        raise RuntimeError("the body failed")
    _check_session(emulator, before, done["new"], done["reused"], s.deleted, caplog.text)


def test_an_async_session_deletes_exactly_what_it_stored_even_when_the_body_raises(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    caplog.set_level(logging.INFO, logger="kimi_files")
    new_path, same_path, text_path = _session_files(tmp_path)

    async def main() -> tuple[kf.UploadedFile, dict[str, kf.UploadedFile], list[str]]:
        done: dict[str, kf.UploadedFile] = {}
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            before = await c.upload(write(tmp_path / "kept.txt",
                                          "uploaded before the session\n"))
            session = c.session()
            with pytest.raises(RuntimeError, match="the body failed"):
                async with session as s:
                    done["new"] = await s.upload(new_path)
                    done["reused"] = await s.upload(same_path)
                    assert await s.extract(text_path) == "extracted\n"
                    raise RuntimeError("the body failed")
            return before, done, session.deleted

    before, done, deleted = asyncio.run(main())
    _check_session(emulator, before, done["new"], done["reused"], deleted, caplog.text)


def test_a_session_without_delete_on_exit_keeps_everything(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    with client.session(delete_on_exit=False) as s:
        up = s.upload(write(tmp_path / "a.txt", "kept\n"))
    assert [f.id for f in emulator.state.listing()] == [up.id] and s.deleted == []


# --- prune ------------------------------------------------------------------------------------------


def _file(fid: str, at: int, purpose: str = "file-extract", name: str = "a.txt") -> FileObject:
    return FileObject(id=fid, created_at=at, purpose=purpose, filename=name)


def test_prune_selection() -> None:
    day = 86400
    files = [_file("old", 1), _file("mid", 5 * day), _file("new", 9 * day),
             _file("img", 1, purpose="image"), _file("pdf", 2, name="x.pdf"),
             _file("undated", 0)]  # no created_at: never pruned
    kw = {"older_than_days": None, "match": None, "purpose": "file-extract", "now": 10 * day}
    ids = [f.id for f in select_for_pruning(files, keep=2, **kw)]  # type: ignore[arg-type]
    assert ids == ["old", "pdf"]  # all but the 2 newest; never the image
    ids = [f.id for f in select_for_pruning(files, keep=None, **{**kw, "older_than_days": 4})]  # type: ignore[arg-type]
    assert ids == ["old", "pdf", "mid"]
    ids = [f.id for f in select_for_pruning(files, keep=1, **{**kw, "match": "*.txt",  # type: ignore[arg-type]
                                                                "older_than_days": 4})]
    assert ids == ["old", "mid"]
    assert select_for_pruning(files, keep=None, **kw) == []  # type: ignore[arg-type]


def test_kimi_files_prune_dry_run_then_for_real(emulator: Emulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    now = int(time.time())
    old = [emulator.state.seed_file(f"old{i}.txt", 3, created_at=now - 86400 * (10 + i))
           for i in range(3)]
    fresh = emulator.state.seed_file("fresh.txt", 3, created_at=now)
    image = emulator.state.seed_file("pic.png", 3, created_at=now - 86400 * 30, purpose="image")
    assert main(["prune", "--older-than", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would delete") == 3 and image.id not in out
    assert len(emulator.state.listing()) == 5
    assert main(["prune", "--keep", "1"]) == 1  # says what it would do; deletes nothing
    assert "pass --yes" in capsys.readouterr().err and len(emulator.state.listing()) == 5
    assert main(["prune", "--keep", "1", "--yes"]) == 0
    left = {f.id for f in emulator.state.listing()}
    assert left == {fresh.id, image.id} and not left & {f.id for f in old}
    assert main(["prune"]) == 2  # says what to keep
    assert "--keep N" in capsys.readouterr().err


def test_kimi_files_messages_prints_json(emulator: Emulator, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    a = write(tmp_path / "a.txt", "alpha " * 200)
    b = write(tmp_path / "b.txt", "beta\n")
    assert main(["messages", str(a), str(b), "--max-chars", "600"]) == 0
    captured = capsys.readouterr()
    msgs = json.loads(captured.out)
    assert [m["role"] for m in msgs] == ["system", "system"]
    assert sum(len(m["content"]) for m in msgs) <= 600
    assert f"{a}: cut to" in captured.err


def test_the_budget_counts_what_json_makes_of_the_text(emulator: Emulator, client: kf.KimiFiles,
                                                      tmp_path: Path) -> None:
    quoted = write(tmp_path / "quotes.txt", '"quoted"\n\\back\tslash\n' * 200)
    chinese = write(tmp_path / "zh.txt", "季度报告收入增长。" * 300)
    for budget in (3000, 2000, 900):
        found = kf.messages([quoted, chinese], client=client, max_chars=budget)
        assert sum(len(m["content"]) for m in found) <= budget, budget
        for m in found:
            json.loads(m["content"])  # still valid JSON
    with pytest.raises(kf.ConfigurationError, match="cannot hold 2 document"):
        kf.messages([quoted, chinese], client=client, max_chars=50)
    for bad in (2.5, 0, True):
        with pytest.raises(kf.ConfigurationError, match="max_chars must be a whole number"):
            kf.messages([quoted], client=client, max_chars=bad)  # type: ignore[arg-type]


def test_a_session_never_deletes_a_file_it_adopted(emulator: Emulator, client: kf.KimiFiles,
                                                   tmp_path: Path, no_wait: list[float],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Our attempt is lost before it is stored and a colleague's look-alike appears: the
    look-alike is adopted (the known limit), and so the session must not delete it."""
    p = write(tmp_path / "report.txt", "0123456789")
    emulator.fail_next("drop")
    original = client.create
    colleague: list[str] = []

    def create(*args: object, **kwargs: object) -> FileObject:
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            if not colleague:
                colleague.append(emulator.state.seed_file("report.txt", 10).id)

    monkeypatch.setattr(client, "create", create)
    with client.session() as s:
        up = s.upload(p)
    assert up.adopted and up.id == colleague[0]
    assert colleague[0] in {f.id for f in emulator.state.listing()} and s.deleted == []


def test_two_sessions_on_one_client_hand_over_a_shared_file(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    p = write(tmp_path / "shared.txt", "used by two sessions\n")
    first = client.session()
    second = client.session()
    with first:
        stored = first.upload(p)
        assert second.upload(p).reused  # the second reuses what the first stored
    assert stored.id in {f.id for f in emulator.state.listing()}  # still in use: kept
    with second:
        pass
    assert emulator.state.listing() == [] and second.deleted == [stored.id]


def test_a_failed_clean_up_never_hides_the_bodys_error(emulator: Emulator, client: kf.KimiFiles,
                                                        tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "first\n")
    b = write(tmp_path / "b.txt", "second\n")
    with pytest.raises(RuntimeError, match="the body"), client.session() as s:
        s.upload(a)
        s.upload(b)
        emulator.fail_next("api_not_open", endpoint="delete")  # the first deletion fails
        raise RuntimeError("the body")
    assert len(s.deleted) == 1 and len(s.created) == 1  # the other was still deleted
    assert len(emulator.state.listing()) == 1
