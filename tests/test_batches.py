"""The platform's Batch API: the pure input rules, split and join; client.batches (sync and
async) against the emulator; the emulator's batches; the CLI's four steps; the openai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_files import (
    APIConnectionError,
    BatchAlreadySubmittedError,
    BatchCancelledError,
    BatchExpiredError,
    BatchFailedError,
    BatchInputError,
    BatchNotFinishedError,
    ConfigurationError,
    InvalidRequestError,
    KimiFiles,
    NotFoundError,
)
from kimi_files._batch_flow import check_file, poll_delay, submit_steps
from kimi_files._batch_input import (
    RULES,
    InputChecker,
    PartPlanner,
    custom_id_for,
    join_results,
    request_line,
)
from kimi_files._batch_models import Batch
from kimi_files.cli import main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, Api, write

MSG = {"role": "system", "content": "doc"}


def _line(cid: str = "a", *, model: str = "kimi-k2.5", **over: Any) -> bytes:
    row: dict[str, Any] = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": model, "messages": [MSG]}}
    row.update(over)
    return json.dumps(row).encode() + b"\n"


def _check(lines: list[bytes], name: str = "in.jsonl", **kw: Any) -> InputChecker:
    return InputChecker(name, **kw).feed_all(lines)


# --- the pure rules ---------------------------------------------------------------------------------


def test_a_good_input_passes_every_rule() -> None:
    c = _check([_line("a"), b"\n", _line("b")])
    assert c.ok and c.requests == 2 and c.model == "kimi-k2.5" and c.parts == [3]


@pytest.mark.parametrize(("lines", "line", "rule"), [
    ([_line("a"), b"{not json\n"], 2, "json"),
    ([_line("a"), b"[1, 2]\n"], 2, "json"),
    ([b"\xff\xfe\n"], 1, "json"),
    ([_line("a"), _line("", )], 2, "custom_id"),
    ([_line("a"), _line(custom_id=None)], 2, "custom_id"),
    ([_line("a"), _line("b"), _line("a")], 3, "unique_custom_id"),
    ([_line("a", method="GET")], 1, "method"),
    ([_line("a", url="/v1/embeddings")], 1, "url"),
    ([_line("a", body="text")], 1, "body"),
    ([_line("a", body={"model": "kimi-k2.5"})], 1, "body"),
    ([_line("a"), _line("b", model="moonshot-v1-8k")], 2, "one_model"),
    ([], 0, "not_empty"),
    ([b"\n", b"  \n"], 0, "not_empty"),
])
def test_each_refusal_names_its_line_and_rule(lines: list[bytes], line: int, rule: str) -> None:
    c = _check(lines)
    assert not c.ok
    assert [(v.line, v.rule) for v in c.violations] == [(line, rule)]
    assert RULES[rule] in str(c.violations[0])
    assert (f"line {line}:" if line else "the file:") in str(c.violations[0])


def test_the_name_must_be_jsonl_and_duplicates_name_the_first_line() -> None:
    c = _check([_line("x"), _line("x")], name="in.json")
    assert [v.rule for v in c.violations] == ["jsonl_name", "unique_custom_id"]
    assert "also on line 1" in c.violations[1].message


def test_a_line_over_the_limit_is_refused_and_a_large_file_is_split_between_lines() -> None:
    lines = [_line(f"id{i}") for i in range(10)]
    size = len(lines[0])
    c = _check(lines, limit=size * 3)
    assert c.ok and c.parts == [3, 3, 3, 1] and sum(c.parts) == 10
    big = _check([_line("a", body={"model": "m", "messages": [{"content": "x" * 500}]})],
                 limit=200)
    assert [v.rule for v in big.violations] == ["line_size"]


def test_the_part_planner_keeps_each_part_under_the_limit() -> None:
    p = PartPlanner(10)
    assert [p.feed(n) for n in (4, 4, 4, 10, 11, 1)] == [True, True, True, True, False, True]
    assert p.parts == [2, 1, 1, 1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 60))
def test_parts_hold_every_line_in_order_each_under_the_limit(sizes: list[int],
                                                             limit: int) -> None:
    p = PartPlanner(limit)
    placed = [n for n in sizes if p.feed(n)]
    assert placed == [n for n in sizes if n <= limit] and sum(p.parts) == len(placed)
    start = 0
    for count in p.parts:
        assert count >= 1 and sum(placed[start:start + count]) <= limit
        if start + count < len(placed):  # a part ends only when the next line would not fit
            assert sum(placed[start:start + count + 1]) > limit
        start += count


def test_many_refusals_are_counted_and_the_first_kept() -> None:
    c = _check([b"x\n"] * 50, keep=5)
    assert c.count == 50 and len(c.violations) == 5


def test_custom_ids_and_lines_are_stable() -> None:
    assert custom_id_for("docs/a.pdf") == custom_id_for("docs/a.pdf") != custom_id_for("docs/b")
    one = request_line("doc-1", "kimi-k2.5", {"role": "system", "content": "中文"}, "Q?")
    assert one == request_line("doc-1", "kimi-k2.5", {"role": "system", "content": "中文"}, "Q?")
    row = json.loads(one)
    assert row["body"]["messages"] == [{"role": "system", "content": "中文"},
                                       {"role": "user", "content": "Q?"}]
    assert "中文".encode() in one and one.endswith(b"\n")


def _out(cid: str, text: str = "answer") -> bytes:
    return json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": text}}], "usage": {"total_tokens": 3}}},
        "error": None}).encode()


def test_the_join_follows_the_input_order_and_says_what_is_missing() -> None:
    ids = {"a": "a.pdf", "b": "b.pdf", "c": "c.pdf"}
    err = json.dumps({"custom_id": "b", "response": {"status_code": 400, "body": {
        "error": {"type": "invalid_request_error", "message": "bad"}}}}).encode()
    rows = list(join_results(ids, [_out("x", "stray"), _out("a")], [err, b"garbage"]))
    assert [(r["custom_id"], r["path"], r["status"]) for r in rows] == [
        ("a", "a.pdf", "ok"), ("b", "b.pdf", "error"), ("c", "c.pdf", "missing"),
        ("x", None, "ok"), (None, None, "error")]
    assert rows[0]["answer"] == "answer" and rows[0]["usage"] == {"total_tokens": 3}
    assert rows[1]["error"] == {"type": "invalid_request_error", "message": "bad"}
    assert "line 2 of the error file" in rows[4]["error"]["message"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdefgh"), unique=True), st.data())
def test_every_request_has_exactly_one_result_in_input_order(ids: list[str], data: Any) -> None:
    answered = data.draw(st.lists(st.sampled_from(ids), unique=True) if ids else st.just([]))
    failed = [i for i in ids if i not in answered and data.draw(st.booleans())]
    err = [json.dumps({"custom_id": i, "response": None,
                       "error": {"code": "x", "message": "m"}}).encode() for i in failed]
    rows = list(join_results({i: f"{i}.pdf" for i in ids}, [_out(i) for i in answered], err))
    assert [r["custom_id"] for r in rows] == ids and all(r["path"] == f"{r['custom_id']}.pdf"
                                                         for r in rows)
    for r in rows:
        want = ("ok" if r["custom_id"] in answered else
                "error" if r["custom_id"] in failed else "missing")
        assert r["status"] == want and (r["answer"] is None) == (want != "ok")


def test_poll_delays_grow_to_a_ceiling() -> None:
    assert [poll_delay(n) for n in range(3)] == [2.0, 3.0, 4.5]
    assert poll_delay(50) == 60.0


def test_a_failed_batch_is_an_error_with_the_platforms_errors() -> None:
    b = Batch.from_dict({"id": "batch_1", "status": "failed", "request_counts": {"total": 2},
                         "errors": {"object": "list", "data": [
                             {"code": "mismatched_model", "line": 2, "message": "same model"}]}})
    error = b.error()
    assert isinstance(error, BatchFailedError) and error.batch_id == "batch_1"
    assert error.errors[0]["line"] == 2 and "mismatched_model (line 2): same model" in str(error)
    assert Batch.from_dict({"id": "b", "status": "completed"}).error() is None


# --- client.batches against the emulator -------------------------------------------------------------


@pytest.fixture
def stepped(emulator: Emulator, no_wait: list[float]) -> Emulator:
    """Batches move one phase each time they are looked at; no wait sleeps."""
    emulator.state.batches.phase_seconds = None
    emulator.state.batches.steps_per_poll = 1
    return emulator


def _docs(tmp_path: Path, n: int = 4) -> list[Path]:
    return [write(tmp_path / "docs" / f"d{i}.txt", f"document {i} " * (i + 1)) for i in range(n)]


def test_from_documents_to_answers_sync_and_async(api: Api, stepped: Emulator,
                                                  tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    req = tmp_path / "req.jsonl"
    built = api.wait(api.client.batches.build(docs, model="kimi-k2.5", prompt="Summarise",
                                              output=req))
    assert list(built.ids.values()) == [str(d) for d in docs] and not built.failed
    assert api.wait(api.client.batches.check(req)).requests == 4
    manifest = api.wait(api.client.batches.submit(req))
    assert manifest.path == tmp_path / "req.jsonl.batches.json" and len(manifest.ids) == 1
    seen: list[str] = []
    done = api.wait(api.client.batches.wait(manifest, on_update=lambda bs: seen.append(
        bs[0].status)))
    assert done[0].status == "completed" and seen[-1] == "completed" and "in_progress" in seen
    report = api.wait(api.client.batches.results(manifest.path, tmp_path / "out.jsonl"))
    assert report.counts == {"ok": 4, "error": 0, "missing": 0}
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(d) for d in docs]
    for r in rows:  # the emulator's answer names its request: the join is right
        assert r["answer"].startswith(f"[emulated answer] {r['custom_id']}:")
        assert r["usage"]["total_tokens"] > 0


def test_build_writes_the_same_bytes_twice_and_reads_texts_from_the_cache(
        client: KimiFiles, emulator: Emulator, tmp_path: Path) -> None:
    docs = _docs(tmp_path, 3)
    client.batches.build(docs, model="kimi-k2.5", prompt="Q", output=tmp_path / "a.jsonl")
    before = len(emulator.requests)
    client.batches.build(docs, model="kimi-k2.5", prompt="Q", output=tmp_path / "b.jsonl")
    assert len(emulator.requests) == before  # every text came from the cache
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_build_leaves_out_what_cannot_be_read_and_refuses_an_empty_prompt(
        client: KimiFiles, tmp_path: Path) -> None:
    docs = [*_docs(tmp_path, 1), tmp_path / "missing.txt"]
    report = client.batches.build(docs, model="kimi-k2.5", prompt="Q", output=tmp_path / "r.jsonl")
    assert list(report.failed) == [str(tmp_path / "missing.txt")] and len(report.ids) == 1
    with pytest.raises(ConfigurationError, match="a batch needs a prompt"):
        client.batches.build(docs, model="kimi-k2.5", prompt=" ", output=tmp_path / "r.jsonl")


def test_submit_refuses_a_broken_input_before_sending_anything(client: KimiFiles,
                                                               emulator: Emulator,
                                                               tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.jsonl", _line("a") + _line("a", model="other"))
    with pytest.raises(BatchInputError) as info:
        client.batches.submit(bad)
    assert info.value.rule == "unique_custom_id" and info.value.path == str(bad)
    assert [v.rule for v in info.value.violations] == ["unique_custom_id", "one_model"]
    assert "line 2" in str(info.value) and "nothing was sent" in str(info.value)
    assert emulator.requests == []


def test_a_large_input_is_split_into_batches_joined_back_by_one_manifest(
        client: KimiFiles, stepped: Emulator, tmp_path: Path) -> None:
    docs = _docs(tmp_path, 5)
    req = tmp_path / "req.jsonl"
    client.batches.build(docs, model="kimi-k2.5", prompt="Q", output=req)
    limit = max(len(x) for x in req.read_bytes().splitlines(keepends=True)) * 2
    manifest = client.run(submit_steps(client, req, limit=limit))
    assert len(manifest.ids) == 3 and [b["lines"] for b in manifest.batches] == [2, 2, 1]
    client.batches.wait(manifest.path)  # type: ignore[arg-type]
    report = client.batches.results(manifest.path, tmp_path / "out.jsonl")  # type: ignore[arg-type]
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report.counts["ok"] == 5 and [r["path"] for r in rows] == [str(d) for d in docs]
    assert not list(tmp_path.glob("kimi-batch-parts-*"))


def test_submit_reuses_the_input_the_account_holds(client: KimiFiles, emulator: Emulator,
                                                   tmp_path: Path) -> None:
    req = write(tmp_path / "req.jsonl", _line("a") + _line("b"))
    first = client.batches.submit(req)
    second = client.batches.submit(req, force=True)
    assert first.batches[0]["input_file_id"] == second.batches[0]["input_file_id"]
    assert len(emulator.uploads()) - 2 == 1  # two creates, one upload
    assert first.ids != second.ids


def test_a_failed_batch_raises_with_the_platforms_line_errors(client: KimiFiles,
                                                              stepped: Emulator,
                                                              tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.jsonl", _line("a") + _line("a") + _line("b", method="GET"))
    up = client.upload(bad, purpose="batch")
    batch = client.batches.create(input_file_id=up.id)
    with pytest.raises(BatchFailedError) as info:
        client.batches.wait(batch)
    codes = [(e["code"], e["line"]) for e in info.value.errors]
    assert codes == [("duplicate_custom_id", 2), ("invalid_method", 3)]
    assert info.value.status == "failed" and "duplicate_custom_id (line 2)" in str(info.value)
    with pytest.raises(BatchFailedError):
        client.batches.results(batch, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_requests_that_fail_are_joined_with_their_error(client: KimiFiles, stepped: Emulator,
                                                        tmp_path: Path) -> None:
    stepped.fail_next("batch_line_errors", endpoint="batch_create", limit=2)
    req = write(tmp_path / "req.jsonl", b"".join(_line(f"r{i}") for i in range(4)))
    manifest = client.batches.submit(req)
    [done] = client.batches.wait(manifest)
    assert done.request_counts.failed == 2 and done.error_file_id
    report = client.batches.results(manifest, tmp_path / "out.jsonl", ids={
        f"r{i}": f"p{i}" for i in range(4)})
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error"]
    assert "emulated failure" in rows[1]["error"]["message"] and report.counts["error"] == 2


def test_an_expired_batch_raises_and_its_results_say_what_is_missing(
        client: KimiFiles, stepped: Emulator, tmp_path: Path) -> None:
    stepped.fail_next("batch_expire", endpoint="batch_create")
    stepped.state.batches.progress_steps = 4
    req = write(tmp_path / "req.jsonl", b"".join(_line(f"r{i}") for i in range(4)))
    manifest = client.batches.submit(req)
    with pytest.raises(BatchExpiredError) as info:
        client.batches.wait(manifest)
    assert "expired before it was done" in str(info.value) and info.value.status == "expired"
    report = client.batches.results(manifest, tmp_path / "out.jsonl")
    assert report.counts == {"ok": 2, "error": 2, "missing": 0}
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["error"]["code"] for r in rows if r["error"]] == ["batch_expired"] * 2


def test_cancel_and_results_before_the_end(client: KimiFiles, emulator: Emulator,
                                          tmp_path: Path) -> None:
    emulator.state.batches.phase_seconds = None
    req = write(tmp_path / "req.jsonl", _line("a") + _line("b"))
    manifest = client.batches.submit(req)
    with pytest.raises(BatchNotFinishedError, match="wait for it first"):
        client.batches.results(manifest, tmp_path / "out.jsonl")
    assert client.batches.cancel(manifest.ids[0]).status == "cancelling"
    emulator.state.batches.advance()
    assert client.batches.retrieve(manifest.ids[0]).status == "cancelled"
    with pytest.raises(NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(InvalidRequestError, match="cannot be cancelled"):
        up = client.upload(write(tmp_path / "x.jsonl", _line("z")), purpose="batch")
        b = client.batches.create(input_file_id=up.id)
        emulator.state.batches.advance(4)
        client.batches.cancel(b.id)


def test_create_is_not_sent_twice_after_a_lost_answer_but_retried_after_a_429(
        client: KimiFiles, emulator: Emulator, tmp_path: Path, no_wait: list[float]) -> None:
    up = client.upload(write(tmp_path / "r.jsonl", _line("a")), purpose="batch")
    emulator.fail_next("drop", endpoint="batch_create")
    with pytest.raises(APIConnectionError, match="may have been created all the same"):
        client.batches.create(input_file_id=up.id)
    creates = [r for r in emulator.requests if r.path == "/v1/batches" and r.method == "POST"]
    assert len(creates) == 1
    emulator.fail_next("max_rpm", endpoint="batch_create")
    assert client.batches.create(input_file_id=up.id).status == "validating"
    creates = [r for r in emulator.requests if r.path == "/v1/batches" and r.method == "POST"]
    assert len(creates) == 3


def test_the_emulator_refuses_bad_parameters(client: KimiFiles, tmp_path: Path) -> None:
    up = client.upload(write(tmp_path / "r.jsonl", _line("a")), purpose="batch")
    with pytest.raises(InvalidRequestError, match="completion_window"):
        client.batches.create(input_file_id=up.id, completion_window="1h")
    with pytest.raises(InvalidRequestError, match="endpoint"):
        client.batches.create(input_file_id=up.id, endpoint="/v1/embeddings")
    doc = client.upload(write(tmp_path / "d.txt", "text"))
    with pytest.raises(InvalidRequestError, match="purpose 'batch'"):
        client.batches.create(input_file_id=doc.id)
    with pytest.raises(ConfigurationError, match="at most 16 metadata keys"):
        client.batches.create(input_file_id=up.id, metadata={str(i): "v" for i in range(17)})


def test_results_cleanup_deletes_the_batches_files(client: KimiFiles, stepped: Emulator,
                                                   tmp_path: Path) -> None:
    req = write(tmp_path / "req.jsonl", _line("a"))
    manifest = client.batches.submit(req)
    client.batches.wait(manifest)
    report = client.batches.results(manifest, tmp_path / "out.jsonl", cleanup=True)
    assert len(report.deleted) == 2 and stepped.filenames() == []


def test_list_pages_newest_first(client: KimiFiles, tmp_path: Path) -> None:
    up = client.upload(write(tmp_path / "r.jsonl", _line("a")), purpose="batch")
    made = [client.batches.create(input_file_id=up.id).id for _ in range(3)]
    listed = client.batches.list(limit=2)
    assert len(listed) == 2 and listed.has_more
    rest = client.batches.list(after=listed.data[-1].id)
    assert sorted([b.id for b in listed] + [b.id for b in rest]) == sorted(made)


def test_check_file_reads_a_missing_file_as_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="cannot be read"):
        check_file(tmp_path / "none.jsonl")


# --- the openai SDK against the emulator --------------------------------------------------------------


@pytest.fixture
def sdk(emulator: Emulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=emulator.base_url, max_retries=0) as c:
        yield c


def test_the_openai_sdk_drives_the_emulators_batches(sdk: openai.OpenAI, emulator: Emulator,
                                                     tmp_path: Path) -> None:
    emulator.state.batches.phase_seconds = None
    f = sdk.files.create(file=write(tmp_path / "r.jsonl", _line("a") + _line("b")),
                         purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                           completion_window="24h", metadata={"k": "v"})
    assert b.status == "validating" and b.metadata == {"k": "v"}
    emulator.state.batches.advance(4)
    got = sdk.batches.retrieve(b.id)
    assert got.status == "completed" and got.request_counts is not None
    assert got.request_counts.completed == 2 and got.output_file_id
    assert [x.id for x in sdk.batches.list().data] == [b.id]
    out = sdk.files.content(got.output_file_id).text.splitlines()
    assert [json.loads(x)["custom_id"] for x in out] == ["a", "b"]
    cancelled = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
    assert sdk.batches.cancel(cancelled.id).status == "cancelling"


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, stepped: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", stepped.base_url)
    return stepped


def test_four_commands_from_a_folder_to_answers(env: Emulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _docs(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q?", "docs",
                 "-o", "requests.jsonl"]) == 0
    assert main(["batch", "check", "requests.jsonl"]) == 0
    assert "3 request(s) for model kimi-k2.5" in capsys.readouterr().out
    assert main(["batch", "submit", "requests.jsonl", "--metadata", "k=v"]) == 0
    batch_id = capsys.readouterr().out.strip()
    assert env.state.batches.batches[batch_id].metadata == {"k": "v"}
    assert main(["batch", "wait", "requests.jsonl.batches.json"]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["batch", "results", "requests.jsonl.batches.json", "-o", "results.jsonl"]) == 0
    rows = [json.loads(x) for x in Path("results.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(tmp_path / "docs" / f"d{i}.txt") for i in range(3)]
    assert all(r["status"] == "ok" and r["custom_id"] in r["answer"] for r in rows)
    assert "3 answered, 0 failed, 0 missing" in capsys.readouterr().err


def test_check_names_each_line_and_rule_and_exits_1(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "bad.jsonl", _line("a") + b"nope\n" + _line("a"))
    assert main(["batch", "check", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [x.split(": ", 1)[1].split(":")[0] for x in out] == ["line 2", "line 3"]
    assert "rule json" in out[0] and "rule unique_custom_id" in out[1]


def test_ctrl_c_while_waiting_leaves_the_batch_running(env: Emulator, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    env.state.batches.steps_per_poll = 0
    req = write(tmp_path / "r.jsonl", _line("a"))
    assert main(["batch", "submit", str(req)]) == 0
    batch_id = capsys.readouterr().out.strip()

    def interrupted(*args: Any, **kwargs: Any) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr("kimi_files._retry.sleep", interrupted)
    assert main(["batch", "wait", batch_id]) == 130
    err = capsys.readouterr().err
    assert f"the batch keeps running. Resume with: kimi-files batch wait {batch_id}" in err

    def terminated(*args: Any, **kwargs: Any) -> bool:
        from kimi_files.cli._common import _Signalled

        raise _Signalled(15)

    monkeypatch.setattr("kimi_files._retry.sleep", terminated)
    assert main(["batch", "wait", batch_id]) == 143
    assert "the batch keeps running" in capsys.readouterr().err
    assert env.state.batches.batches[batch_id].status == "validating"  # neither cancelled nor ended


def test_a_failed_batch_fails_wait_with_its_errors(env: Emulator, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        up = c.upload(write(tmp_path / "bad.jsonl", _line("a") + _line("a")), purpose="batch")
        batch = c.batches.create(input_file_id=up.id)
    assert main(["batch", "wait", batch.id]) == 1
    captured = capsys.readouterr()
    assert "error duplicate_custom_id line 2" in captured.out
    assert "failed: the platform refused its input" in captured.err


def test_build_says_what_it_left_out_and_exits_1(env: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    [doc] = _docs(tmp_path, 1)
    write(tmp_path / "scan.txt", "x" * 6000)  # "text extract error": the service finds no text
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", str(doc),
                 str(tmp_path / "nope.txt"), str(tmp_path / "scan.txt"),
                 "-o", str(tmp_path / "r.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "nope.txt: left out" in err and "scan.txt: left out of the batch" in err
    assert "wrote 1 request(s)" in err and "2 left out" in err
    assert len((tmp_path / "r.jsonl").read_bytes().splitlines()) == 1


def test_the_emulators_batches_move_by_its_injectable_clock(client: KimiFiles, emulator: Emulator,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(emulator.state, "clock", lambda: now[0])
    emulator.state.batches.phase_seconds = 10
    up = client.upload(write(tmp_path / "r.jsonl", _line("a") + _line("b")), purpose="batch")
    batch = client.batches.create(input_file_id=up.id)
    seen = []
    for _ in range(5):
        b = client.batches.retrieve(batch.id)
        seen.append((b.status, b.request_counts.completed))
        now[0] += 10
    assert seen == [("validating", 0), ("in_progress", 0), ("in_progress", 1),
                    ("finalizing", 2), ("completed", 2)]
    assert client.batches.retrieve(batch.id).status == "completed"  # and stays so


def test_a_missing_manifest_is_said_before_a_key_is_asked_for(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for step in (["results", str(tmp_path / "none.batches.json"), "-o", str(tmp_path / "o")],
                 ["status", str(tmp_path / "none.batches.json")],
                 ["wait", str(tmp_path / "none.batches.json")]):
        assert main(["batch", *step]) == 2
        assert "none.batches.json: no such manifest file" in capsys.readouterr().err


def test_the_resource_sync_and_async_and_a_cancelled_batch(api: Api, emulator: Emulator,
                                                           tmp_path: Path,
                                                           no_wait: list[float]) -> None:
    emulator.state.batches.phase_seconds = None
    up = api.upload(write(tmp_path / "r.jsonl", b"".join(_line(f"r{i}") for i in range(4))),
                    purpose="batch")
    created = api.wait(api.client.batches.create(input_file_id=up.id, metadata={"k": "v"}))
    assert created.status == "validating" and created.metadata == {"k": "v"}
    assert [b.id for b in api.wait(api.client.batches.list())] == [created.id]
    emulator.state.batches.advance(2)  # validated, and half of the requests answered
    assert api.wait(api.client.batches.cancel(created.id)).status == "cancelling"
    emulator.state.batches.advance()
    got = api.wait(api.client.batches.retrieve(created.id))
    assert got.status == "cancelled" and got.request_counts.completed == 2
    with pytest.raises(BatchCancelledError, match="was cancelled"):
        api.wait(api.client.batches.wait(created))
    report = api.wait(api.client.batches.results(created, tmp_path / "out.jsonl"))
    assert report.counts == {"ok": 2, "error": 2, "missing": 0}
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["r0", "r1", "r2", "r3"]  # no map: file order
    assert rows[3]["error"]["code"] == "batch_cancelled" and rows[3]["path"] is None


def test_build_raises_what_is_not_a_documents_own_failure(emulator: Emulator,
                                                          tmp_path: Path) -> None:
    from kimi_files import AuthenticationError

    docs = _docs(tmp_path, 2)
    with KimiFiles(api_key="sk-wrong-0123456789", base_url=emulator.base_url) as c, \
            pytest.raises(AuthenticationError):
        c.batches.build(docs, model="kimi-k2.5", prompt="Q", output=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists() and not list(tmp_path.glob(".r.jsonl.*"))


def test_prompt_file_and_bad_options(env: Emulator, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    [doc] = _docs(tmp_path, 1)
    prompt = write(tmp_path / "q.txt", "Which year?\n")
    req = tmp_path / "r.jsonl"
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt-file", str(prompt), str(doc),
                 "-o", str(req)]) == 0
    assert json.loads(req.read_bytes())["body"]["messages"][1]["content"] == "Which year?\n"
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt-file", str(tmp_path / "none"),
                 str(doc), "-o", str(req)]) == 2
    assert main(["batch", "submit", str(req), "--metadata", "novalue"]) == 2
    err = capsys.readouterr().err
    assert "--prompt-file" in err and "cannot be read" in err and "KEY=VALUE" in err


def test_cleanup_keeps_an_input_another_running_batch_reads(client: KimiFiles, stepped: Emulator,
                                                            tmp_path: Path) -> None:
    req = write(tmp_path / "req.jsonl", _line("a"))
    first = client.batches.submit(req)
    client.batches.wait(first)
    stepped.state.batches.steps_per_poll = 0
    second = client.batches.submit(req, force=True)  # the same content: its input is reused
    assert second.batches[0]["input_file_id"] == first.batches[0]["input_file_id"]
    report = client.batches.results(first, tmp_path / "out.jsonl", cleanup=True)
    assert first.batches[0]["input_file_id"] not in report.deleted and len(report.deleted) == 1
    assert first.batches[0]["input_file_id"] in {f.id for f in client.list()}


def test_an_interrupted_build_leaves_no_file(client: KimiFiles, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_files._steps import Blocking

    def stopped(*args: Any) -> Any:
        raise KeyboardInterrupt

    def content_steps_for(*args: Any) -> Any:
        yield Blocking(stopped)

    monkeypatch.setattr("kimi_files._chat.content_steps_for", content_steps_for)
    with pytest.raises(KeyboardInterrupt):
        client.batches.build(_docs(tmp_path, 1), model="kimi-k2.5", prompt="Q",
                             output=tmp_path / "r.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_cleanup_deletes_only_an_input_submit_itself_uploaded(client: KimiFiles,
                                                               stepped: Emulator,
                                                               tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    mine = write(tmp_path / "mine.jsonl", _line("a"))
    up = client.upload(mine, purpose="batch")  # the user's own upload
    manifest = client.batches.submit(mine)
    assert manifest.batches[0]["input_file_id"] == up.id
    assert manifest.batches[0]["input_uploaded"] is False
    assert "reused, so results --cleanup will keep it" in caplog.text
    client.batches.wait(manifest)
    report = client.batches.results(manifest.path, tmp_path / "out.jsonl",  # type: ignore[arg-type]
                                    cleanup=True)
    assert up.id not in report.deleted and len(report.deleted) == 1
    assert up.id in {f.id for f in client.list()}
    assert f"kept the input file {up.id}: submit did not upload it" in caplog.text


def test_cleanup_of_a_bare_batch_id_never_deletes_its_input(client: KimiFiles, stepped: Emulator,
                                                            tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    up = client.upload(write(tmp_path / "r.jsonl", _line("a")), purpose="batch")
    batch = client.batches.create(input_file_id=up.id)
    client.batches.wait(batch)
    report = client.batches.results(batch.id, tmp_path / "out.jsonl", cleanup=True)
    assert up.id not in report.deleted and len(report.deleted) == 1
    assert up.id in {f.id for f in client.list()}
    assert "no manifest says submit uploaded it (a bare batch id)" in caplog.text


@pytest.mark.parametrize("command", ["submit", "build", "messages"])
def test_ctrl_c_during_an_upload_lets_it_end_and_a_rerun_reuses_it(
        env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: str) -> None:
    import os
    import signal

    doc = write(tmp_path / "doc.jsonl", _line("a"))
    argv = {"submit": ["batch", "submit", str(doc)],
            "build": ["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", str(doc),
                      "-o", str(tmp_path / "out.jsonl")],
            "messages": ["messages", str(doc)]}[command]
    original = KimiFiles.create

    def interrupted_in_flight(self: KimiFiles, *args: Any, **kwargs: Any) -> Any:
        from kimi_files._steps import _halt

        stored = original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the answer is on its way back
        halt = _halt.get()
        if halt is not None:  # the main thread took it before the upload ends
            assert halt.wait(10)
        return stored

    monkeypatch.setattr(KimiFiles, "create", interrupted_in_flight)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "waiting for the upload in flight to end and be recorded" in err
    assert "interrupted (Ctrl-C)" in err
    def stored() -> int:
        return len([r for r in env.uploads() if r.path == "/v1/files"])

    assert stored() == 1 and not env.state.batches.batches
    monkeypatch.setattr(KimiFiles, "create", original)
    assert main(argv) == 0
    assert stored() == 1  # the re-run reused the upload the first run recorded


def test_a_halt_lets_local_work_run_and_starts_no_new_request() -> None:
    import threading

    from kimi_files._steps import Blocking, Halted, Request, halts_with, run_sync

    halt = threading.Event()
    done: list[str] = []

    def steps() -> Any:
        yield Blocking(halt.set)  # Ctrl-C arrives while the upload is in flight
        yield Blocking(done.append, ("recorded",))  # its record is still kept
        try:
            yield Request("POST", "batches")  # no new request starts
        except Halted:
            done.append("halted")
            raise

    with halts_with(halt), pytest.raises(KeyboardInterrupt):
        run_sync(steps(), client=None)
    assert done == ["recorded", "halted"]


def _two_part_submit_whose_second_create_is_lost(client: KimiFiles, emulator: Emulator,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> tuple[Path, int]:
    import kimi_files._batch_flow as flow

    req = write(tmp_path / "req.jsonl", b"".join(_line(f"r{i}") for i in range(4)))
    limit = len(_line("r0")) * 2
    original = flow.create_batch_steps
    calls: list[int] = []

    def second_lost(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            emulator.fail_next("drop", endpoint="batch_create")
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(flow, "create_batch_steps", second_lost)
    with pytest.raises(APIConnectionError, match="may have been created all the same"):
        client.run(submit_steps(client, req, limit=limit))
    monkeypatch.setattr(flow, "create_batch_steps", original)
    return req, limit


def test_submit_again_resumes_and_creates_only_the_parts_not_created(
        client: KimiFiles, emulator: Emulator, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    req, limit = _two_part_submit_whose_second_create_is_lost(client, emulator, tmp_path,
                                                              monkeypatch)
    first = json.loads((tmp_path / "req.jsonl.batches.json").read_text())
    assert [b["index"] for b in first["batches"]] == [1] and set(first["uploads"]) == {"1", "2"}
    manifest = client.run(submit_steps(client, req, limit=limit))
    assert [b["index"] for b in manifest.batches] == [1, 2]
    assert manifest.ids[0] == first["batches"][0]["id"]
    assert len(emulator.state.batches.batches) == 2  # part 1 was not created again
    assert all(b["input_uploaded"] for b in manifest.batches)  # this submit's own uploads
    assert "resuming the submit: part(s) 1 created already" in caplog.text
    with pytest.raises(BatchAlreadySubmittedError) as info:  # everything is created now
        client.run(submit_steps(client, req, limit=limit))
    assert set(info.value.batches) == set(manifest.ids)
    assert "was submitted already as batch" in str(info.value) and "--force" in str(info.value)
    assert len(emulator.state.batches.batches) == 2


def test_a_part_whose_create_answer_was_lost_is_not_created_again_unasked(
        client: KimiFiles, emulator: Emulator, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    req, limit = _two_part_submit_whose_second_create_is_lost(client, emulator, tmp_path,
                                                              monkeypatch)
    saved = json.loads((tmp_path / "req.jsonl.batches.json").read_text())
    # as if the platform had created part 2's batch and only its answer was lost
    twin = client.batches.create(input_file_id=saved["uploads"]["2"]["input_file_id"])
    with pytest.raises(BatchAlreadySubmittedError, match="may have been created before its "
                                                         "answer was lost") as info:
        client.run(submit_steps(client, req, limit=limit))
    assert info.value.batches == {twin.id: "validating"}
    manifest = client.run(submit_steps(client, req, limit=limit, force=True))
    assert [b["index"] for b in manifest.batches] == [1, 2] and twin.id not in manifest.ids


def test_submit_again_refuses_naming_the_batches_and_their_real_status(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = write(tmp_path / "r.jsonl", _line("a"))
    assert main(["batch", "submit", str(req)]) == 0
    batch_id = capsys.readouterr().out.strip()
    assert main(["batch", "wait", str(req) + ".batches.json"]) == 0
    capsys.readouterr()
    assert main(["batch", "submit", str(req)]) == 1
    err = capsys.readouterr().err
    assert f"was submitted already as batch {batch_id} (completed)" in err
    assert "running" not in err and len(env.state.batches.batches) == 1
    assert main(["batch", "submit", str(req), "--force"]) == 0
    assert len(env.state.batches.batches) == 2
    saved = json.loads((tmp_path / "r.jsonl.batches.json").read_text())
    assert [b["id"] for b in saved["earlier"]] == [batch_id]
    assert saved["batches"][0]["input_uploaded"] is True  # the first submit uploaded it


def test_results_name_each_document_absolutely_and_refuse_files_that_do_not_belong(
        env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for folder, prompt in (("proj", "Q1"), ("other", "Q2")):
        write(tmp_path / folder / "docs" / "d0.txt", f"the text of {folder}")
        monkeypatch.chdir(tmp_path / folder)
        assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt", prompt, "docs",
                     "-o", "q.jsonl"]) == 0
        assert main(["batch", "submit", "q.jsonl"]) == 0
        assert main(["batch", "wait", "q.jsonl.batches.json"]) == 0
    proj, other = tmp_path / "proj", tmp_path / "other"
    ids = [json.loads((d / "q.jsonl.map.json").read_text())["ids"] for d in (proj, other)]
    assert set(ids[0]).isdisjoint(ids[1])  # the same relative path, two documents, two ids
    capsys.readouterr()
    # run from the other folder: the path still names proj's document
    assert main(["batch", "results", str(proj / "q.jsonl.batches.json"), "-o", "r.jsonl"]) == 0
    [row] = [json.loads(x) for x in (other / "r.jsonl").read_text().splitlines()]
    assert row["path"] == str(proj / "docs" / "d0.txt")
    # another build's map: refused, nothing written
    assert main(["batch", "results", str(proj / "q.jsonl.batches.json"), "--map",
                 str(other / "q.jsonl.map.json"), "-o", "r2.jsonl"]) == 2
    assert "this map was written with another input" in capsys.readouterr().err
    assert not (other / "r2.jsonl").exists()
    # a manifest whose batch read another input than it records: refused
    saved = json.loads((proj / "q.jsonl.batches.json").read_text())
    saved["batches"][0]["id"] = json.loads(
        (other / "q.jsonl.batches.json").read_text())["batches"][0]["id"]
    (proj / "q.jsonl.batches.json").write_text(json.dumps(saved))
    assert main(["batch", "results", str(proj / "q.jsonl.batches.json"), "-o", "r3.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "read the input file" in err and "as the manifest records" in err
    assert not (other / "r3.jsonl").exists()


def test_build_again_leaves_out_its_own_files_and_results_never_overwrite_them(
        env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _docs(tmp_path, 2)
    monkeypatch.chdir(tmp_path)
    build = ["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", "docs",
             "-o", "docs/s.jsonl"]
    assert main(build) == 0
    assert main(["batch", "submit", "docs/s.jsonl"]) == 0
    assert main(["batch", "wait", "docs/s.jsonl.batches.json"]) == 0
    manifest = "docs/s.jsonl.batches.json"
    for onto in ("docs/s.jsonl", "docs/s.jsonl.map.json", manifest):
        before = Path(onto).read_bytes()
        assert main(["batch", "results", manifest, "-o", onto]) == 2
        assert "write the results to another file" in capsys.readouterr().err
        assert Path(onto).read_bytes() == before
    assert main(["batch", "results", manifest, "-o", "docs/results.jsonl"]) == 0
    write(tmp_path / "docs" / "other.jsonl", _line("x"))  # a request file of another tool run
    capsys.readouterr()
    assert main([*build[:-1], "docs/t.jsonl"]) == 0
    err = capsys.readouterr().err
    for name, what in (("s.jsonl.map.json", "a map written by"),
                       ("s.jsonl.batches.json", "a manifest written by"),
                       ("s.jsonl", "an input file written by"),
                       ("results.jsonl", "a results file written by"),
                       ("other.jsonl", "a Batch API input file")):
        assert f"docs/{name}: left out: {what}" in err
    assert "wrote 2 request(s)" in err
    # named explicitly, a file is the user's choice
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", "docs/d0.txt",
                 "docs/other.jsonl", "-o", "u.jsonl"]) == 0
    assert "wrote 2 request(s)" in capsys.readouterr().err


def test_a_file_name_that_is_not_utf8_is_built_and_joined(env: Emulator, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    folder = tmp_path / "docs"
    folder.mkdir()
    odd = os.fsdecode(bytes(folder) + b"/caf\xe9.txt")
    Path(odd).write_text("un document")
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", "docs",
                 "-o", "r.jsonl"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "xdg-state") == [
        "docs", "r.jsonl", "r.jsonl.map.json"]  # no .part left
    ids = json.loads(Path("r.jsonl.map.json").read_text(encoding="utf-8"))["ids"]
    assert list(ids.values()) == [odd]  # read back as the very name
    assert main(["batch", "submit", "r.jsonl"]) == 0
    assert main(["batch", "wait", "r.jsonl.batches.json"]) == 0
    assert main(["batch", "results", "r.jsonl.batches.json", "-o", "out.jsonl"]) == 0
    [row] = [json.loads(x) for x in Path("out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert os.fsencode(row["path"]).endswith(b"caf\xe9.txt")


@pytest.mark.parametrize("command", ["build", "messages"])
def test_strict_names_the_document_that_failed(env: Emulator, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               command: str) -> None:
    scan = write(tmp_path / "scan.txt", "x" * 6000)  # "text extract error": no text found
    argv = {"build": ["batch", "build", "--strict", "--model", "kimi-k2.5", "--prompt", "Q",
                      str(scan), "-o", str(tmp_path / "r.jsonl")],
            "messages": ["messages", "--strict", str(scan)]}[command]
    assert main(argv) == 1
    assert f"error: {scan}: text extract error" in capsys.readouterr().err


def test_a_failed_batch_of_a_manifest_does_not_block_the_others_results(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = write(tmp_path / "r.jsonl", _line("a"))
    assert main(["batch", "submit", str(req)]) == 0
    mpath = tmp_path / "r.jsonl.batches.json"
    assert main(["batch", "wait", str(mpath)]) == 0
    with KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        bad = c.upload(write(tmp_path / "bad.jsonl", _line("b") + _line("b")), purpose="batch")
        failing = c.batches.create(input_file_id=bad.id)
        assert any(c.batches.retrieve(failing.id).done for _ in range(10))  # stepped: moves per look
    saved = json.loads(mpath.read_text())
    saved["batches"].append({"id": failing.id, "input_file_id": bad.id, "input_uploaded": True,
                             "index": 2, "lines": 2})
    mpath.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(["batch", "results", str(mpath), "-o", str(tmp_path / "out.jsonl"),
                 "--cleanup"]) == 1
    err = capsys.readouterr().err
    assert f"batch {failing.id} failed" in err and "1 answered" in err
    [row] = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["status"] == "ok"
    assert bad.id in err and bad.id not in {f.id for f in env.state.listing()}  # cleaned up
    # a manifest of failed batches only: nothing to write, but --cleanup still cleans
    with KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        bad2 = c.upload(write(tmp_path / "bad2.jsonl", _line("c") + _line("c")), purpose="batch")
        failing2 = c.batches.create(input_file_id=bad2.id)
        assert any(c.batches.retrieve(failing2.id).done for _ in range(10))  # stepped: moves per look
    only = tmp_path / "only.batches.json"
    only.write_text(json.dumps({"kind": saved["kind"], "input": "", "map": None, "batches": [
        {"id": failing2.id, "input_file_id": bad2.id, "input_uploaded": True}]}))
    assert main(["batch", "results", str(only), "-o", str(tmp_path / "o2.jsonl"),
                 "--cleanup"]) == 1
    err = capsys.readouterr().err
    assert f"--cleanup deleted {bad2.id}" in err and not (tmp_path / "o2.jsonl").exists()
    assert bad2.id not in {f.id for f in env.state.listing()}


def test_build_writes_only_a_jsonl_and_never_over_a_users_file(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [doc] = _docs(tmp_path, 1)
    sales = write(tmp_path / "sales.csv", "region,total\n")
    mine = write(tmp_path / "notes.jsonl", '{"my": "own data"}\n')
    base = ["batch", "build", "--model", "kimi-k2.5", "--prompt", "Q", str(doc), "-o"]
    assert main([*base, str(sales)]) == 2
    assert "a batch input file is named *.jsonl" in capsys.readouterr().err
    assert main([*base, str(mine)]) == 2
    assert "exists and is no input file a build wrote; not overwritten" in (
        capsys.readouterr().err)
    assert sales.read_text() == "region,total\n" and mine.read_text() == '{"my": "own data"}\n'
    assert main([*base, str(mine), "--force"]) == 0
    assert main([*base, str(mine)]) == 0  # a build's own output: rebuilt
    with KimiFiles(api_key=API_KEY, base_url=env.base_url) as c, \
            pytest.raises(ConfigurationError, match=r"\*\.jsonl"):
        c.batches.build([doc], model="kimi-k2.5", prompt="Q", output=tmp_path / "e.txt")


def test_results_without_a_map_say_once_that_paths_are_null(
        client: KimiFiles, stepped: Emulator, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    up = client.upload(write(tmp_path / "r.jsonl", _line("a") + _line("b")), purpose="batch")
    batch = client.batches.create(input_file_id=up.id)
    client.batches.wait(batch)
    client.batches.results(batch.id, tmp_path / "out.jsonl")
    said = [r.getMessage() for r in caplog.records if "path\": null" in r.getMessage()]
    assert said == ['no map of custom_id to path (a bare batch id): every result has "path": '
                    'null; give the map build wrote with --map (map_file=)']


def test_results_after_cleanup_say_the_files_were_deleted_by_it(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = write(tmp_path / "r.jsonl", _line("a"))
    mpath = str(tmp_path / "r.jsonl.batches.json")
    assert main(["batch", "submit", str(req)]) == 0
    assert main(["batch", "wait", mpath]) == 0
    assert main(["batch", "results", mpath, "-o", str(tmp_path / "out.jsonl"), "--cleanup"]) == 0
    written = (tmp_path / "out.jsonl").read_bytes()
    assert len(json.loads(Path(mpath).read_text())["cleaned"]) == 2
    capsys.readouterr()
    assert main(["batch", "results", mpath, "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "was deleted by an earlier `results --cleanup`" in capsys.readouterr().err
    assert (tmp_path / "out.jsonl").read_bytes() == written


def test_an_unknown_model_is_refused_before_a_batch_and_fails_on_the_emulator(
        env: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [doc] = _docs(tmp_path, 1)
    out = tmp_path / "r.jsonl"
    assert main(["batch", "build", "--model", "nosuchmodel", "--prompt", "Q", str(doc),
                 "-o", str(out)]) == 2
    assert "--model nosuchmodel: not a model the platform is known to serve" in (
        capsys.readouterr().err)
    assert not out.exists()
    assert main(["batch", "build", "--model", "nosuchmodel", "--any-model", "--prompt", "Q",
                 str(doc), "-o", str(out)]) == 0
    assert main(["batch", "check", str(out)]) == 1
    assert "rule known_model" in capsys.readouterr().out
    assert main(["batch", "check", str(out), "--any-model"]) == 0
    assert main(["batch", "submit", str(out)]) == 1
    assert "is not one the platform is known to serve" in capsys.readouterr().err
    assert not env.state.batches.batches
    assert main(["batch", "submit", str(out), "--any-model"]) == 0
    mpath = str(out) + ".batches.json"
    assert main(["batch", "wait", mpath]) == 0
    assert main(["batch", "results", mpath, "-o", str(tmp_path / "o.jsonl")]) == 1
    [row] = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["status"] == "error"
    assert "Not found the model nosuchmodel or Permission denied" in row["error"]["message"]


def test_submit_shows_each_refusal_on_its_own_line(tmp_path: Path, env: Emulator,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "dup.jsonl", _line("a") + _line("a") + b"nope\n")
    assert main(["batch", "submit", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("2 refusal(s); nothing was sent:") and "\\n" not in "".join(err)
    assert [x.split(": ", 2)[1] for x in err[1:]] == ["line 2", "line 3"]
