"""Which stored file a document maps to, under which name: ``stored_as`` and ``purpose`` on
every result that names a file, and ``kimi-files map``."""

from __future__ import annotations

from pathlib import Path

import kimi_files as kf
from kimi_files._hashing import sha256_of
from kimi_files._state import StateStore
from kimi_files.emulator import Emulator

from .conftest import write


def _by_name(report: kf.BatchReport) -> dict[str, dict[str, object]]:
    return {Path(r.path).relative_to(r.path.rsplit("/in/", 1)[0] + "/in").as_posix(): r.to_json()
            for r in report.results}


def test_uploaded_and_twin_lines_say_the_stored_name_and_purpose(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a" / "d1.txt", "first\n")
    write(tmp_path / "in" / "b" / "d1.txt", "second\n")
    write(tmp_path / "in" / "b" / "twin.txt", "first\n")
    rows = _by_name(kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db"))
    a, b, twin = rows["a/d1.txt"], rows["b/d1.txt"], rows["b/twin.txt"]
    assert (a["status"], a["stored_as"], a["purpose"]) == ("uploaded", "d1.txt", "file-extract")
    assert (b["status"], b["stored_as"]) == ("uploaded", "d1.txt")  # the server keeps base names
    assert a["file_id"] != b["file_id"]
    assert (twin["status"], twin["file_id"], twin["stored_as"]) == (
        "skipped", a["file_id"], "d1.txt")  # the twin maps to the first's stored file


def test_skipped_and_reused_lines_say_the_stored_name(emulator: Emulator, client: kf.KimiFiles,
                                                      tmp_path: Path) -> None:
    lib = client.upload(write(tmp_path / "lib" / "minutes.txt", "the minutes\n"))
    assert lib.stored_as == "minutes.txt"
    write(tmp_path / "in" / "copy.txt", "the minutes\n")
    write(tmp_path / "in" / "own.txt", "own\n")
    first = _by_name(kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db"))
    assert (first["copy.txt"]["status"], first["copy.txt"]["file_id"]) == ("reused", lib.id)
    assert first["copy.txt"]["stored_as"] == "minutes.txt"
    assert first["copy.txt"]["purpose"] == "file-extract"
    again = _by_name(kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db"))
    assert again["own.txt"]["status"] == "skipped"
    assert again["own.txt"]["stored_as"] == "own.txt"
    assert again["own.txt"]["purpose"] == "file-extract"
    # and a single upload that reuses says the name it is stored under, not the local one
    reused = client.upload(tmp_path / "in" / "copy.txt")
    assert reused.reused and reused.stored_as == "minutes.txt" and reused.purpose == "file-extract"


def test_adopted_lines_say_the_stored_name(emulator: Emulator, client: kf.KimiFiles,
                                           tmp_path: Path) -> None:
    p = write(tmp_path / "in" / "a.txt", "hello\n")
    state = tmp_path / "s.db"
    with StateStore(state) as store, p.open("rb") as fh:
        client.list()
        store.begin(p, size=6, mtime_ns=p.stat().st_mtime_ns, sha256=sha256_of(p),
                    filename="a.txt", server_time=client.clock.now())
        stored = client.create(fh, filename="a.txt", content_type="text/plain")
    [row] = kf.ingest([tmp_path / "in"], client=client, state=state).results
    line = row.to_json()
    assert (line["status"], line["file_id"], line["stored_as"], line["purpose"]) == (
        "skipped", stored.id, "a.txt", "file-extract")
    assert "adopted" in row.note


def test_adopted_after_a_lost_answer_says_the_stored_name(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float]) -> None:
    write(tmp_path / "in" / "lost.txt", "answer lost\n")
    emulator.fail_next("store_then_drop")
    [row] = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db").results
    line = row.to_json()
    assert line["status"] == "uploaded" and "adopted" in row.note
    assert (line["stored_as"], line["purpose"]) == ("lost.txt", "file-extract")
    assert emulator.filenames() == ["lost.txt"]


def test_lines_without_a_file_carry_nulls(tmp_path: Path) -> None:
    write(tmp_path / "in" / "empty.txt", "")
    report = kf.ingest([tmp_path / "in"], api_key="k", base_url="http://127.0.0.1:9/v1",
                       state=False)
    [line] = [r.to_json() for r in report.results]
    assert line["status"] == "rejected" and line["stored_as"] is None and line["purpose"] is None


# --- the command line ----------------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402

from kimi_files.cli import main, upload_main  # noqa: E402

from .conftest import API_KEY  # noqa: E402


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def _lines(text: str) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in text.splitlines()]
    return {Path(str(r["path"])).name: r for r in rows}


def test_every_json_line_that_names_a_file_says_stored_as_and_purpose(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        no_wait: list[float]) -> None:
    with kf.KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        held = c.upload(write(tmp_path / "lib" / "minutes.txt", "the minutes\n"))
    write(tmp_path / "in" / "copy.txt", "the minutes\n")
    write(tmp_path / "in" / "lost.txt", "its answer is lost\n")
    write(tmp_path / "in" / "empty.txt", "")
    state = str(tmp_path / "s.db")
    env.fail_next("store_then_drop")
    code = upload_main(["--json", "--no-progress", "--concurrency", "1", "--state", state,
                        str(tmp_path / "in")])
    rows = _lines(capsys.readouterr().out)
    assert code == 1  # the empty file
    for r in rows.values():
        assert set(r) == {"path", "status", "file_id", "stored_as", "purpose", "bytes",
                          "suspects", "error"}
    assert (rows["copy.txt"]["status"], rows["copy.txt"]["file_id"]) == ("reused", held.id)
    assert rows["copy.txt"]["stored_as"] == "minutes.txt"
    assert (rows["lost.txt"]["status"], rows["lost.txt"]["stored_as"]) == ("uploaded", "lost.txt")
    assert {rows[n]["purpose"] for n in ("copy.txt", "lost.txt")} == {"file-extract"}
    assert rows["empty.txt"]["stored_as"] is None and rows["empty.txt"]["purpose"] is None
    # a re-run: skipped, with the name stored under
    assert main(["upload", "--json", "--no-progress", "--state", state,
                 str(tmp_path / "in" / "lost.txt")]) == 0
    [again] = _lines(capsys.readouterr().out).values()
    assert (again["status"], again["stored_as"], again["purpose"]) == (
        "skipped", "lost.txt", "file-extract")


def test_map_says_which_stored_file_each_document_is(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "in" / "a" / "d1.txt", "first\n")
    write(tmp_path / "in" / "b" / "d1.txt", "second\n")
    state = str(tmp_path / "s.db")
    assert upload_main(["--json", "--no-progress", "--state", state, str(tmp_path / "in")]) == 0
    ids = {str(r["path"]): r["file_id"] for r in
           (json.loads(x) for x in capsys.readouterr().out.splitlines())}
    env.state.delete(ids[str(tmp_path / "in" / "b" / "d1.txt")])  # gone from the account
    before = len(env.requests)
    assert main(["map", "--json", "--state", state]) == 0
    assert [r.method for r in env.requests[before:]] == ["GET"]  # one list call
    rows = {str(r["path"]): r for r in
            (json.loads(x) for x in capsys.readouterr().out.splitlines())}
    a, b = rows[str(tmp_path / "in" / "a" / "d1.txt")], rows[str(tmp_path / "in" / "b" / "d1.txt")]
    assert (a["file_id"], a["stored_as"], a["purpose"], a["bytes"], a["listed"], a["source"]) == (
        ids[str(tmp_path / "in" / "a" / "d1.txt")], "d1.txt", "file-extract", 6, True, "state")
    assert (b["stored_as"], b["listed"]) == ("d1.txt", False)
    # the human form says the same, and that a file is gone
    assert main(["map", "--state", state, str(tmp_path / "in" / "b")]) == 0
    out = capsys.readouterr().out
    assert "d1.txt -> " in out and "stored as 'd1.txt'" in out and "NOT LISTED" in out


def test_map_finds_a_document_by_content_in_the_reuse_cache(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kf.upload(write(tmp_path / "lib" / "report.txt", "quarterly\n"))  # the library's cache
    local = write(tmp_path / "elsewhere" / "my-copy.txt", "quarterly\n")
    unknown = write(tmp_path / "elsewhere" / "unknown.txt", "never uploaded\n")
    assert main(["map", "--json", str(local), str(unknown)]) == 0
    rows = {str(r["path"]): r for r in
            (json.loads(x) for x in capsys.readouterr().out.splitlines())}
    assert (rows[str(local)]["stored_as"], rows[str(local)]["source"],
            rows[str(local)]["listed"]) == ("report.txt", "cache", True)
    assert rows[str(unknown)]["file_id"] is None


def test_map_says_a_document_changed_since_it_was_stored(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = write(tmp_path / "a" / "d1.txt", "old\n")
    state = str(tmp_path / "s.db")
    assert upload_main(["--json", "--no-progress", "--state", state, str(doc)]) == 0
    [stored] = [json.loads(x)["file_id"] for x in capsys.readouterr().out.splitlines()]
    doc.write_text("new content\n")  # 12 bytes now
    assert main(["map", "--json", "--state", state, str(doc)]) == 0
    [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (row["file_id"], row["bytes"], row["changed"]) == (stored, 4, True)
    assert main(["map", "--state", state, str(doc)]) == 0
    assert "CHANGED since it was stored: the stored file is an older version" in (
        capsys.readouterr().out)
    assert main(["map", "--json", "--state", state]) == 0  # every record: the same
    assert json.loads(capsys.readouterr().out)["changed"] is True
    # its present content stored too: that is the file it maps to
    assert upload_main(["--json", "--no-progress", "--state", str(tmp_path / "t.db"),
                        str(doc)]) == 0
    fresh = json.loads(capsys.readouterr().out)["file_id"]
    assert main(["map", "--json", "--state", state, str(doc)]) == 0
    [row] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (row["file_id"], row["changed"], row["source"]) == (fresh, False, "cache")


def test_map_of_a_missing_path_says_so_and_exits_1(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", str(tmp_path / "nope.txt")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "nope.txt: no such file" in err
