"""Sync semantics: gitignore-style filters, --exclude-from, and replacing earlier copies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kimi_files._scan import collect, matches_filters, read_patterns
from kimi_files.errors import ConfigurationError

from .conftest import write


def test_a_folder_name_excludes_the_folder_at_any_depth() -> None:
    assert not matches_filters("notes/a.txt", [], ["notes"])
    assert not matches_filters("x/notes/deep/b.txt", [], ["notes"])
    assert matches_filters("notesx/a.txt", [], ["notes"])  # a name, not a prefix


def test_double_star_anchoring_and_negation() -> None:
    assert not matches_filters("a/b/tmp/x.log", [], ["**/tmp/*.log"])
    assert matches_filters("a/b/tmp/x.txt", [], ["**/tmp/*.log"])
    assert not matches_filters("top.txt", [], ["/top.txt"])
    assert matches_filters("sub/top.txt", [], ["/top.txt"])  # anchored to the root
    assert matches_filters("notes/keep.txt", [], ["notes", "!notes/keep.txt"])
    assert not matches_filters("notes/drop.txt", [], ["notes", "!notes/keep.txt"])
    assert not matches_filters("build/x.txt", [], ["build/"])  # a folder-only pattern
    assert matches_filters("build", [], ["build/"])  # a file named build is kept


def test_includes_follow_the_same_rules() -> None:
    assert matches_filters("docs/deep/a.md", ["docs"], [])
    assert not matches_filters("src/a.md", ["docs"], [])
    assert matches_filters("x/y/a.pdf", ["*.pdf"], [])


def test_collect_walks_with_gitignore_rules(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.txt", "notes/n.txt", "sub/notes/m.txt", "sub/keep.md", "notes/keep.txt"):
        write(root / rel, rel)
    files, rejected = collect([root], exclude=["notes", "!notes/keep.txt"])
    assert not rejected
    assert sorted(p.relative_to(root).as_posix() for p in files) == [
        "a.txt", "notes/keep.txt", "sub/keep.md"]


def test_exclude_from_reads_a_gitignore(tmp_path: Path) -> None:
    ignore = write(tmp_path / ".gitignore", "# comment\n\nnotes\n*.log\n!important.log\n")
    patterns = read_patterns(ignore)
    assert not matches_filters("notes/a.txt", [], patterns)
    assert not matches_filters("x/debug.log", [], patterns)
    assert matches_filters("x/important.log", [], patterns)
    assert matches_filters("x/readme.md", [], patterns)


def test_an_unreadable_patterns_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="missing.ignore: cannot read the patterns file"):
        read_patterns(tmp_path / "missing.ignore")


def test_a_bad_pattern_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    import kimi_files

    write(tmp_path / "a.txt", "x")
    with pytest.raises(ConfigurationError, match=r"exclude: bad pattern '!'"):
        kimi_files.ingest([tmp_path], api_key="k", base_url="http://127.0.0.1:9/v1",
                          exclude=["!"], state=False)


@pytest.mark.parametrize("pattern", ["[", "docs/[a", "/"])
def test_a_pattern_that_can_never_match_is_refused(tmp_path: Path, pattern: str) -> None:
    from kimi_files._scan import check_patterns

    with pytest.raises(ConfigurationError, match=rf"exclude: bad pattern {re.escape(repr(pattern))} "
                                                 r"\(it can never match"):
        check_patterns([pattern], what="exclude")
    check_patterns(["[ab]", "\\[", "# a comment", "", "!keep.txt"], what="exclude")  # fine


def test_kimi_upload_exits_2_on_an_unclosed_bracket(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_files.cli import upload_main

    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    monkeypatch.setenv("MOONSHOT_BASE_URL", "http://127.0.0.1:9/v1")  # never reached
    write(tmp_path / "a.txt", "x")
    assert upload_main(["--no-state", "--exclude", "[", str(tmp_path)]) == 2
    assert "bad pattern '['" in capsys.readouterr().err


# --- earlier copies of changed files: said, and deleted with replace ---------------------

import kimi_files as kf  # noqa: E402
from kimi_files._models import FileObject  # noqa: E402
from kimi_files._replace import earlier_copies, replace_plan  # noqa: E402
from kimi_files._state import StateStore, StoredCopy  # noqa: E402
from kimi_files.emulator import Emulator  # noqa: E402


def _copy(fid: str, path: str = "/d/a.txt", name: str = "a.txt", size: int = 5,
          created_at: int | None = 1) -> StoredCopy:
    return StoredCopy(fid, path, name, size, "file-extract", created_at)


def _file(fid: str, name: str = "a.txt", size: int = 5, purpose: str = "file-extract"
          ) -> FileObject:
    return FileObject(id=fid, bytes=size, created_at=1, filename=name, purpose=purpose)


def test_earlier_copies_are_the_paths_other_stored_files() -> None:
    stored = [_copy("old"), _copy("new"), _copy("other", path="/d/b.txt")]
    assert earlier_copies({"/d/a.txt": "new"}, stored) == [_copy("old")]
    assert earlier_copies({"/d/a.txt": "reused-elsewhere"}, stored) == [_copy("old"),
                                                                        _copy("new")]
    assert earlier_copies({}, stored) == []


def test_replace_plan_deletes_only_the_very_file_stored() -> None:
    copies = [_copy("same"), _copy("renamed"), _copy("resized"), _copy("gone"), _copy("shared"),
              _copy("repurposed")]
    listing = [_file("same"), _file("renamed", name="b.txt"), _file("resized", size=6),
               _file("shared"), _file("repurposed", purpose="batch")]
    plan = replace_plan(copies, listing, in_use={"shared"})
    assert [c.file_id for c, _ in plan.delete] == ["same"]
    assert [c.file_id for c in plan.gone] == ["gone"]
    why = {c.file_id: reason for c, reason in plan.kept}
    assert why["shared"] == "another file maps to it"
    assert why["renamed"].startswith("the listing shows it as 'b.txt'")
    assert "6 bytes" in why["resized"] and "batch" in why["repurposed"]


def test_replace_plan_keeps_a_copy_whose_id_now_names_a_later_file() -> None:
    # a server may give a deleted file's id to a later file of the same name and size
    copies = [_copy("reused-id"), _copy("unknown-time", created_at=None)]
    listing = [FileObject(id="reused-id", bytes=5, created_at=2, filename="a.txt",
                          purpose="file-extract"), _file("unknown-time")]
    plan = replace_plan(copies, listing, in_use=set())
    assert not plan.delete
    why = {c.file_id: reason for c, reason in plan.kept}
    assert "another file under a reused id" in why["reused-id"]
    assert "no creation time on record" in why["unknown-time"]


def _reuse_id(emulator: Emulator, old: str, name: str, data: bytes) -> None:
    """Someone else's later file, stored under the id of our deleted ``old``."""
    other = emulator.state.store_bytes(name, data, "file-extract")
    with emulator.state.lock:
        del emulator.state.files[other.id]
        other.id = old
        other.created_at += 5
        emulator.state.files[old] = other


def test_replace_never_deletes_another_file_that_got_our_deleted_copys_id(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "version one\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "in"], client=client, state=state).results[0].file_id
    assert old is not None
    client.delete(old)
    _reuse_id(emulator, old, "a.txt", b"OTHERS data\n")  # same name and size, later
    doc.write_text("version two\n")
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    assert not report.replaced and old in _ids(emulator)
    ((path, f, why),) = report.earlier
    assert path == str(doc)
    assert f.id == old and "another file under a reused id" in why


def test_an_unchanged_file_whose_id_now_names_another_file_is_sent_again(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "in" / "a.txt", "version one\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "in"], client=client, state=state).results[0].file_id
    assert old is not None
    client.delete(old)
    _reuse_id(emulator, old, "a.txt", b"OTHERS data\n")
    again = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    (result,) = again.results
    assert result.status == "uploaded" and result.file_id != old
    assert old in _ids(emulator) and not again.replaced  # someone else's: left alone
    assert f"{old}, recorded as stored, is not that file now" in caplog.text


def test_replace_keeps_a_copy_reused_for_another_document(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    a = write(tmp_path / "rp1" / "a.txt", "shared v1\n")
    b = write(tmp_path / "rp2" / "b.txt", "shared v1\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "rp1"], client=client, state=state).results[0].file_id
    lib = client.upload(b)  # the library (no state) hands back a.txt's copy for b.txt
    assert lib.reused and lib.id == old
    a.write_text("changed\n")
    report = kf.ingest([tmp_path / "rp1"], client=client, state=state, replace=True)
    assert not report.replaced and old in _ids(emulator)
    ((path, f, why),) = report.earlier
    assert (path, f.id) == (str(a), old) and "reused for another document" in why
    assert f"kept {old} a.txt, the earlier copy of {a}: it was reused" in report.summary()


def test_replace_keeps_a_copy_a_no_state_run_reused(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    a = write(tmp_path / "rp1" / "a.txt", "shared v1\n")
    write(tmp_path / "rp2" / "b.txt", "shared v1\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "rp1"], client=client, state=state).results[0].file_id
    other = kf.ingest([tmp_path / "rp2"], client=client, state=False)
    assert other.results[0].status == "reused" and other.results[0].file_id == old
    a.write_text("changed\n")
    report = kf.ingest([tmp_path / "rp1"], client=client, state=state, replace=True)
    assert not report.replaced and old in _ids(emulator)


def test_a_reused_id_of_a_file_outside_the_batch_is_not_said(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a" / "a.txt", "in a\n")
    write(tmp_path / "b" / "b.txt", "in b\n")
    state = tmp_path / "s.db"
    kf.ingest([tmp_path / "a"], client=client, state=state)
    old = kf.ingest([tmp_path / "b"], client=client, state=state).results[0].file_id
    assert old is not None
    client.delete(old)
    _reuse_id(emulator, old, "b.txt", b"OTHERS\n")
    assert _statuses_of(kf.ingest([tmp_path / "a"], client=client, state=state)) == ["skipped"]
    assert "recorded as stored" not in caplog.text  # b.txt is no file of this batch


def _statuses_of(report: kf.BatchReport) -> list[str]:
    return [r.status for r in report.results]


def _ids(emulator: Emulator) -> set[str]:
    return {f.id for f in emulator.state.listing()}


def test_a_changed_file_uploaded_again_is_said_and_both_copies_stay(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    first = kf.ingest([tmp_path / "in"], client=client, state=state)
    old = first.results[0].file_id
    doc.write_text("second version, longer\n")
    again = kf.ingest([tmp_path / "in"], client=client, state=state)
    new = again.results[0].file_id
    assert again.results[0].status == "uploaded" and new != old
    assert _ids(emulator) == {old, new}
    assert [(p, f.id, why) for p, f, why in again.earlier] == [(str(doc), old, "")]
    summary = again.summary()
    assert "1 file(s) uploaded again after a change: their earlier copies stay" in summary
    assert f"{old} a.txt (14 bytes), earlier copy of {doc}" in summary


def test_replace_deletes_the_earlier_copy_once_the_new_one_is_stored(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "in"], client=client, state=state).results[0].file_id
    doc.write_text("second version, longer\n")
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    new = report.results[0].file_id
    assert _ids(emulator) == {new}
    assert [(p, f.id) for p, f in report.replaced] == [(str(doc), old)]
    assert f"replaced: deleted {old} a.txt (14 bytes), the earlier copy of {doc}" in (
        report.summary())
    assert not report.earlier
    with StateStore(state) as store:
        assert [c.file_id for c in store.stored()] == [new]  # the deleted one forgotten
    # and a third run has nothing more to replace
    assert not kf.ingest([tmp_path / "in"], client=client, state=state, replace=True).replaced


def test_replace_never_deletes_what_another_file_maps_to_or_what_changed_on_the_server(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    a = write(tmp_path / "in" / "a.txt", "shared text\n")
    b = write(tmp_path / "in" / "b.txt", "b first\n")
    state = tmp_path / "s.db"
    first = {Path(r.path).name: r.file_id for r in
             kf.ingest([tmp_path / "in"], client=client, state=state).results}
    write(tmp_path / "in" / "copy.txt", "shared text\n")  # maps to a.txt's stored file
    a.write_text("a changed\n")
    b.write_text("b changed!\n")
    # someone renamed b's stored copy on the server: no longer provably the file stored
    emulator.state.files[first["b.txt"]].filename = "renamed.txt"
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    assert not report.replaced
    assert {first["a.txt"], first["b.txt"]} <= _ids(emulator)
    why = {p: (f.id, reason) for p, f, reason in report.earlier}
    assert why[str(a)] == (first["a.txt"], "another file maps to it")
    assert why[str(b)][0] == first["b.txt"] and "'renamed.txt'" in why[str(b)][1]
    assert f"kept {first['a.txt']} a.txt, the earlier copy of {a}: another file maps to it" in (
        report.summary())


def test_replace_never_deletes_an_adopted_copy(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path, no_wait: list[float]) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    emulator.fail_next("store_then_drop")
    first = kf.ingest([tmp_path / "in"], client=client, state=state)
    assert "adopted" in first.results[0].note
    doc.write_text("second version\n!")
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    assert not report.replaced and first.results[0].file_id in _ids(emulator)


def test_an_earlier_copy_gone_from_the_server_is_forgotten(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "in"], client=client, state=state).results[0].file_id
    client.delete(old)
    doc.write_text("second version\n!")
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True)
    assert not report.replaced and not report.earlier
    with StateStore(state) as store:
        assert old not in {c.file_id for c in store.stored()}


# --- the command line ----------------------------------------------------------------------

import asyncio  # noqa: E402
import json  # noqa: E402

from kimi_files.cli import upload_main  # noqa: E402

from .conftest import API_KEY  # noqa: E402


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def test_cli_says_the_earlier_copy_and_replace_deletes_it(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = str(tmp_path / "s.db")
    assert upload_main(["--no-progress", "--state", state, str(tmp_path / "in")]) == 0
    doc.write_text("second version, longer\n")
    assert upload_main(["--no-progress", "--state", state, str(tmp_path / "in")]) == 0
    err = capsys.readouterr().err
    assert "1 uploaded" in err
    assert "1 file(s) uploaded again after a change: their earlier copies stay" in err
    assert len(env.filenames()) == 2
    doc.write_text("third version, longer still\n")
    assert upload_main(["--no-progress", "--replace", "--state", state,
                        str(tmp_path / "in")]) == 0
    err = capsys.readouterr().err
    assert err.count("replaced: deleted ") == 2  # both earlier copies of this path
    assert env.filenames() == ["a.txt"] and err.count("earlier copy of") == 2


def test_cli_replace_needs_the_state(env: Emulator, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    assert upload_main(["--replace", "--no-state", str(tmp_path / "a.txt")]) == 2
    assert "--replace needs the state" in capsys.readouterr().err
    assert env.filenames() == []


def test_cli_exclude_from_reads_a_gitignore_and_exclude_takes_back(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    for rel in ("keep.md", "notes/n.txt", "deep/notes/m.txt", "build/x.txt", "build/keep.txt"):
        write(root / rel, rel)
    ignore = write(tmp_path / "ignore", "notes\nbuild/\n")
    assert upload_main(["--json", "--no-progress", "--no-state", "--exclude-from", str(ignore),
                        "--exclude", "!build/keep.txt", str(root)]) == 0
    taken = sorted(Path(json.loads(x)["path"]).relative_to(root).as_posix()
                   for x in capsys.readouterr().out.splitlines())
    assert taken == ["build/keep.txt", "keep.md"]


def test_cli_names_an_unreadable_patterns_file(env: Emulator, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    missing = tmp_path / "no-such.ignore"
    assert upload_main(["--exclude-from", str(missing), str(tmp_path / "a.txt")]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the patterns file (No such file or directory)" in err
    assert "Traceback" not in err and env.filenames() == []


def test_replace_works_the_same_under_asyncio(emulator: Emulator, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"

    async def run(**kw: bool) -> kf.BatchReport:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            return await c.ingest([tmp_path / "in"], state=state, **kw)

    old = asyncio.run(run()).results[0].file_id
    doc.write_text("second version, longer\n")
    report = asyncio.run(run(replace=True))
    assert [f.id for _, f in report.replaced] == [old]
    assert _ids(emulator) == {report.results[0].file_id}


def test_an_excluded_folder_is_not_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    write(tmp_path / "in" / "a.txt", "a")
    write(tmp_path / "in" / "node_modules" / "x" / "y.js", "y")
    walked: list[str] = []
    real_walk = os.walk

    def walk(top: str, **kw: bool):  # type: ignore[no-untyped-def]
        for dirpath, dirnames, filenames in real_walk(top, **kw):
            walked.append(Path(dirpath).name)
            yield dirpath, dirnames, filenames

    monkeypatch.setattr("kimi_files._scan.os.walk", walk)
    files, _ = collect([tmp_path / "in"], exclude=["node_modules"])
    assert [p.name for p in files] == ["a.txt"] and "node_modules" not in walked
    walked.clear()  # with a "!" pattern a file inside could be taken back: walked
    files, _ = collect([tmp_path / "in"], exclude=["node_modules", "!y.js"])
    assert sorted(p.name for p in files) == ["a.txt", "y.js"] and "node_modules" in walked


def test_an_earlier_copy_is_said_once_not_on_every_re_run(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    kf.ingest([tmp_path / "in"], client=client, state=state)
    doc.write_text("second version, longer\n")
    assert kf.ingest([tmp_path / "in"], client=client, state=state).earlier
    again = kf.ingest([tmp_path / "in"], client=client, state=state)
    assert again.results[0].status == "skipped" and not again.earlier
    assert "earlier" not in again.summary()
    # and a later --replace still deletes it
    assert len(kf.ingest([tmp_path / "in"], client=client, state=state, replace=True).replaced) == 1


def test_a_dry_run_with_replace_says_what_would_be_deleted(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    doc = write(tmp_path / "in" / "a.txt", "first version\n")
    state = tmp_path / "s.db"
    old = kf.ingest([tmp_path / "in"], client=client, state=state).results[0].file_id
    doc.write_text("second version, longer\n")
    report = kf.ingest([tmp_path / "in"], client=client, state=state, replace=True,
                       dry_run=True)
    assert [r.status for r in report.results] == ["planned"]
    assert [(p, f.id) for p, f in report.replaced] == [(str(doc), old)]
    assert (f"would replace: delete {old} a.txt (14 bytes), the earlier copy of {doc}, once its "
            "new copy is stored") in report.summary()
    assert _ids(emulator) == {old}  # nothing deleted, nothing sent
    # without replace, a dry run says nothing of it
    assert not kf.ingest([tmp_path / "in"], client=client, state=state, dry_run=True).replaced
