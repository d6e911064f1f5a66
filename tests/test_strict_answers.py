"""Answers refused at once when asking again cannot help, and options checked the same way
wherever they are taken: a batch file's content asked for as text, a batch listing whose
``has_more`` is text, a bad folder-walk pattern given to ``extract_many``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._endpoints import _batch_lines
from kimi_files.cli import main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write

REQUEST = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}}


@pytest.fixture
def batch_file(tmp_path: Path, client: kf.KimiFiles) -> str:
    path = write(tmp_path / "in.jsonl", json.dumps(REQUEST) + "\n")
    return client.upload(path, purpose="batch", progress=False).id


def _content_gets(emulator: Emulator, file_id: str) -> int:
    return sum(1 for r in emulator.requests
               if r.method == "GET" and r.path.endswith(f"{file_id}/content"))


def test_a_batch_files_content_asked_for_as_text_is_refused_at_once(
        emulator: Emulator, client: kf.KimiFiles, batch_file: str,
        no_wait: list[float]) -> None:
    with pytest.raises(kf.BatchContentError, match=r"a batch file's JSON Lines, which has no "
                                                   r"extracted text: ask for it raw"):
        client.content(batch_file)
    assert _content_gets(emulator, batch_file) == 1 and no_wait == []  # no retry, no wait
    assert isinstance(kf.BatchContentError("x", status_code=200), kf.MalformedResponseError)
    assert json.loads(client.content(batch_file, raw=True).text) == REQUEST


def test_the_cli_says_to_ask_raw_without_waiting(
        emulator: Emulator, batch_file: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    assert main(["content", batch_file]) != 0
    out, err = capsys.readouterr()
    assert "kimi-files content --raw" in err and "waiting" not in err
    assert "Traceback" not in err and out == ""
    assert _content_gets(emulator, batch_file) == 1
    assert main(["content", "--raw", batch_file]) == 0
    assert json.loads(capsys.readouterr().out) == REQUEST


@pytest.mark.parametrize(("body", "whole"), [
    (json.dumps(REQUEST) + "\n", True),
    (json.dumps(REQUEST) + "\n" + json.dumps({"custom_id": "b", "response": {}}), True),
    (json.dumps(REQUEST) + "\n" + json.dumps(REQUEST)[:40], False),  # cut off in transit
    (json.dumps({"content": 1}), False),  # a broken document: retried like one
    ('{"custom_id": "a"}\n[1, 2]\n', False),
    ("", False),
])
def test_only_whole_batch_lines_are_refused_without_a_retry(body: str, whole: bool) -> None:
    assert _batch_lines(body) is whole


def test_a_batch_listing_whose_has_more_is_text_is_malformed(
        emulator: Emulator, client: kf.KimiFiles, no_wait: list[float]) -> None:
    emulator.fail_next("has_more_text", times=100, endpoint="batch_list")
    with pytest.raises(kf.MalformedResponseError,
                       match=r"GET http://127\.0\.0\.1:\d+/v1/batches\S*: the listing's has_more "
                             r"is 'false', not true or false"):
        client.batches.list()
    emulator.state.clear_faults()
    assert client.batches.list().has_more is False


@pytest.mark.parametrize("call", ["extract_many", "ingest"])
def test_a_pattern_gitignore_cannot_read_is_refused_before_any_request(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, call: str) -> None:
    write(tmp_path / "a.txt", "words\n")
    with pytest.raises(kf.ConfigurationError, match=r"include: bad pattern '\[abc' \(it can "
                                                    r"never match"):
        if call == "extract_many":
            kf.extract_many([tmp_path], client=client, include=["[abc"])
        else:
            kf.ingest([tmp_path], client=client, include=["[abc"])
    assert emulator.requests == []


@pytest.mark.parametrize("to_folder", [False, True])
def test_a_lone_surrogate_in_the_text_is_printed_and_saved_not_a_crash(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, to_folder: bool,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # JSON may hold "\ud800" alone (a broken PDF's text): Python decodes it to a str that
    # strict UTF-8 cannot encode
    doc = write(tmp_path / "doc.txt", "words\n")
    file_id = client.upload(doc, progress=False).id
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    emulator.fail_next("lone_surrogate", endpoint="content")
    out_dir = tmp_path / "out"
    assert main(["content", file_id, *(["-o", str(out_dir)] if to_folder else [])]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Error" not in err
    if to_folder:
        (saved,) = out_dir.iterdir()
        assert saved.read_bytes() == b"words\n\xed\xa0\x80"  # every character kept
    else:
        assert out == "words\n\ufffd\ufffd\ufffd\n"  # shown, the one it cannot encode replaced
