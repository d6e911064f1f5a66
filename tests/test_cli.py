"""kimi-upload and kimi-files: output contracts, exit codes, no tracebacks, management."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_files._config import Limits
from kimi_files.cli import main, upload_main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_output_is_one_object_per_input_file(env: Emulator, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "in" / "a.txt", "a")
    write(tmp_path / "in" / "b.md", "b")
    write(tmp_path / "in" / "empty.txt", "")
    code = upload_main(["--json", str(tmp_path / "in"), str(tmp_path / "missing"),
                        "--state", str(tmp_path / "s.db")])
    out, err = capsys.readouterr()
    rows = _json_lines(out)
    assert code == 1
    assert {r["status"] for r in rows} == {"uploaded", "rejected"}
    assert len(rows) == 4
    for r in rows:
        assert set(r) == {"path", "status", "file_id", "stored_as", "purpose", "bytes", "error",
                          "suspects"}
    rejected = {r["path"]: r for r in rows if r["status"] == "rejected"}
    empty = rejected[str(tmp_path / "in" / "empty.txt")]["error"]
    assert isinstance(empty, dict) and empty["type"] == "LocalEmptyFileError"
    assert "the file is empty" in str(empty["message"])
    assert "2 uploaded, 2 rejected" in err and "Traceback" not in err
    # a re-run: skipped, exit 0 when nothing is rejected
    code = upload_main(["--json", str(tmp_path / "in" / "a.txt"), "--state",
                        str(tmp_path / "s.db")])
    rows = _json_lines(capsys.readouterr().out)
    assert code == 0 and [r["status"] for r in rows] == ["skipped"]


def test_dry_run_json_says_planned(env: Emulator, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    code = upload_main(["--json", "--dry-run", "--no-state", str(tmp_path / "a.txt")])
    rows = _json_lines(capsys.readouterr().out)
    assert code == 0 and [r["status"] for r in rows] == ["planned"]
    assert {r.method for r in env.requests} == {"GET"}


def test_no_room_exit_1_with_numbers(env: Emulator, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # the account's limits reach the plan through upload_main's seam: with the platform's
    # 1,000 files the batch would be sent and refused by the server (a POST in the log)
    env.state.max_files = 2
    env.seed("old", 1)
    write(tmp_path / "in" / "a.txt", "a")
    write(tmp_path / "in" / "b.txt", "b")
    code = upload_main(["--no-state", str(tmp_path / "in")], limits=Limits(max_files=2))
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 file(s) must go" in err and "--free-quota oldest" in err
    # issue #18: the part that fits is sent, the rest deferred (exit 1)
    assert [r.method for r in env.requests] == ["GET", "POST"]
    # said once, in the summary; the deferred file's line names the reason briefly
    assert (out + err).count("1 file(s) must go") == 1
    lines = out.splitlines()
    assert lines[0] == f"deferred  {tmp_path / 'in' / 'b.txt'}: no room for it now (see below)"
    assert lines[1].startswith(f"uploaded  {tmp_path / 'in' / 'a.txt'} -> ")
    assert "deferred (1 file): " not in err and "deferred: No room for all of this batch" in err


def test_limits_seam_reaches_the_preflight_and_the_quota(env: Emulator, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "big.txt", "x" * 11)
    code = upload_main(["--json", "--no-state", str(tmp_path / "big.txt")],
                       limits=Limits(max_file_bytes=10))
    rows = _json_lines(capsys.readouterr().out)
    assert code == 1 and rows[0]["status"] == "rejected"
    assert rows[0]["error"]["type"] == "LocalFileTooLargeError"  # type: ignore[index]
    assert env.uploads() == []
    assert main(["quota", "--json"], limits=Limits(max_files=7)) == 0
    assert json.loads(capsys.readouterr().out)["max_files"] == 7


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [(["--concurrency", "0", "x"], "at least 1"), (["--free-quota", "newest", "x"], "invalid choice"),
     ([], "required"), (["--retries", "many", "x"], "whole number"),
     (["--timeout", "inf", "x"], "expected a finite number, got 'inf'"),
     (["--timeout", "nan", "x"], "expected a finite number, got 'nan'"),
     (["--timeout", "-1", "x"], "expected seconds greater than 0 and at most 86400"),
     (["--timeout", "0", "x"], "expected seconds greater than 0"),
     (["--timeout", "86401", "x"], "at most 86400 (a day), got '86401'"),
     (["--timeout", "soon", "x"], "expected a number, got 'soon'"),
     (["--concurrency", "1001", "x"], "at most 1,000, got 1,001"),
     (["--retries", "101", "x"], "at most 100"),
     (["--rpm", "0", "x"], "at least 1"),
     (["--purpose", "assistants", "x"], "argument --purpose: invalid choice: 'assistants'")],
)
def test_usage_errors_exit_2(argv: list[str], pattern: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        upload_main(argv)
    assert info.value.code == 2
    assert pattern in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [(["delete", "--older-than", "-1"], "expected days from 0 to 36525"),
     (["delete", "--older-than", "nan"], "expected a finite number, got 'nan'"),
     (["delete", "--older-than", "inf"], "expected a finite number, got 'inf'"),
     (["delete", "--older-than", "1e9"], "expected days from 0 to 36525"),
     (["list", "--timeout", "inf"], "expected a finite number"),
     (["content", "--timeout", "1e400", "x"], "expected a finite number")],
)
def test_management_usage_errors_exit_2(argv: list[str], pattern: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert pattern in capsys.readouterr().err


def test_bad_purpose_is_refused_before_anything_is_read_or_sent(
        env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import kimi_files._batch

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the batch ran")

    monkeypatch.setattr(kimi_files._batch, "ingest", must_not_run)
    write(tmp_path / "a.txt", "a")
    with pytest.raises(SystemExit) as info:
        upload_main(["--purpose", "fine-tune", str(tmp_path / "a.txt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fine-tune' (choose from 'batch', 'file-extract', 'image', 'video')" \
        in err
    assert env.requests == []


def test_follow_links_takes_a_link_out_of_the_folder(env: Emulator, tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere" / "notes.txt", "outside the folder")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link.txt").symlink_to(outside)
    write(tmp_path / "in" / "a.txt", "inside")
    assert upload_main(["--no-state", str(tmp_path / "in")]) == 1  # the link is refused
    assert env.filenames() == ["a.txt"]
    assert upload_main(["--no-state", "--follow-links", str(tmp_path / "in")]) == 0
    assert sorted(env.filenames()) == ["a.txt", "link.txt"]  # a.txt reused, the link taken


def test_wait_waits_for_the_run_that_holds_the_state(env: Emulator, tmp_path: Path) -> None:
    import time

    from kimi_files._state import StateStore

    write(tmp_path / "in" / "a.txt", "a")
    state = tmp_path / "s.db"
    cmd = [str(Path(sys.executable).parent / "kimi-upload"), "--state", str(state), "--wait",
           str(tmp_path / "in")]
    environment = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": env.base_url}
    with StateStore(state):  # another run holds it
        proc = subprocess.Popen(cmd, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()  # still waiting, not refused
        assert env.filenames() == []  # and nothing sent while the other run holds it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert env.filenames() == ["a.txt"]


def test_missing_key_and_bad_base_url_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    assert upload_main([str(tmp_path / "a.txt")]) == 2
    assert "MOONSHOT_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    assert upload_main(["--base-url", "htp:/nowhere", str(tmp_path / "a.txt")]) == 2
    assert "Malformed base URL" in capsys.readouterr().err
    assert upload_main(["--base-url", "http://example.com/v1", str(tmp_path / "a.txt")]) == 2
    assert "Refusing plain http" in capsys.readouterr().err


def test_server_answering_html_or_nothing(env: Emulator, tmp_path: Path, no_wait: list[float],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    env.fail_next("html_502", endpoint="list", times=20)
    assert upload_main(["--no-state", str(tmp_path / "a.txt")]) == 1
    err = capsys.readouterr().err
    assert "502 Bad Gateway" in err and "Traceback" not in err and "<html" not in err


def test_management_commands(env: Emulator, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "in" / "报告.txt", "季度收入\n")
    write(tmp_path / "in" / "b.md", "# B\n")
    assert upload_main(["--no-state", "--json", str(tmp_path / "in")]) == 0
    ids = {r["path"]: r["file_id"] for r in _json_lines(capsys.readouterr().out)}
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "报告.txt" in out and "FILENAME" in out
    assert main(["list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["data"]) == 2
    assert main(["quota", "--json"]) == 0
    quota = json.loads(capsys.readouterr().out)
    assert quota["files"] == 2 and quota["max_files"] == 1000 and quota["free_files"] == 998
    assert main(["quota"]) == 0
    assert "files: 2 of 1,000 (998 free)" in capsys.readouterr().out
    fid = ids[str(tmp_path / "in" / "报告.txt")]
    assert main(["content", str(fid)]) == 0
    assert capsys.readouterr().out == "季度收入\n\n"
    assert main(["content", "--all", "-o", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 2 and any(n.endswith("报告.txt.txt") for n in written)
    # delete by filter needs --yes; --dry-run shows
    assert main(["delete", "--match", "*.md"]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert main(["delete", "--match", "*.md", "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out
    assert len(env.filenames()) == 2
    assert main(["delete", "--match", "*.md", "--yes"]) == 0
    assert env.filenames() == ["报告.txt"]
    assert main(["delete", str(fid), "nope"]) == 1
    assert "no file nope" in capsys.readouterr().err
    assert env.filenames() == []
    assert main(["delete"]) == 2


def test_console_scripts_without_key_no_traceback(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "MOONSHOT_API_KEY"}
    write(tmp_path / "a.txt", "a")
    exe = Path(sys.executable).parent / "kimi-upload"
    r = subprocess.run([str(exe), str(tmp_path / "a.txt")], capture_output=True, text=True,
                       env=environment)
    assert r.returncode == 2 and "MOONSHOT_API_KEY" in r.stderr and "Traceback" not in r.stderr


def test_emulator_demo_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "kimi-upload"
    environment = {k: v for k, v in os.environ.items() if k != "MOONSHOT_API_KEY"}
    # the README's demo, as written there
    r = subprocess.run([str(exe), "--emulator", "examples/corpus"], capture_output=True,
                       text=True, env=environment, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "using the bundled emulator" in r.stderr and "uploaded" in r.stdout
    # an image goes to vision (purpose "image"); under file-extract it is refused
    r = subprocess.run([str(exe), "--emulator", "--purpose", "image", "examples/images"],
                       capture_output=True, text=True, env=environment, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), "--emulator", "examples/images"], capture_output=True,
                       text=True, env=environment, timeout=120, cwd=ROOT)
    assert r.returncode == 1 and "--purpose image" in r.stdout, r.stdout
    r = subprocess.run([str(exe), "--emulator", "--json", str(ROOT / "examples" / "corpus")],
                       capture_output=True, text=True, env=environment, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = _json_lines(r.stdout)
    assert len(rows) == 7 and {row["status"] for row in rows} == {"uploaded"}
    assert any(str(row["path"]).endswith("季度报告.txt") for row in rows)


def test_key_never_appears_at_full_verbosity(env: Emulator, tmp_path: Path, no_wait: list[float],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "in" / "a.txt", "a")
    write(tmp_path / "in" / "b.txt", "b")
    write(tmp_path / "in" / "e.txt", "")
    env.fail_next("store_then_drop")
    env.fail_next("html_502", times=2)
    env.fail_next("account_suspended", endpoint="content")
    state = tmp_path / "s.db"
    codes = [
        upload_main(["-vv", "--state", str(state), str(tmp_path / "in")]),
        main(["list", "-vv"]),
        main(["content", "-vv", "whatever"]),
        main(["content", "-vv", env.state.listing()[0].id]),
    ]
    out, err = capsys.readouterr()
    assert codes == [1, 0, 1, 0]
    assert "DEBUG" in err and "Traceback" not in err
    written = out + err + state.read_bytes().decode("latin-1")
    for extra in tmp_path.glob("s.db*"):
        written += extra.read_bytes().decode("latin-1")
    assert API_KEY not in written
    assert API_KEY.encode().hex() not in written


def test_odd_file_names(env: Emulator, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-latin1.txt"  # not valid UTF-8
    with open(raw, "wb") as fh:
        fh.write(b"bonjour\n")
    long_name = "报" * 80 + ".txt"  # 244 bytes, near the file system's limit of 255
    write(folder / long_name, "长文件名\n")
    code = upload_main(["--json", "--no-state", str(folder)])
    out, err = capsys.readouterr()
    rows = _json_lines(out)
    assert code == 0 and {r["status"] for r in rows} == {"uploaded"} and len(rows) == 2
    assert sorted(env.filenames()) == sorted(["caf\ufffd-latin1.txt", long_name])
    assert "not valid UTF-8" in err and "Traceback" not in err


def test_permission_denied_and_fifo_in_a_folder(env: Emulator, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    write(folder / "ok.txt", "fine")
    os.mkfifo(folder / "pipe")
    os.symlink(folder / "loop", folder / "loop")
    code = upload_main(["--json", "--no-state", str(folder)])
    rows = {Path(str(r["path"])).name: r for r in _json_lines(capsys.readouterr().out)}
    assert code == 1
    assert rows["ok.txt"]["status"] == "uploaded"
    assert rows["pipe"]["status"] == "rejected" and "FIFO" in str(rows["pipe"]["error"])
    assert rows["loop"]["status"] == "rejected"
    assert "symbolic link loop" in str(rows["loop"]["error"])


def test_server_that_never_answers_does_not_hang(env: Emulator, tmp_path: Path,
                                                  no_wait: list[float],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.txt", "a")
    env.fail_next("hang", endpoint="list", delay=5, times=3)
    code = upload_main(["--no-state", "--timeout", "0.3", "--retries", "2",
                        str(tmp_path / "a.txt")])
    err = capsys.readouterr().err
    assert code == 1 and "timed out waiting for the server" in err and "Traceback" not in err


def test_malformed_key_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-with a space")
    assert upload_main([str(write(tmp_path / "a.txt", "a"))]) == 2
    err = capsys.readouterr().err
    assert "malformed" in err and "sk-with a space" not in err


def test_options_before_the_command_get_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--base-url", "http://127.0.0.1:9/v1", "list", "--json"])
    assert info.value.code == 2
    assert ("kimi-files: error: options go after the command: kimi-files list --base-url "
            "http://127.0.0.1:9/v1 --json") in capsys.readouterr().err
