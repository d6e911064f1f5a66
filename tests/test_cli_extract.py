"""``kimi-files extract``: outputs, resuming, exit codes, and kill -9 at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kimi_files._config import Limits
from kimi_files.cli import main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write

KIMI_FILES = str(Path(sys.executable).parent / "kimi-files")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _corpus(folder: Path, n: int, tag: str = "") -> list[Path]:
    return [write(folder / f"d{i % 4}" / f"doc{i:03d}.txt", f"document {i}{tag}\n" * (i + 1))
            for i in range(n)]


def test_jsonl_one_line_per_document_then_a_rerun_makes_no_request(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = _corpus(tmp_path / "in", 12)
    write(tmp_path / "in" / "empty.txt", "")
    out = tmp_path / "out.jsonl"
    code = main(["extract", str(tmp_path / "in"), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1  # the empty file is refused; its line is written all the same
    lines = _lines(out)
    assert Counter(str(line["path"]) for line in lines) == Counter(
        [*map(str, docs), str(tmp_path / "in" / "empty.txt")])
    by_path = {line["path"]: line for line in lines}
    for doc in docs:
        line = by_path[str(doc)]
        assert line["status"] == "ok" and line["text"] == doc.read_text()
        assert line["bytes"] == doc.stat().st_size and line["file_id"]
    refused = by_path[str(tmp_path / "in" / "empty.txt")]
    assert refused["status"] == "refused" and "text" not in refused
    assert refused["error"]["type"] == "LocalEmptyFileError"  # type: ignore[index]
    assert "12 ok, 1 refused" in err and "files left on the server: 0" in err
    assert "Traceback" not in err and env.filenames() == []
    # the same OUT again: every document is there already, not one request
    env.state.requests.clear()
    assert main(["extract", str(tmp_path / "in"), "-o", str(out), "--no-progress"]) == 0
    assert env.requests == [] and len(_lines(out)) == 13
    assert "13 already in the output" in capsys.readouterr().err


def test_a_new_out_takes_the_texts_from_the_cache(env: Emulator, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _corpus(tmp_path / "in", 5)
    assert main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "a.jsonl")]) == 0
    env.state.requests.clear()
    assert main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "b.jsonl")]) == 0
    assert not [r for r in env.requests if r.method == "POST" or r.path.endswith("/content")]
    first = {(line["path"], line["text"]) for line in _lines(tmp_path / "a.jsonl")}
    assert {(line["path"], line["text"]) for line in _lines(tmp_path / "b.jsonl")} == first
    assert "0 upload(s), 0 content call(s)" in capsys.readouterr().err


def test_a_torn_last_line_is_repaired(env: Emulator, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    docs = _corpus(tmp_path / "in", 4)
    out = tmp_path / "out.jsonl"
    assert main(["extract", str(tmp_path / "in"), "-o", str(out)]) == 0
    whole = out.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    out.write_bytes(whole[:len(whole) - len(last) - 1] + last[:25])  # a kill mid-write
    torn = json.loads(last)["path"]
    env.state.requests.clear()
    assert main(["extract", str(tmp_path / "in"), "-o", str(out), "--no-reuse"]) == 0
    assert "its last line was incomplete" in capsys.readouterr().err
    lines = _lines(out)
    assert sorted(str(line["path"]) for line in lines) == sorted(map(str, docs))
    assert lines[-1]["path"] == torn
    assert len([r for r in env.requests if r.method == "POST"]) == 1  # that one document


def test_stdout_holds_the_lines_and_nothing_else(env: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    docs = _corpus(tmp_path / "in", 3)
    assert main(["extract", str(tmp_path / "in"), "-o", "-", "-v"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["path"] for line in lines) == sorted(map(str, docs))
    assert "3 ok" in err


def test_a_folder_gets_one_txt_per_document_and_an_index(env: Emulator, tmp_path: Path) -> None:
    docs = _corpus(tmp_path / "in", 5)
    write(tmp_path / "in" / "季度报告.md", "# 季度\n收入\r\n")
    out = tmp_path / "texts"
    assert main(["extract", str(tmp_path / "in"), "-o", str(out)]) == 0
    for doc in docs:
        rel = doc.relative_to(tmp_path / "in")
        assert (out / f"{rel}.txt").read_text(encoding="utf-8") == doc.read_text()
    assert (out / "季度报告.md.txt").read_bytes() == "# 季度\n收入\r\n".encode()
    index = _lines(out / "index.jsonl")
    assert len(index) == 6 and all("text" not in line for line in index)
    assert {line["txt"] for line in index} == {
        *(f"{d.relative_to(tmp_path / 'in')}.txt" for d in docs), "季度报告.md.txt"}


def test_an_unwritable_out_is_a_usage_error_before_any_request(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _corpus(tmp_path / "in", 2)
    code = main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "no" / "such" / "x.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and "No such file or directory" in err
    write(tmp_path / "afile", "x")
    assert main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert env.requests == []


def test_no_free_slot_names_the_quota(env: Emulator, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _corpus(tmp_path / "in", 2)
    env.state.max_files = 3
    for i in range(3):
        env.seed(f"old{i}.txt", 5)
    code = main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "o.jsonl")],
                limits=Limits(max_files=3))
    err = capsys.readouterr().err
    assert code == 1 and "holds 3 of 3 files" in err and "nothing was sent" in err
    assert "Traceback" not in err and len(env.filenames()) == 3
    assert not [r for r in env.requests if r.method != "GET"]


def test_window_and_keep_options(env: Emulator, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _corpus(tmp_path / "in", 6)
    out = tmp_path / "o.jsonl"
    assert main(["extract", str(tmp_path / "in"), "-o", str(out), "--window", "2", "--keep"],
                limits=Limits(max_files=1000)) == 1  # only 2 may be kept: the rest refused
    lines = _lines(out)
    assert Counter(line["status"] for line in lines) == {"ok": 2, "refused": 4}
    assert len(env.filenames()) == 2
    with pytest.raises(SystemExit) as usage:
        main(["extract", str(tmp_path / "in"), "-o", str(out), "--window", "0"])
    assert usage.value.code == 2
    assert "expected a number of at least 1" in capsys.readouterr().err


# --- kill -9 at random moments, then a re-run ----------------------------------------------------


def _run(emu: Emulator, folder: Path, out: Path, state: Path,
         kill_after: float | None) -> int | bool:
    """One run to its end (its exit code), or killed ``kill_after`` seconds after its first
    upload (True when it was still running then)."""
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emu.base_url}
    posts_before = sum(r.method == "POST" for r in emu.requests)
    proc = subprocess.Popen([KIMI_FILES, "extract", str(folder), "-o", str(out), "--state",
                             str(state), "--no-progress", "--concurrency", "4"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is None:
        return proc.wait(120)
    deadline = time.monotonic() + 60
    while (sum(r.method == "POST" for r in emu.requests) == posts_before
           and time.monotonic() < deadline):
        time.sleep(0.01)
    time.sleep(kill_after)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return running


def crash_then_finish(emu: Emulator, tmp_path: Path, files: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    docs = _corpus(tmp_path / "in", files, tag=f" of round {seed}")  # none in the text cache
    out, state = tmp_path / "out.jsonl", tmp_path / "extract.sqlite3"
    emu.state.extract_delay = 0.03
    emu.state.max_files = 10  # a small account: the window matters
    interrupted = [_run(emu, tmp_path / "in", out, state, kill_after=rng.uniform(0.0, 0.4))
                   for _ in range(kills)]
    assert interrupted[0], "the first run finished before the kill: it interrupted nothing"
    # the re-run starts at once: a request a killed run had in flight may land after it listed
    assert _run(emu, tmp_path / "in", out, state, kill_after=None) == 0
    lines = _lines(out)
    assert Counter(str(line["path"]) for line in lines) == Counter(map(str, docs))
    for line in lines:
        assert line["status"] == "ok" and line["text"] == Path(str(line["path"])).read_text()
    assert emu.filenames() == []  # every file of every killed run found and deleted


def test_kill_9_then_rerun(emulator: Emulator, tmp_path: Path) -> None:
    crash_then_finish(emulator, tmp_path, files=40, kills=3, seed=3)


@pytest.mark.slow
def test_kill_9_many_times(emulator: Emulator, tmp_path: Path) -> None:
    for seed in range(5):
        emulator.state.reset()
        crash_then_finish(emulator, tmp_path / str(seed), files=150, kills=4, seed=seed)


def test_sigterm_stops_deletes_what_was_stored_and_exits_143(emulator: Emulator,
                                                             tmp_path: Path) -> None:
    _corpus(tmp_path / "in", 30)
    emulator.state.extract_delay = 0.1
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emulator.base_url}
    proc = subprocess.Popen([KIMI_FILES, "extract", str(tmp_path / "in"), "-o",
                             str(tmp_path / "o.jsonl"), "--no-progress", "--state",
                             str(tmp_path / "s.sqlite3")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    out = tmp_path / "o.jsonl"
    while (not out.exists() or not out.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "files left on the server: 0" in err
    assert emulator.filenames() == []
    assert 0 < len(_lines(tmp_path / "o.jsonl")) < 30


def test_the_readme_quick_start_extracts_the_sample_corpus(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    assert ("kimi-files extract --emulator examples/corpus -o corpus.jsonl\n"
            in (root / "README.md").read_text())
    out = tmp_path / "corpus.jsonl"
    assert main(["extract", "--emulator", str(root / "examples" / "corpus"), "-o", str(out)]) == 0
    corpus = [p for p in (root / "examples" / "corpus").rglob("*") if p.is_file()
              and not any(part.startswith(".") for part in p.parts)]
    lines = _lines(out)
    assert sorted(str(line["path"]) for line in lines) == sorted(map(str, corpus))
    assert {line["status"] for line in lines} == {"ok"}
    assert "files left on the server: 0" in capsys.readouterr().err


def test_a_window_above_the_free_slots_is_lowered_and_said(env: Emulator, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _corpus(tmp_path / "in", 6)
    env.state.max_files = 4
    env.seed("old.txt", 5)
    assert main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "o.jsonl"),
                 "--window", "5"], limits=Limits(max_files=4)) == 0
    err = capsys.readouterr().err
    assert "window lowered from 5 to 3: the account has 3 free file slot(s)" in err
    assert main(["extract", str(tmp_path / "in"), "-o", str(tmp_path / "p.jsonl"),
                 "--no-reuse", "--concurrency", "8"], limits=Limits(max_files=4)) == 0
    assert "3 free file slot(s) (it holds 1 of 4): at most 3 document(s) at once" in (
        capsys.readouterr().err)
    assert [f.filename for f in env.state.listing()] == ["old.txt"]


def test_extract_walks_folders_as_kimi_upload_does(env: Emulator, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    for rel in ("keep.md", "notes/n.txt", "deep/notes/m.txt", "build/x.txt", "build/keep.txt"):
        write(root / rel, rel)
    ignore = write(tmp_path / "ignore", "notes\nbuild/\n")
    out = tmp_path / "out.jsonl"
    assert main(["extract", "--no-progress", "--no-state", "--exclude-from", str(ignore),
                 "--exclude", "!build/keep.txt", str(root), "-o", str(out)]) == 0
    taken = sorted(Path(str(r["path"])).relative_to(root).as_posix() for r in _lines(out))
    assert taken == ["build/keep.txt", "keep.md"]
    missing = tmp_path / "no-such.ignore"
    assert main(["extract", "--exclude-from", str(missing), str(root), "-o",
                 str(tmp_path / "other.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the patterns file (No such file or directory)" in err
    assert "Traceback" not in err
