"""The endpoints' and the extract run's rules, driven step by step with scripted answers: no
server, no threads.

The endpoint calls (:func:`kimi_files._endpoints.call_steps`, ``content_steps``,
``list_steps``) get raw ``httpx.Response`` answers from the ``Script`` of ``tests/scripted.py``;
the extract run (:func:`kimi_files._extract_run.extract_steps`) gets its Files API answers
from it. Each test checks what the steps asked for: the requests, the waits, the deletions and
the lines said.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kimi_files._cache import ReuseCache
from kimi_files._config import RetryPolicy
from kimi_files._endpoints import content_steps, list_steps, retrieve_steps
from kimi_files._extract_models import ExtractOptions, ExtractResult, ExtractSummary
from kimi_files._extract_run import extract_steps
from kimi_files._models import FileContent
from kimi_files._options import UploadOptions
from kimi_files._reconcile import RELIST_WAITS
from kimi_files._steps import GetContent
from kimi_files.errors import (
    AuthenticationError,
    ConnectionLostError,
    InternalServerError,
    MalformedResponseError,
)

from .scripted import Script, answer, listing, stored

T0 = 1_760_000_000  # the server's time when the scenario starts
#: no jitter: every wait is the rule's figure exactly
POLICY = RetryPolicy(jitter=0.0)


def _script(**kw: object) -> Script:
    script = Script(retry_policy=POLICY, **kw)  # type: ignore[arg-type]
    script.clock.observe(T0)  # the server's Date header, seen on an earlier answer
    return script


def error(status: int, type_: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": type_, "message": message}})


def file_json(file_id: str, name: str = "a.txt", size: int = 3) -> dict[str, object]:
    return stored(file_id, name, size, T0).to_dict()


def document(name: str, text: str) -> str:
    return json.dumps({"content": text, "file_type": "text/plain", "filename": name,
                       "title": "", "type": "file"})


def requests(script: Script) -> list[str]:
    return [f"{method} {path}" for method, path in script.calls("request")]


# --- the endpoint calls' retries --------------------------------------------------------------


def test_a_500_is_retried_after_the_backoff_then_answered() -> None:
    script = _script().on("request", error(500, "server_error", "try later"),
                          httpx.Response(200, json=file_json("f1")))
    got = script.run(retrieve_steps(POLICY, "f1"))
    assert got.id == "f1"
    assert requests(script) == ["GET files/f1"] * 2
    assert script.waits == [POLICY.initial_wait]
    (line,) = script.said
    assert line.startswith("GET files/f1 failed (") and line.endswith("; retry 1 in 1.0s")


def test_a_malformed_200_is_retried_and_the_good_answer_kept() -> None:
    script = _script().on("request", httpx.Response(200, text="<html>busy</html>"),
                          httpx.Response(200, text=document("a.txt", "the text")))
    got = script.run(content_steps(POLICY, "f1", name="a.txt"))
    assert got.text == "the text"
    assert requests(script) == ["GET files/f1/content"] * 2
    assert script.waits == [POLICY.initial_wait]


def test_the_document_of_another_file_is_malformed_and_retried() -> None:
    script = _script().on("request", httpx.Response(200, text=document("b.txt", "b's text")),
                          httpx.Response(200, text=document("a.txt", "a's text")))
    assert script.run(content_steps(POLICY, "f1", name="a.txt")).text == "a's text"
    assert len(script.waits) == 1


def test_a_429_that_names_its_wait_is_waited_that_long() -> None:
    busy = error(429, "rate_limit_reached_error", "Your account o<a> request reached "
                 "organization max RPM: 3, please try again after 7 seconds")
    script = _script().on("request", busy, httpx.Response(200, json=file_json("f1")))
    assert script.run(retrieve_steps(POLICY, "f1")).id == "f1"
    assert script.waits == [7.0]


def test_a_401_is_not_retried() -> None:
    script = _script().on("request", error(401, "invalid_authentication_error",
                                           "Invalid Authentication"))
    with pytest.raises(AuthenticationError, match="Invalid Authentication"):
        script.run(retrieve_steps(POLICY, "f1"))
    assert requests(script) == ["GET files/f1"]
    assert script.waits == [] and script.said == []


def test_the_time_budget_is_counted_on_the_steps_clock() -> None:
    policy = RetryPolicy(jitter=0.0, timeout=100.0)

    def slow(_: object) -> httpx.Response:
        script.time.now += 99.5  # the request took 99.5 s by the steps' clock
        return error(500, "server_error", "try later")

    script = _script().on("request", slow, httpx.Response(200, json=file_json("f1")))
    with pytest.raises(InternalServerError):
        script.run(retrieve_steps(policy, "f1"))
    # 99.5 s spent and a 1 s wait do not fit 100 s: given up without waiting
    assert requests(script) == ["GET files/f1"] and script.waits == []
    fast = _script().on("request", error(500, "server_error", "try later"),
                        httpx.Response(200, json=file_json("f1")))
    assert fast.run(retrieve_steps(policy, "f1")).id == "f1"  # the same, on time: retried


# --- the listing ------------------------------------------------------------------------------


def page(*ids: str, more: bool) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "has_more": more,
                                     "data": [file_json(i) for i in ids]})


def test_the_listing_follows_the_pages_and_holds_each_id_once() -> None:
    script = _script().on("request", page("f1", "f2", more=True), page("f2", "f3", more=False))
    got = script.run(list_steps(POLICY))
    assert [f.id for f in got.data] == ["f1", "f2", "f3"]
    assert requests(script) == ["GET files", "GET files?after=f2"]


def test_a_page_that_ends_where_the_last_one_did_is_malformed() -> None:
    script = _script().on("request", page("f1", "f2", more=True), page("f2", more=True))
    with pytest.raises(MalformedResponseError,
                       match=r"GET http://127\.0\.0\.1:9/v1/files\?after=f2: the listing says "
                             r"it has more files \(has_more\) but gives no way on \(the page "
                             r"ends at 'f2' again\)"):
        script.run(list_steps(POLICY))
    assert len(script.calls("request")) == 2  # no third page asked for


def test_a_long_listing_is_said_once_then_every_30_s_of_the_steps_clock() -> None:
    def ten_seconds(i: int) -> Callable[[object], httpx.Response]:
        def answer(_: object) -> httpx.Response:
            script.time.now += 10
            return page(f"f{i}", more=i < 9)
        return answer

    script = _script().on("request", *(ten_seconds(i) for i in range(1, 10)))
    assert len(script.run(list_steps(POLICY)).data) == 9
    assert script.said == [
        "still listing the account's files: 3 page(s), 3 file(s) so far, 30s so far",
        "the account's files come in pages: 5 so far (5 files); listing on until the last",
        "still listing the account's files: 8 page(s), 8 file(s) so far, 80s so far"]


# --- the corpus extraction --------------------------------------------------------------------


def _docs(tmp_path: Path, *texts: str) -> list[Path]:
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"d{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    return paths


def _extract(script: Script, paths: list[Path], *, reuse: bool = False,
             ) -> tuple[list[ExtractResult], ExtractSummary]:
    got: list[ExtractResult] = []
    settings = ExtractOptions(upload=UploadOptions(progress=False, reuse=reuse), concurrency=1)
    summary = script.run(extract_steps(script, None, settings, paths, threading.Event(),
                                       lambda r: got.append(r) is None))
    return got, summary


def _content_of(texts: dict[str, str]) -> Callable[[GetContent], FileContent]:
    def content(action: GetContent) -> FileContent:
        found = FileContent.from_document(document("", texts[action.file_id]))
        assert found is not None
        return found
    return content


def test_texts_come_back_in_order_and_only_the_files_it_stored_are_deleted(
        tmp_path: Path) -> None:
    paths = _docs(tmp_path, "first document\n", "second document, longer\n")
    sizes = [p.stat().st_size for p in paths]
    theirs = stored("f-theirs", "x.txt", 9, T0 - 60)
    script = _script().on("list", listing(theirs)).on(
        "create", stored("f1", "d0.txt", sizes[0], T0 + 1), stored("f2", "d1.txt", sizes[1], T0 + 2))
    script.on("content", _content_of({"f1": "text one", "f2": "text two"}),
              _content_of({"f1": "text one", "f2": "text two"}))
    got, summary = _extract(script, paths)
    assert [(r.path, r.status, r.text, r.file_id, r.deleted) for r in got] == [
        (str(paths[0]), "ok", "text one", "f1", True),
        (str(paths[1]), "ok", "text two", "f2", True)]
    assert script.calls("content") == [("f1",), ("f2",)]  # each read after its own upload
    assert script.calls("delete") == [("f1",), ("f2",)]  # never f-theirs
    assert summary.left == [] and summary.counts["ok"] == 2
    assert script.said == ["extracting 2 document(s), at most 999 of this run's files on the "
                           "server at once"]
    (bar,) = script.bars
    assert (bar.total, bar.desc, bar.unit, bar.done, bar.closed) == (2, "documents", "doc", 2,
                                                                     True)


@pytest.mark.parametrize("first", ["listed", "landed"])
def test_a_look_alike_in_the_listing_is_not_adopted_nor_deleted(tmp_path: Path,
                                                                first: str) -> None:
    """Same name and size, but someone else's: in the run's first listing, or landed after
    it but stored before the lost attempt began (by the server's clock)."""
    (path,) = _docs(tmp_path, "the document\n")
    size = path.stat().st_size
    old = stored("f-old", path.name, size, T0 - 3600 if first == "listed" else T0 - 1)
    lost = ConnectionLostError("the connection dropped after the body was sent",
                               request_sent=True)
    script = _script().on("list", *((listing(old),) if first == "listed" else
                                    (listing(), listing(old))))
    script.on("create", lost, stored("f-new", path.name, size, T0 + 2))
    script.on("content", _content_of({"f-new": "its text"}))
    (result,), summary = _extract(script, [path])
    assert (result.status, result.file_id, result.origin, result.text) == (
        "ok", "f-new", "stored", "its text")
    assert len(script.calls("create")) == 2  # sent again: the look-alike is not ours
    assert script.calls("delete") == [("f-new",)]  # its own copy only, never f-old
    assert script.calls("content") == [("f-new",)]
    if first == "listed":  # in the run's first listing: claimed, not even a suspect
        window, last = 999, (f"{path}: looking for the copy a lost answer may have stored: "
                             f"listing again for up to {sum(RELIST_WAITS):g} s")
    else:  # landed since: a possible copy by name and size, reported and kept
        window, last = 1000, (
            f"{path}: f-old ({path.name}, {size} bytes, created_at {T0 - 1}) may be a copy an "
            "earlier attempt stored, or someone else's file; it cannot be proven ours, so it "
            "is kept and the file is uploaded again (remove it with: kimi-files delete f-old)")
    assert script.said == [  # each once
        f"extracting 1 document(s), at most {window} of this run's files on the server at once",
        f"{path}: attempt 1 failed ({lost}); retrying in 1.0s", last]
    assert [f.id for f in summary.suspects] == ([] if first == "listed" else ["f-old"])


def test_a_deletion_that_fails_is_said_once_and_tried_again_at_the_end(tmp_path: Path) -> None:
    (path,) = _docs(tmp_path, "the document\n")
    size = path.stat().st_size
    failure = answer(500, "server_error", "try later")
    script = _script().on("list", listing()).on("create", stored("f1", path.name, size, T0 + 1))
    script.on("content", _content_of({"f1": "its text"})).on("delete", failure, None)
    (result,), summary = _extract(script, [path])
    assert result.status == "ok" and not result.deleted
    assert script.calls("delete") == [("f1",), ("f1",)]  # the run's end tried once more
    assert summary.left == []
    assert [m for m in script.said if "could not delete" in m] == [
        f"{path}: could not delete f1: {failure}; a re-run deletes it"]


def test_a_malformed_content_is_never_cached(tmp_path: Path) -> None:
    (path,) = _docs(tmp_path, "the document\n")
    size = path.stat().st_size
    cache = ReuseCache(tmp_path / "cache.sqlite")
    policy = RetryPolicy(jitter=0.0, max_attempts=2)
    # the content answered as the client answers it: content_steps on raw responses
    script = _script(cache=cache).on("list", listing()).on(
        "create", stored("f1", path.name, size, T0 + 1))
    script.on("content", lambda a: script.run(content_steps(policy, a.file_id, name=a.name)))
    script.on("request", httpx.Response(200, text="<html>busy</html>"),
              httpx.Response(200, text='{"content": "cut o'))
    (result,), _ = _extract(script, [path], reuse=True)
    assert result.status == "failed" and isinstance(result.error, MalformedResponseError)
    assert result.sha256 is not None and cache.text(result.sha256) is None
    assert script.calls("delete") == [("f1",)]  # its copy goes all the same
    # and a good answer after a malformed one is what is kept
    script.on("create", stored("f2", path.name, size, T0 + 2))
    script.on("content", lambda a: script.run(content_steps(policy, a.file_id, name=a.name)))
    script.on("request", httpx.Response(200, text="<html>busy</html>"),
              httpx.Response(200, text=document(path.name, "its text")))
    (again,), _ = _extract(script, [path], reuse=True)
    assert again.text == "its text" and cache.text(result.sha256) == document(path.name,
                                                                              "its text")
    cache.close()


# --- what the drivers do with the run's local actions -----------------------------------------


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_the_drivers_draw_a_bar_of_documents_and_log_a_bugs_traceback(
        driver: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import logging

    from kimi_files._progress import ENV_VAR, ProgressBar, disable_progress_bars, enable_progress_bars
    from kimi_files._steps import Close, Progress, Say, Steps, run_async, run_sync

    monkeypatch.delenv(ENV_VAR, raising=False)

    seen: list[tuple[object, object]] = []

    def steps() -> Steps[None]:
        bar: ProgressBar = yield Progress(3, "documents", True, unit="doc")
        assert bar._bar is not None
        seen.append((bar._bar.unit, bar._bar.unit_scale))
        yield Close(bar)
        try:
            raise ValueError("a bug")
        except ValueError as exc:
            yield Say.error("%s: unexpected %s", "d0.txt", "ValueError", exc_info=exc)

    enable_progress_bars()  # the suite turns them off
    try:
        with caplog.at_level(logging.ERROR, logger="kimi_files"):
            if driver == "sync":
                run_sync(steps(), None)  # type: ignore[arg-type]
            else:
                asyncio.run(run_async(steps(), None))  # type: ignore[arg-type]
    finally:
        disable_progress_bars()
    assert seen == [("doc", False)]  # whole documents, not bytes scaled to kB
    (record,) = caplog.records
    assert record.getMessage() == "d0.txt: unexpected ValueError"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


# --- lines that plain helpers now hand to the steps to say ------------------------------------


def test_a_cut_that_is_still_over_the_budget_is_said_and_cut_again() -> None:
    from kimi_files._chat import build_messages
    from kimi_files._tokens import fit_tokens_steps

    found = []
    for name in ("a.txt", "b.txt"):
        content = FileContent.from_document(document(name, "word " * 400))
        assert content is not None
        found.append((name, content))
    messages = build_messages(found, None)

    def tokens(n: int) -> httpx.Response:
        return httpx.Response(200, json={"data": {"total_tokens": n}})

    # each document 1,000 tokens; the first cut list 1,600 (over 1,500), the next 1,400
    script = _script().on("request", tokens(1000), tokens(1000), tokens(1600), tokens(1400))
    out = script.run(fit_tokens_steps(script, found, messages, model="kimi-k2.5",
                                      max_tokens=1500))
    assert set(out.cut) == {"a.txt", "b.txt"}
    assert requests(script) == ["POST tokenizers/estimate-token-count"] * 4
    assert script.said == ["the cut messages are 1600 tokens, over max_tokens=1500: cutting more"]


def test_a_session_says_once_that_it_will_not_delete_a_file_it_adopted(tmp_path: Path) -> None:
    from kimi_files._chat import _SessionBase

    (path,) = _docs(tmp_path, "the document\n")
    size = path.stat().st_size
    lost = ConnectionLostError("the connection dropped after the body was sent",
                               request_sent=True)
    script = _script().on("list", listing(), listing(stored("f-ours", path.name, size, T0 + 1)))
    script.on("create", lost)
    session = _SessionBase(script, delete_on_exit=True)  # type: ignore[arg-type]
    up = script.run(session._upload(path, {"progress": False, "reuse": False}))
    assert up.id == "f-ours" and up.adopted and session.created == {}
    assert [m for m in script.said if "will not delete" in m] == [
        f"{path}: f-ours was adopted after a lost answer; it cannot be proven this session's, "
        "so the session will not delete it"]


def test_a_map_of_another_input_or_none_is_a_line_for_the_steps(tmp_path: Path) -> None:
    from kimi_files._batch_build import map_path_for
    from kimi_files._batch_flow import Manifest, _map_beside
    from kimi_files._batch_results import _map_for
    from kimi_files._steps import Say

    requests_file = tmp_path / "requests.jsonl"
    requests_file.write_text("", encoding="utf-8")
    map_file = map_path_for(requests_file)
    map_file.write_text(json.dumps({"ids": {"r1": "a.txt"}, "input_sha256": "aa"}),
                        encoding="utf-8")
    assert _map_beside(requests_file, "aa") == (map_file, None)
    assert _map_beside(requests_file, "bb") == (None, Say.warning(
        "%s: written with another input than %s (another build): not recorded in the "
        "manifest; results will name no paths unless given the right map (--map)",
        map_file, str(requests_file)))
    manifest = Manifest(str(requests_file), None)
    found, said = _map_for(manifest, str(map_file))
    assert found is not None and found.ids == {"r1": "a.txt"} and said is None
    gone = str(tmp_path / "gone.map.json")
    assert _map_for(manifest, gone) == (None, Say.warning(
        "%s: the map of custom_id to path cannot be read: results have no path", gone))
