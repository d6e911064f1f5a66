"""Which stored file a document maps to, under which name: ``stored_as`` and ``purpose`` on
every result that names a file, and ``kimi-files map``."""

from __future__ import annotations

from pathlib import Path

import kimi_files as kf
from kimi_files.emulator import Emulator
from kimi_files.state import StateStore, sha256_of

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
