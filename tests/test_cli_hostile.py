"""The command line under hostile conditions: signals, closed pipes, control characters in
names, and a server whose listing tries to steer where ``content --all -o DIR`` writes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimi_files._config import Limits
from kimi_files.cli import main, output_name, shown, upload_main
from kimi_files.emulator import Emulator
from kimi_files.emulator._state import StoredFile

from .conftest import API_KEY, write

#: What must never reach a terminal from human output (LF ends lines, so it is checked apart).
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")
EXE = Path(sys.executable).parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def _child_env(emu: Emulator) -> dict[str, str]:
    return {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emu.base_url,
            "KIMI_FILES_NO_PROGRESS": "1"}


# --- escaping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("plain 报告.txt", "plain 报告.txt"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("bell\x07", "bell\\x07"),
    ("cr\rlf\ntab\t", "cr\\rlf\\ntab\\t"),
    ("nul\x00del\x7f", "nul\\x00del\\x7f"),
    ("c1\x9b31m\x85", "c1\\x9b31m\\x85"),
    ("rtl\u202etxt.exe", "rtl\\u202etxt.exe"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("caf\udce9.txt", "caf\\xe9.txt"),  # a non-UTF-8 byte, as os.fsdecode gives it
    ("back\\slash", "back\\slash"),
])
def test_shown_escapes_what_drives_a_terminal(raw: str, expected: str) -> None:
    assert shown(raw) == expected


def test_progress_bar_labels_are_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from kimi_files._progress import ENV_VAR, ProgressBar, disable_progress_bars, enable_progress_bars

    monkeypatch.delenv(ENV_VAR, raising=False)
    sink = io.StringIO()
    enable_progress_bars()
    try:
        with ProgressBar(total=4, desc="a\x1b]0;title\x07\rb", enabled=True, file=sink) as bar:
            bar.advance(4)
    finally:
        disable_progress_bars()
    drawn = sink.getvalue()
    assert "a\\x1b]0;title\\x07\\rb" in drawn and "\x1b]" not in drawn and "\x07" not in drawn


EVIL = "evil\x1b[2J\x07\rOK\nuploaded  /forged.txt\x9b\u202e"


def test_control_characters_in_local_names_are_escaped_in_human_output(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    write(folder / f"{EVIL}.txt", "text\n")
    write(folder / f"empty{EVIL}.txt", "")
    assert upload_main(["--no-state", str(folder)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2  # one line per file: no name forged a third
    assert not RAW_CONTROL.search(out + err)
    assert f"uploaded  {shown(str(folder / EVIL))}.txt -> " in lines[1]
    assert lines[0].startswith(f"rejected  {shown(str(folder / 'empty'))}")
    assert "evil\\x1b[2J\\x07\\rOK\\nuploaded  /forged.txt\\x9b\\u202e" in err  # the summary
    # --json stays exact: the name comes back as it is
    assert upload_main(["--no-state", "--json", str(folder / f"{EVIL}.txt")]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and not RAW_CONTROL.search(out)
    assert json.loads(out)["path"] == str(folder / f"{EVIL}.txt")


def test_json_keeps_a_non_utf8_name_exact(env: Emulator, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9\x9b.txt"  # Latin-1 bytes; \x9b is C1 CSI
    with open(raw, "wb") as fh:
        fh.write(b"bonjour\n")
    assert upload_main(["--no-state", "--json", os.fsdecode(raw)]) == 0
    out = capsys.readouterr().out
    assert not RAW_CONTROL.search(out)
    assert os.fsencode(json.loads(out)["path"]) == raw  # not a U+FFFD in its place
    assert upload_main(["--no-state", os.fsdecode(raw)]) == 0
    assert "caf\\xe9\\x9b.txt -> " in capsys.readouterr().out


def test_control_characters_in_server_names_are_escaped(env: Emulator, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    env.seed(f"old{EVIL}", 5, created_at=1)
    env.seed(f"other{EVIL}", 5, created_at=2)
    env.state.max_files = 2
    write(tmp_path / "a.txt", "a")
    # make room: the deletion is logged and summed up, both escaped
    code = upload_main(["--no-state", "--free-quota", "oldest", str(tmp_path / "a.txt")],
                       limits=Limits(max_files=2))
    out, err = capsys.readouterr()
    assert code == 0 and not RAW_CONTROL.search(out + err)
    assert err.count(f"old{shown(EVIL)}") == 1  # said once, as it is deleted (issue #18)
    assert "deleted 1 file(s) to make room (5 bytes), each named above" in err
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3 and not RAW_CONTROL.search(out)
    assert f"other{shown(EVIL)}" in out
    assert main(["list", "--json"]) == 0
    out = capsys.readouterr().out
    assert not RAW_CONTROL.search(out)
    assert f"other{EVIL}" in [f["filename"] for f in json.loads(out)["data"]]
    assert main(["delete", "--match", "other*", "--yes"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and f"other{shown(EVIL)}" in out
    assert main(["delete", f"nope{EVIL}"]) == 1
    err = capsys.readouterr().err
    assert f"no file nope{shown(EVIL)} in this account" in err and not RAW_CONTROL.search(err)


def test_list_survives_a_nonsense_creation_time(env: Emulator,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    env.seed("far-future.txt", 5, created_at=10**15)
    env.seed("negative.txt", 5, created_at=-(10**15))
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert str(10**15) in out and str(-(10**15)) in out and "Traceback" not in err


# --- content --all -o DIR against a hostile listing ---------------------------------------------


def test_output_name_is_one_safe_component() -> None:
    taken: set[str] = set()
    assert output_name("file-1", "report.pdf", taken) == "file-1-report.pdf.txt"
    assert output_name("file-1", "report.pdf", taken) == "file-1-report.pdf-2.txt"
    assert output_name("FILE-1", "REPORT.PDF", taken) == "FILE-1-REPORT.PDF-3.txt"
    assert output_name("../../x", "../../../etc/passwd", taken) == "_.._x-_.._.._etc_passwd.txt"
    assert output_name("..", "..", taken) == "file-file.txt"
    assert output_name("", "", taken) == "file-file-2.txt"
    assert output_name(".ssh", ".bashrc", taken) == "ssh-bashrc.txt"
    assert output_name("a\x00b", "c\x1bd\ne", taken) == "a_b-c_d_e.txt"
    long = output_name("x" * 300, "报" * 300, taken)
    assert len(long.encode()) <= 255 and long.endswith("报.txt")


def _hostile_listing(emu: Emulator) -> dict[str, str]:
    """Files whose ids and names try to leave the output folder, overwrite each other or
    hide; returns {id: filename} of those the emulator can serve (no '/' in the id; an id
    of '..' is sent encoded, as one path segment, so it is served too)."""
    entries = {
        "../../escape": "../../../../escaped.txt",
        "/etc/passwd": "passwd",
        "..": "..",
        "a\\..\\b": "..\\..\\evil.txt",
        "x\x00y": "nul\x00name.txt",
        "x" * 300: "报" * 200 + ".txt",
        ".hidden": "..",
        "c:1": "same",
        "c?1": "same",
        "CASE": "Name",
        "case": "name",
        "safe1": "/tmp/../victim.txt",
        "esc": "\x1b]0;pwned\x07\r\n.txt",
    }
    for fid, name in entries.items():
        emu.state.files[fid] = StoredFile(fid, name, 3, 1, "file-extract")
    return {k: v for k, v in entries.items() if "/" not in k}


def _tree(root: Path, skip: Path) -> dict[str, bytes]:
    found = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in filenames:
            p = Path(dirpath) / name
            found[str(p)] = p.read_bytes() if not p.is_symlink() else b"link"
    return found


def test_content_all_never_writes_outside_the_folder(env: Emulator, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served = _hostile_listing(env)
    out_dir = tmp_path / "work" / "out"
    out_dir.mkdir(parents=True)
    victim = write(tmp_path / "victim.txt", "precious")
    # a link left in the folder, named as a listed file's text will be: replaced, not followed
    (out_dir / output_name("safe1", "/tmp/../victim.txt", set())).symlink_to(victim)
    before = _tree(tmp_path, out_dir)
    code = main(["content", "--all", "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 1, err  # the ids with '/' cannot be fetched: said, not fatal
    assert "kimi-files: ../../escape: " in err and "kimi-files: /etc/passwd: " in err
    assert not RAW_CONTROL.search(out + err)
    assert _tree(tmp_path, out_dir) == before  # nothing written or changed outside DIR
    assert victim.read_text() == "precious"
    written = sorted(out_dir.iterdir())
    for p in written:
        assert p.parent == out_dir and p.is_file() and not p.is_symlink()
        assert not p.name.startswith(".") and len(os.fsencode(p.name)) <= 255
        assert not RAW_CONTROL.search(p.name) and "\n" not in p.name
    # one file per served id: no output overwrote another (the emulator's text names the file)
    assert len(written) == len(served)
    texts = sorted(p.read_bytes().decode() for p in written)
    assert texts == sorted(f"[kimi-files emulator: {name} was seeded without content]"
                           for name in served.values())
    assert err.count("kimi-files: wrote ") == len(served)


class _HostileServer:
    """An independent server, real HTTP on loopback, that lists and serves any ids at all
    (the emulator's router cannot serve an id holding '/'): ids and names aimed outside."""

    def __init__(self, files: dict[str, str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote

        listing = [{"id": fid, "object": "file", "bytes": 3, "created_at": 1, "filename": name,
                    "purpose": "file-extract", "status": "ok", "status_details": ""}
                   for fid, name in files.items()]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/v1/files":
                    self._answer(200, {"object": "list", "data": listing})
                elif path.startswith("/v1/files/") and path.endswith("/content"):
                    fid = unquote(path[len("/v1/files/"):-len("/content")])
                    if fid in files:
                        self._answer(200, {"content": f"text of {fid!r}", "file_type": "text/plain",
                                           "filename": files[fid], "title": "", "type": "file"})
                        return
                    self._answer(404, {"error": {"type": "resource_not_found_error",
                                                 "message": f"Not found the file {fid}"}})
                else:
                    self._answer(404, {"error": {"type": "resource_not_found_error",
                                                 "message": "no route"}})

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_content_all_with_ids_aimed_outside_the_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    files = {"../../escape": "x", "/etc/passwd": "passwd", "..%2F..%2Fenc": "y",
             "ok": "../../../../escaped", "dir/../../up": "z"}
    server = _HostileServer(files)
    try:
        monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
        monkeypatch.setenv("MOONSHOT_BASE_URL", server.base_url)
        out_dir = tmp_path / "a" / "b" / "out"
        code = main(["content", "--all", "-o", str(out_dir)])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 0, err
    written = {p.name: p.read_text() for p in out_dir.iterdir()}
    assert sorted(written.values()) == sorted(f"text of {fid!r}" for fid in files)
    # nothing anywhere else: the folders above hold only the way down to out
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if out_dir not in p.parents) == ["a", "a/b", "a/b/out"]


def test_content_output_folder_that_cannot_be_made(env: Emulator, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "file", "x")
    assert main(["content", "--all", "-o", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"cannot use {tmp_path / 'file' / 'out'} as the output folder" in err
    assert "Traceback" not in err and env.requests == []


# --- closed pipes -------------------------------------------------------------------------------


def _run_into_closed_pipe(argv: list[str], emu: Emulator) -> subprocess.CompletedProcess[str]:
    """Run a console script whose stdout is a pipe nobody reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=_child_env(emu), timeout=120)
    finally:
        os.close(write_end)


def test_list_into_a_closed_pipe_ends_quietly(env: Emulator) -> None:
    for i in range(3):
        env.seed(f"f{i}.txt", 10)
    r = _run_into_closed_pipe([str(EXE / "kimi-files"), "list"], env)
    assert r.returncode == 141
    assert r.stderr == ""  # no traceback, no "Exception ignored"


def test_upload_json_into_a_closed_pipe_stops_quietly(env: Emulator, tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path / "in" / f"f{i}.txt", f"file {i}\n")
    r = _run_into_closed_pipe([str(EXE / "kimi-upload"), "--json", "--concurrency", "1",
                               "--no-state", str(tmp_path / "in")], env)
    assert r.returncode == 141
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert "on_result failed" not in r.stderr
    # the first result could not be written: nothing new started after it
    assert len(env.uploads()) == 1
    assert "1 uploaded, 3 failed" in r.stderr and "(interrupted)" in r.stderr


# --- signals ------------------------------------------------------------------------------------


@pytest.fixture
def held() -> Iterator[Emulator]:
    """An emulator of its own whose uploads are held until the test lets them go: its
    delays end when it is closing, so setting ``state.closing`` releases them."""
    with Emulator(api_key=API_KEY) as emu:
        yield emu


class _Lines:
    """A child's stderr, read as it comes."""

    def __init__(self, stream: object) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str) -> None:
        while True:
            line = self.lines.get(timeout=60)
            self.seen.append(line)
            assert line, f"stderr ended without {text!r}: {self.seen}"
            if text in line:
                return

    def rest(self) -> str:
        while (line := self.lines.get(timeout=60)) != "":
            self.seen.append(line)
        return "".join(self.seen)


def _start_held_batch(held: Emulator, tmp_path: Path) -> tuple[subprocess.Popen[str], _Lines]:
    """Six files, two uploads at once, both held by the server: four wait in the queue."""
    for i in range(6):
        write(tmp_path / "in" / f"f{i}.txt", f"file {i}\n")
    held.fail_next("delay", times=2, delay=600)
    child = subprocess.Popen(
        [str(EXE / "kimi-upload"), "--json", "--concurrency", "2", "--state",
         str(tmp_path / "state.db"), str(tmp_path / "in")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(held))
    errors = _Lines(child.stderr)
    # evidence, not a sleep: the server holds two uploads
    while len(held.uploads()) < 2:
        assert child.poll() is None, errors.rest()
        threading.Event().wait(0.01)
    return child, errors


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGHUP, 129, "hung up (SIGHUP)"),
])
def test_a_signal_finishes_uploads_in_flight_and_starts_nothing_new(
        held: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], signum: int, code: int, said: str) -> None:
    child, errors = _start_held_batch(held, tmp_path)
    with child:
        try:
            child.send_signal(signum)
            errors.wait_for(f"kimi-upload: {said}: no new upload starts")
            held.state.closing = True  # let the two uploads in flight finish
            child.wait(timeout=60)  # its few lines of output fit in the pipe
            held.state.closing = False
            out = child.stdout.read()  # type: ignore[union-attr]
            err = errors.rest()
        finally:
            child.kill()
    assert child.returncode == code, err
    assert "Traceback" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["status"] for r in rows) == ["failed"] * 4 + ["uploaded"] * 2
    assert len(held.uploads()) == 2 and len(held.state.files) == 2
    assert "kimi-upload: 2 uploaded, 4 failed;" in err and "(interrupted)" in err
    assert "4 file(s) not uploaded because of the interruption" in err
    # the state was saved: a re-run skips the two and sends the four
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", held.base_url)
    assert upload_main(["--json", "--state", str(tmp_path / "state.db"),
                        str(tmp_path / "in")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["status"] for r in rows) == ["skipped"] * 2 + ["uploaded"] * 4
    assert len(held.uploads()) == 6


def test_a_second_signal_stops_at_once_with_a_summary(held: Emulator, tmp_path: Path) -> None:
    child, errors = _start_held_batch(held, tmp_path)
    with child:
        try:
            child.send_signal(signal.SIGINT)
            errors.wait_for("no new upload starts")
            child.send_signal(signal.SIGINT)
            # the two uploads stay held for ten minutes: ending now shows nothing waited for them
            child.wait(timeout=60)
            err = errors.rest()
        finally:
            child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert "kimi-upload: no files;" in err and "(interrupted)" in err
    assert "stopped at once" in err
    assert len(held.uploads()) == 2  # none of the four queued was sent


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGHUP, 129, "hung up (SIGHUP)"),
])
def test_a_signal_ends_other_commands_cleanly_too(held: Emulator, tmp_path: Path, signum: int,
                                                  code: int, said: str) -> None:
    for name in ("a.txt", "b.txt"):
        held.seed(name, 3)
    held.fail_next("delay", endpoint="content", times=2, delay=600)
    out_dir = tmp_path / "out"
    child = subprocess.Popen([str(EXE / "kimi-files"), "content", "--all", "-o", str(out_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_child_env(held))
    with child:
        try:
            # evidence, not a sleep: the server holds the first content request
            while not any(r.path.endswith("/content") for r in held.requests):
                assert child.poll() is None, child.stderr.read()  # type: ignore[union-attr]
                threading.Event().wait(0.01)
            child.send_signal(signum)
            _, err = child.communicate(timeout=60)
        finally:
            child.kill()
    assert child.returncode == code, err
    assert err.splitlines()[-1] == f"kimi-files content: {said}"
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []  # nothing half-written left behind
