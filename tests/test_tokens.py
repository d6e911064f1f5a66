"""Token counts and budgets: the pure planning, the estimate endpoint (emulated), messages()
fitted to max_tokens with few calls, and the tokens command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_files import ConfigurationError, KimiFiles, MalformedResponseError, ModelNotFoundError
from kimi_files._tokens import MARKER_TOKENS, context_window, plan_cuts, shrink
from kimi_files.cli import main
from kimi_files.emulator import Emulator
from kimi_files.emulator._batches import estimate_tokens, text_tokens

from .conftest import API_KEY, Api, write

EN = "The quick brown fox jumps over the lazy dog. " * 200  # 9,000 characters
ZH = "敏捷的棕色狐狸跳过了懒狗。" * 200  # 2,600 characters, more tokens


def _estimates(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests if r.path.endswith("estimate-token-count"))


# --- pure ---------------------------------------------------------------------------------------------


def test_the_plan_cuts_the_largest_first_and_leaves_room_for_markers() -> None:
    assert plan_cuts([100, 200, 50], 1000) == [100, 200, 50]
    keep = plan_cuts([100, 2000, 50], 1000)
    assert keep[0] == 100 and keep[2] == 50 and keep[1] == 1000 - 150 - MARKER_TOKENS
    keep = plan_cuts([3000, 3000], 1000)
    assert keep[0] == keep[1] and sum(keep) + 2 * MARKER_TOKENS <= 1000
    with pytest.raises(ConfigurationError, match="cannot hold 3 document"):
        plan_cuts([500, 500, 500], 60)


def test_shrink_takes_from_the_largest() -> None:
    assert shrink([100, 500], 100) == [100, 400]
    assert context_window("kimi-k2.5") == 262_144 and context_window("nope") is None


def test_the_emulators_estimate_is_documented_and_deterministic() -> None:
    assert text_tokens("abcd" * 10) == 10 and text_tokens("中文") == 2
    assert estimate_tokens([{"role": "user", "content": "abcd"}]) == 3 + 4 + 1
    assert estimate_tokens([{"role": "user", "content": [{"type": "text", "text": "ab"},
                                                         {"type": "image_url"}]}]) == 3 + 4 + 1 + 256


# --- against the emulator ---------------------------------------------------------------------------


def test_estimate_tokens_sync_and_async(api: Api) -> None:
    assert api.estimate_tokens([{"role": "user", "content": "abcd"}], model="kimi-k2.5") == 8
    with pytest.raises(ModelNotFoundError, match="nope"):
        api.estimate_tokens([{"role": "user", "content": "x"}], model="nope")


def test_a_malformed_estimate_is_an_error(client: KimiFiles, emulator: Emulator,
                                          no_wait: list[float]) -> None:
    emulator.fail_next("no_data", endpoint="tokens", times=10)
    with pytest.raises(MalformedResponseError):
        client.estimate_tokens([{"role": "user", "content": "x"}])


def test_messages_fit_max_tokens_cutting_the_largest_with_few_calls(
        api: Api, emulator: Emulator, tmp_path: Path) -> None:
    en, zh = write(tmp_path / "en.txt", EN), write(tmp_path / "zh.txt", ZH)
    small = write(tmp_path / "small.txt", "small")
    full = api.messages([en, zh, small])
    whole = api.estimate_tokens(full)
    assert whole > 1500
    before = _estimates(emulator)
    out = api.messages([en, zh, small], max_tokens=1500)
    assert _estimates(emulator) - before <= 4  # three documents once each, the list once
    assert api.estimate_tokens(out) <= 1500
    assert set(out.cut) == {str(en), str(zh)} and out[2] == full[2]  # the small one intact
    (en_total, en_kept), (zh_total, zh_kept) = out.cut[str(en)], out.cut[str(zh)]
    assert en_kept / en_total > zh_kept / zh_total  # Chinese costs more tokens per character
    for message in out[:2]:
        assert "characters cut here to fit" in json.loads(message["content"])["content"]
    before = _estimates(emulator)
    again = api.messages([en, zh, small], max_tokens=1500)
    assert again == out and _estimates(emulator) == before  # byte-identical, no call at all


def test_messages_within_the_budget_are_left_whole(client: KimiFiles, tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "short text")
    assert client.messages([a], max_tokens=10_000) == client.messages([a])


def test_max_tokens_is_checked(client: KimiFiles, tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", EN)
    with pytest.raises(ConfigurationError, match="not both"):
        client.messages([a], max_tokens=10, max_chars=10)
    with pytest.raises(ConfigurationError, match="at least 1"):
        client.messages([a], max_tokens=0)
    with pytest.raises(ConfigurationError, match="cannot hold") as info:
        client.messages([a], max_tokens=5)
    assert "so at least " in str(info.value) and "are needed (whole, they take about" in str(
        info.value)
    with pytest.raises(ModelNotFoundError):
        client.messages([a], max_tokens=100, model="nope")


def test_tokens_reports_each_document_the_total_and_the_fit(client: KimiFiles,
                                                            tmp_path: Path) -> None:
    en, zh = write(tmp_path / "en.txt", EN), write(tmp_path / "zh.txt", ZH)
    report = client.tokens([en, zh, tmp_path / "missing.txt"], model="moonshot-v1-8k")
    assert list(report.documents) == [str(en), str(zh)]
    assert report.documents[str(zh)] > report.documents[str(en)]
    assert report.total <= sum(report.documents.values()) and report.context_window == 8192
    assert report.fits is True and list(report.failed) == [str(tmp_path / "missing.txt")]
    assert client.tokens([en, zh], model="moonshot-v1-8k").total == report.total


# --- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


def test_the_tokens_command(env: Emulator, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    en = write(tmp_path / "en.txt", EN * 4)
    assert main(["tokens", "--model", "moonshot-v1-8k", "--json", str(en)]) == 1  # too big
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["path"] == str(en) and lines[-1]["fits"] is False
    assert lines[-1]["context_window"] == 8192
    assert main(["tokens", str(en)]) == 0
    assert "fits kimi-k2.5's context window of 262,144" in capsys.readouterr().out


def test_messages_max_tokens_on_the_command_line(env: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    en = write(tmp_path / "en.txt", EN)
    assert main(["messages", "--max-tokens", "300", str(en)]) == 0
    out, err = capsys.readouterr()
    with KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        assert c.estimate_tokens(json.loads(out)) <= 300
    assert "(--max-tokens)" in err


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=8), st.integers(0, 20_000))
def test_the_plan_always_fits_and_cuts_only_the_largest(counts: list[int], budget: int) -> None:
    try:
        keep = plan_cuts(counts, budget)
    except ConfigurationError:
        assert budget < len(counts) * MARKER_TOKENS  # only a budget too small for the markers
        return
    cut = [i for i, (k, n) in enumerate(zip(keep, counts, strict=True)) if k < n]
    assert all(0 <= k <= n for k, n in zip(keep, counts, strict=True))
    assert sum(keep) + len(cut) * MARKER_TOKENS <= budget or not cut
    if not cut:
        assert sum(counts) <= budget
    for i in cut:  # every document cut was larger than every one left whole
        assert all(counts[i] >= counts[j] for j in range(len(counts)) if j not in cut)


def test_counts_are_cached_per_model(client: KimiFiles, emulator: Emulator,
                                     tmp_path: Path) -> None:
    docs = [write(tmp_path / "a.txt", EN), write(tmp_path / "b.txt", ZH)]
    client.tokens(docs)
    before = _estimates(emulator)
    assert before == 3  # each document, then the list
    client.tokens(docs)
    assert _estimates(emulator) == before
    client.tokens(docs, model="moonshot-v1-128k")
    assert _estimates(emulator) == before + 3  # counted again for that model


def test_a_session_fits_max_tokens_too_and_still_cleans_up(client: KimiFiles, emulator: Emulator,
                                                           tmp_path: Path) -> None:
    en = write(tmp_path / "en.txt", EN)
    with client.session() as s:
        out = s.messages([en], max_tokens=500)
        assert client.estimate_tokens(out) <= 500 and list(out.cut) == [str(en)]
    assert emulator.filenames() == []  # the file it stored was deleted


def test_a_path_given_twice_is_counted_once(client: KimiFiles, tmp_path: Path) -> None:
    en = write(tmp_path / "en.txt", EN)
    once = client.tokens([en])
    twice = client.tokens([en, str(en)])
    assert list(twice.documents) == [str(en)] and twice.total == once.total


def test_a_document_left_out_is_said_once(env: Emulator, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    en = write(tmp_path / "en.txt", EN)
    missing = str(tmp_path / "missing.txt")
    for command in (["tokens"], ["messages"]):
        assert main([*command, str(en), missing]) == 1
        err = capsys.readouterr().err
        assert [x for x in err.splitlines() if "missing.txt" in x] == [err.splitlines()[0]]
        assert "1 document(s) left out (named above)" in err


def test_messages_model_without_max_tokens_is_said_to_be_ignored(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    en = write(tmp_path / "en.txt", EN)
    assert main(["messages", "--model", "moonshot-v1-8k", str(en)]) == 0
    assert "--model moonshot-v1-8k is ignored" in capsys.readouterr().err
