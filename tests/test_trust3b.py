"""Trust, round 3 (part B): answers that are wrong in ways a server really gets them wrong.

A listing that repeats an id or gives a nonsense ``created_at``, a listing in pages, a 200
content answer that is not the document, a message budget that is a ceiling, a wrong key under
``messages()``, a cancelled waiter of a shared listing, and ``cache clear`` on a database that is
not ours. Each scenario is played against the emulator (its faults make the bad answers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._chat import build_messages, fit_budget
from kimi_files._models import FileContent, FileList, FileObject
from kimi_files._quota import implausibly_dated, select_for_deletion, select_for_pruning
from kimi_files.cli import main
from kimi_files.emulator import Emulator

from .conftest import API_KEY, Api, write

NOW = 1_750_000_000


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Emulator:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    return emulator


# --- 2. a listing that repeats an id; created_at that is no time --------------------------------


def test_a_listing_that_repeats_an_id_holds_it_once(emulator: Emulator, api: Api) -> None:
    old = emulator.seed("old.txt", 3, created_at=NOW - 100)
    new = emulator.seed("new.txt", 4, created_at=NOW)
    emulator.fail_next("repeated_ids", endpoint="list")
    listing = api.list()
    assert [f.id for f in listing] == [old.id, new.id] and listing.total_bytes == 7
    assert len(FileList.of([FileObject(id="a"), FileObject(id="a", bytes=9)])) == 1


def test_prune_keep_never_deletes_the_newest_listed_three_times(
        env: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    old = env.seed("old.txt", 3, created_at=NOW - 100)
    new = env.seed("new.txt", 4, created_at=NOW)
    env.fail_next("repeated_ids", endpoint="list")
    assert main(["prune", "--keep", "1", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"deleted {old.id}" in out and new.id not in out
    assert [f.id for f in env.state.listing()] == [new.id]


@pytest.mark.parametrize("value", [True, "1700000000", -5, 10**15, None, 0.5e300])
def test_a_created_at_that_is_no_time_is_neither_pruned_nor_counted_newest(
        env: Emulator, capsys: pytest.CaptureFixture[str], value: object) -> None:
    old = env.seed("old.txt", 3, created_at=NOW - 100)
    odd = env.seed("odd.txt", 4, created_at=NOW + 50)  # the newest: gets the bad value
    env.fail_next("bad_created_at", endpoint="list", value=value)
    assert main(["prune", "--keep", "1", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    # not pruned (by keep: it counts as no file at all) and not counted as the newest (so
    # the dated one is the one kept)
    assert out == "" and old.id not in out and odd.id not in out
    warning = (f"kimi-files: {odd.id} (odd.txt): the listing gives it no plausible created_at; "
               "it is neither pruned nor counted among the newest")
    assert err.count(warning) == 1 and "Traceback" not in err
    env.fail_next("bad_created_at", endpoint="list", value=value)
    assert main(["prune", "--older-than", "0", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert f"would delete {old.id}" in out and odd.id not in out and err.count(warning) == 1


def test_delete_older_than_never_chooses_a_file_it_cannot_date(
        env: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    old = env.seed("old.txt", 3, created_at=NOW - 100 * 86400)
    odd = env.seed("odd.txt", 4, created_at=NOW - 50 * 86400)
    env.fail_next("bad_created_at", endpoint="list", value="soon")
    assert main(["delete", "--older-than", "1", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert f"deleted {old.id}" in out and odd.id not in out
    assert err.count(f"kimi-files: {odd.id} (odd.txt): the listing gives it no plausible "
                     "created_at; --older-than leaves it alone") == 1
    assert [f.id for f in env.state.listing()] == [odd.id]
    files = [FileObject.from_dict({"id": "x", "created_at": True, "purpose": "file-extract"})]
    assert select_for_deletion(files, ids=[], match=None, older_than_days=0, everything=False,
                               now=NOW) == []


def test_plausible_dates_are_a_pure_rule() -> None:
    files = [FileObject.from_dict({"id": str(i), "created_at": v, "purpose": "file-extract"})
             for i, v in enumerate([NOW, True, "5", -1, NOW + 86_400 + 1, None, float("nan")])]
    assert [f.id for f in implausibly_dated(files, match=None, purpose="file-extract",
                                            now=NOW)] == ["1", "2", "3", "4", "5", "6"]
    assert [f.id for f in select_for_pruning(files, keep=0, older_than_days=None, match=None,
                                             purpose="file-extract", now=NOW)] == ["0"]


# --- 6. a listing in pages ------------------------------------------------------------------------


def test_every_page_of_a_paged_listing_is_followed(env: Emulator, api: Api,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env.state.page_size = 100
    seeded = [env.seed(f"f{i:03}.txt", 10, created_at=NOW - 1000 + i) for i in range(250)]
    listing = api.list()
    assert [f.id for f in listing] == [f.id for f in seeded]
    assert [r.path for r in env.requests] == ["/v1/files"] * 3
    assert main(["quota", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 250
    assert main(["prune", "--keep", "240", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would delete") == 10 and seeded[9].id in out and seeded[10].id not in out


def test_a_has_more_that_is_no_boolean_is_malformed_never_the_end(
        emulator: Emulator, api: Api, no_wait: list[float]) -> None:
    emulator.state.page_size = 2
    for i in range(5):
        emulator.seed(f"f{i}.txt", 1, created_at=NOW + i)
    emulator.fail_next("has_more_text", times=100, endpoint="list")
    with pytest.raises(kf.MalformedResponseError,
                       match=r"GET http://127\.0\.0\.1:\d+/v1/files\S*: the listing's has_more "
                             r"is 'true', not true or false"):
        api.list()
    emulator.state.clear_faults()
    assert len(api.list()) == 5


def test_a_long_listing_is_announced_once_and_has_a_status_line(
        emulator: Emulator, api: Api, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools
    import types

    from kimi_files import _local

    emulator.state.page_size = 1
    for i in range(9):
        emulator.seed(f"f{i}.txt", 1, created_at=NOW + i)
    ticks = itertools.count(0, 10)  # each look at the clock: 10 s later
    monkeypatch.setattr(_local, "time", types.SimpleNamespace(  # the driver's clock (Now)
        monotonic=lambda: float(next(ticks)), time=_local.time.time))
    assert len(api.list()) == 9
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    announced = [m for m in said if m.startswith("the account's files come in pages")]
    assert announced == ["the account's files come in pages: 5 so far (5 files); listing on "
                         "until the last"]
    # every 30 s of listing without a word: at page 3, and 30 s after the announcement
    status = [m for m in said if m.startswith("still listing")]
    assert status == ["still listing the account's files: 3 page(s), 3 file(s) so far, 30s "
                      "so far", "still listing the account's files: 8 page(s), 8 file(s) so far, "
                      "80s so far"]


@pytest.mark.parametrize("value", [1, 0, "false", [], {}])
def test_has_more_must_be_a_boolean_or_absent(value: object) -> None:
    import httpx

    from kimi_files._endpoints import _page

    request = httpx.Request("GET", "http://127.0.0.1:9/v1/files")
    with pytest.raises(kf.MalformedResponseError, match=r"GET http://127\.0\.0\.1:9/v1/files: "):
        _page(httpx.Response(200, json={"data": [], "has_more": value}, request=request))
    for fine, more in ((True, True), (False, False), (None, False)):
        assert _page(httpx.Response(200, json={"data": [], "has_more": fine},
                                    request=request))[1] is more


@pytest.mark.parametrize("fault, way", [
    ("has_more_stuck", r"the page ends at \S+ again"),
    ("has_more_empty", r"no files on the page"),
])
def test_a_page_that_says_more_and_gives_no_way_on_fails_clearly(
        emulator: Emulator, api: Api, fault: str, way: str) -> None:
    emulator.state.page_size = 2
    for i in range(5):
        emulator.seed(f"f{i}.txt", 1, created_at=NOW + i)
    emulator.fail_next(fault, times=100, endpoint="list")
    with pytest.raises(kf.MalformedResponseError,
                       match=rf"GET http://127\.0\.0\.1:\d+/v1/files\S*: the listing says it has "
                             rf"more files \(has_more\) but gives no way on \({way}\)"):
        api.list()
    # bounded: the stuck server was asked twice (the first page, then once after its last id)
    assert len(emulator.requests) == (2 if fault == "has_more_stuck" else 1)


def test_a_listing_that_never_ends_is_bounded(emulator: Emulator, api: Api,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._endpoints as client_module

    monkeypatch.setattr(client_module, "MAX_LIST_PAGES", 3)
    emulator.state.page_size = 1
    for i in range(5):
        emulator.seed(f"f{i}.txt", 1, created_at=NOW + i)
    with pytest.raises(kf.MalformedResponseError,
                       match=r"GET http://127\.0\.0\.1:\d+/v1/files: the listing still says it has "
                             r"more files after 3 pages \(3 files\); the account's files "
                             r"cannot be listed whole"):
        api.list()
    assert len(emulator.requests) == 3


# --- 4. a content answer that is not the document ---------------------------------------------


@pytest.mark.parametrize("fault", ["cut_body", "empty_200", "html_200", "truncated_json",
                                   "other_document"])
def test_a_bad_content_answer_is_retried_and_never_cached(
        emulator: Emulator, api: Api, tmp_path: Path, no_wait: list[float], fault: str) -> None:
    p = write(tmp_path / "doc.txt", "the real text\n")
    emulator.fail_next(fault, endpoint="content")
    assert api.extract(p) == "the real text\n"  # the bad answer retried: the next is good
    # and what is cached is the document: a second extract takes no request at all
    before = len(emulator.requests)
    assert api.extract(p) == "the real text\n" and len(emulator.requests) == before


@pytest.mark.parametrize("fault, seen", [
    ("cut_body", r"not the content document .*: '\{\"content\": \"the real text"),
    ("empty_200", r"not the content document .* \(empty\)"),
    ("html_200", r"not the content document .*: '200 OK'"),
    ("other_document", r"the document of another file \(its filename is 'other\.pdf', the "
                       r"file's is 'doc\.txt'\)"),
])
def test_a_content_answer_that_stays_bad_is_an_error_and_nothing_is_cached(
        emulator: Emulator, api: Api, tmp_path: Path, no_wait: list[float], fault: str,
        seen: str) -> None:
    p = write(tmp_path / "doc.txt", "the real text\n")
    emulator.fail_next(fault, times=100, endpoint="content")
    with pytest.raises(kf.MalformedResponseError,
                       match=rf"GET http://\S+/content: the server answered 200 with a body "
                             rf"that is {seen}"):
        api.extract(p)
    emulator.state.clear_faults()
    assert api.extract(p) == "the real text\n"  # asked again: nothing bad was cached
    assert emulator.requests[-1].path.endswith("/content")


def test_the_content_fetch_takes_max_retries(emulator: Emulator, api: Api, tmp_path: Path,
                                             no_wait: list[float]) -> None:
    p = write(tmp_path / "doc.txt", "the real text\n")
    emulator.fail_next("html_200", times=100, endpoint="content")
    with pytest.raises(kf.MalformedResponseError):
        api.extract(p, max_retries=1)
    assert sum(1 for r in emulator.requests if r.path.endswith("/content")) == 2


def test_a_poisoned_cache_entry_is_not_used(emulator: Emulator, api: Api,
                                           tmp_path: Path) -> None:
    p = write(tmp_path / "doc.txt", "the real text\n")
    assert api.extract(p) == "the real text\n"
    cache = api.client.reuse_cache()
    assert cache is not None
    from kimi_files._scan import sha256_of

    cache.remember_text(sha256_of(p), "cl-x", "<html>502 Bad Gateway</html>")  # an old poison
    assert api.extract(p) == "the real text\n"
    assert cache.text(sha256_of(p)) is not None and "real text" in str(cache.text(sha256_of(p)))


def test_batch_content_stays_the_raw_jsonl(emulator: Emulator, api: Api, tmp_path: Path,
                                           no_wait: list[float]) -> None:
    jsonl = '{"custom_id": "1", "body": {}}\n{"custom_id": "2", "body": {}}\n'
    p = write(tmp_path / "jobs.jsonl", jsonl)
    assert api.extract(p, purpose="batch") == jsonl
    up = api.upload(p, purpose="batch")
    assert api.content(up.id, raw=True).text == jsonl
    emulator.fail_next("empty_200", endpoint="content")
    assert api.content(up.id, raw=True).text == jsonl  # an empty 200 is retried here too
    with pytest.raises(kf.BatchContentError, match="a batch file's JSON Lines"):
        api.content(up.id)  # the JSONL is not the document the caller asked for: said at once


def test_cli_content_all_fetches_batch_files_raw(env: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = '{"custom_id": "1", "body": {}}\n'
    p = write(tmp_path / "jobs.jsonl", jsonl)
    with kf.KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        up = c.upload(p, purpose="batch")
    assert main(["content", "--all", "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / f"{up.id}-jobs.jsonl.txt").read_text() == jsonl
    capsys.readouterr()
    assert main(["content", "--raw", up.id]) == 0
    assert capsys.readouterr().out == jsonl + "\n"  # write_line ends each text with one


# --- 5. max_chars is a ceiling ----------------------------------------------------------------


def test_max_chars_is_a_ceiling_or_a_clear_error(env: Emulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path / "a.txt", "x" * 36)  # a message of 128 characters as the service sends it
    with kf.KimiFiles(api_key=API_KEY, base_url=env.base_url) as c:
        assert len(c.messages([p])[0]["content"]) == 128
    for budget in (100, 60, 150):
        code = main(["messages", str(p), "--max-chars", str(budget)])
        out, err = capsys.readouterr()
        if code == 0:
            assert sum(len(m["content"]) for m in json.loads(out)) <= budget
        else:
            assert code == 2 and out == "" and "Traceback" not in err
            assert re.search(rf"max_chars={budget} cannot hold 1 document\(s\): their JSON "
                             r"wrappers take 83 characters, and each text cut needs \d+ more "
                             r"for its marker", err), err
    assert code == 0  # 150 holds it whole


_texts = st.text(st.characters(codec="utf-8"), max_size=300)
_documents = st.one_of(
    st.builds(lambda t, name: FileContent.from_body(json.dumps(
        {"content": t, "file_type": "text/plain", "filename": name, "title": "", "type": "file"},
        ensure_ascii=False)), _texts, _texts.map(lambda s: s[:20])),
    _texts.filter(lambda t: not t.lstrip().startswith("{")).map(FileContent.from_body),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_documents, max_size=5), st.integers(1, 3000))
def test_messages_never_exceed_max_chars(documents: list[FileContent], budget: int) -> None:
    found = [(f"d{i}", d) for i, d in enumerate(documents)]
    try:
        out = build_messages(found, budget)
    except kf.ConfigurationError as exc:
        assert re.match(rf"max_chars={budget:,} cannot hold {len(found)} document\(s\): their "
                        r"JSON wrappers take [\d,]+ characters, and each text cut needs \d+ "
                        r"more for its marker", str(exc))
        # refused only when it could not fit even with every text cut to nothing
        whole = build_messages(found, None)
        assert sum(len(m["content"]) for m in whole) > budget
        return
    assert sum(len(m["content"]) for m in out) <= budget
    for (_, doc), m in zip(found, out, strict=True):
        if doc.document is not None:
            assert set(json.loads(m["content"])) == set(doc.document)  # still the document
    for total, kept in out.cut.values():
        assert 0 <= kept < total


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=8), st.integers(-50, 20000),
       st.integers(0, 200))
def test_fit_budget_counts_the_markers(lengths: list[int], budget: int, mark: int) -> None:
    kept = fit_budget(lengths, budget, mark=mark)
    if kept is None:
        # nothing fits: even the highest cap that cuts every text costs too much
        assert all(mark * sum(1 for n in lengths if n > cap) + sum(min(n, cap) for n in lengths)
                   > budget for cap in range(0, max(lengths) + 1))
        return
    cut = [i for i, (k, n) in enumerate(zip(kept, lengths, strict=True)) if k < n]
    assert sum(kept) + mark * len(cut) <= budget
    if cut:
        cap = kept[cut[0]]
        assert all(kept[i] == cap for i in cut)
        assert all(lengths[i] <= cap for i in range(len(lengths)) if i not in cut)
        # the cap is as high as the budget allows: no higher one fits
        assert all(mark * sum(1 for n in lengths if n > c) + sum(min(n, c) for n in lengths)
                   > budget for c in range(cap + 1, max(lengths) + 1))


# --- 8. messages() raises what is not the document's own failure -------------------------------


def test_messages_with_a_wrong_key_raises(emulator: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "text\n")
    for kind in ("sync", "async"):
        face = Api(kind, api_key="sk-wrong-key", base_url=emulator.base_url)
        try:
            with pytest.raises(kf.AuthenticationError, match="Invalid Authentication"):
                face.messages([p])
        finally:
            face.close()


@pytest.mark.parametrize("kind, error", [
    ("api_not_open", kf.PermissionDeniedError),
    ("account_suspended", kf.ExceededQuotaError),
])
def test_messages_raises_permission_and_quota_errors(emulator: Emulator, api: Api,
                                                    tmp_path: Path, kind: str,
                                                    error: type[Exception]) -> None:
    p = write(tmp_path / "a.txt", "text\n")
    emulator.fail_next(kind, endpoint="list")
    with pytest.raises(error):
        api.messages([p])


def test_messages_raises_no_room_and_network_errors(emulator: Emulator, tmp_path: Path,
                                                   no_wait: list[float]) -> None:
    p = write(tmp_path / "a.txt", "text\n")
    emulator.state.max_files = 1
    emulator.seed("full.txt", 1)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                      limits=kf.Limits(max_files=1)) as c, \
            pytest.raises(kf.NotEnoughFileSlotsError):
        c.messages([p])
    with kf.KimiFiles(api_key=API_KEY, base_url="http://127.0.0.1:9/v1", max_retries=0) as c, \
            pytest.raises(kf.APIConnectionError):
        c.messages([p])


def test_messages_still_leaves_out_a_document_of_its_own_failure(
        emulator: Emulator, api: Api, tmp_path: Path) -> None:
    good = write(tmp_path / "good.txt", "readable\n")
    dots = write(tmp_path / "dots.txt", "." * 6000)  # no text
    empty = write(tmp_path / "empty.txt", "")  # refused by preflight
    found = api.messages([good, dots, tmp_path / "missing.txt", empty])
    assert len(found) == 1
    assert isinstance(found.failed[str(dots)], kf.NoExtractableTextError)
    assert isinstance(found.failed[str(tmp_path / "missing.txt")], kf.LocalFileError)
    assert isinstance(found.failed[str(empty)], kf.EmptyFileError)


# --- 9. a waiter of a shared listing never gets another's cancellation ------------------------


def test_an_interrupted_leader_of_a_shared_listing_does_not_interrupt_its_waiter(
        emulator: Emulator, client: kf.KimiFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures as cf
    import threading
    import types

    import kimi_files._client as client_module

    waiting = threading.Event()

    class Watched(cf.Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> object:
            waiting.set()  # a waiter joined the shared listing
            return super().result(timeout)

    monkeypatch.setattr(client_module, "cf", types.SimpleNamespace(Future=Watched))
    emulator.seed("a.txt", 1)
    real_run = client.run
    leader = threading.get_ident()
    got: list[object] = []

    def waiter() -> None:
        try:
            got.append(client.list(shared=True))
        except BaseException as exc:  # what the waiter got is the point
            got.append(exc)

    other = threading.Thread(target=waiter)

    def run(steps: object, stop: object = None) -> object:
        if threading.get_ident() == leader:  # the leader's listing, once it is shared
            other.start()
            assert waiting.wait(10)
            raise KeyboardInterrupt  # Ctrl-C in the leader's thread, mid-listing
        return real_run(steps)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "run", run)
    with pytest.raises(KeyboardInterrupt):
        client.list(shared=True)
    other.join(30)
    assert len(got) == 1 and isinstance(got[0], FileList), got
    assert [f.filename for f in got[0]] == ["a.txt"]
    assert client._listing is None


async def _until(condition: Any) -> None:
    """Let the other tasks run until ``condition()`` holds (an async listing's ``_callbacks``:
    a waiter is shielded on it); at most 30 s."""
    import asyncio

    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def test_a_cancelled_leader_of_a_shared_listing_does_not_cancel_its_waiter(
        emulator: Emulator) -> None:
    import asyncio

    emulator.seed("a.txt", 1)

    async def main() -> None:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            real_run = c.run
            hold = asyncio.Event()
            calls = []

            async def run(steps: object, stop: object = None) -> object:
                calls.append(steps)
                if len(calls) == 1:
                    await hold.wait()  # the leader's listing, in flight until cancelled
                return await real_run(steps)  # type: ignore[arg-type]

            c.run = run  # type: ignore[method-assign]
            leader = asyncio.create_task(c.list(shared=True))
            await asyncio.sleep(0)
            waiter = asyncio.create_task(c.list(shared=True))
            await _until(lambda: c._alisting is not None and c._alisting._callbacks)
            leader.cancel()
            listing = await asyncio.wait_for(waiter, 30)
            assert [f.filename for f in listing] == ["a.txt"]
            assert leader.cancelled() and len(calls) == 2  # the waiter listed anew

            # and the other way round: a cancelled waiter leaves the leader's listing alone
            calls.clear()
            leader = asyncio.create_task(c.list(shared=True))
            await asyncio.sleep(0)
            waiter = asyncio.create_task(c.list(shared=True))
            await _until(lambda: c._alisting is not None and c._alisting._callbacks)
            waiter.cancel()
            await asyncio.sleep(0)
            hold.set()
            assert [f.filename for f in await leader] == ["a.txt"]
            assert waiter.cancelled()

    asyncio.run(main())


def test_cancelling_one_async_upload_leaves_the_other_alone(emulator: Emulator,
                                                             tmp_path: Path) -> None:
    import asyncio

    a = write(tmp_path / "a.txt", "first\n")
    b = write(tmp_path / "b.txt", "second\n")

    async def main() -> kf.UploadedFile:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            real_request = c.request
            lists = 0

            async def request(method: str, path: str, **kwargs: Any) -> object:
                nonlocal lists
                if (method, path) == ("GET", "files"):
                    lists += 1
                    if lists == 1:
                        await asyncio.Event().wait()  # upload a's listing: until cancelled
                return await real_request(method, path, **kwargs)

            c.request = request  # type: ignore[method-assign]
            first = asyncio.create_task(c.upload(a))
            await _until(lambda: c._alisting is not None)  # a's preflight is listing
            second = asyncio.create_task(c.upload(b))
            # b's preflight waits for the same listing
            await _until(lambda: c._alisting is not None and c._alisting._callbacks)
            first.cancel()
            return await asyncio.wait_for(second, 60)

    up = asyncio.run(main())
    assert up.filename == "b.txt" and emulator.filenames() == ["b.txt"]


# --- 7. cache clear removes only what it can prove is its cache --------------------------------


def _cache_path(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> Path:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    with kf.KimiFiles() as c:
        from kimi_files._cache import cache_path_for

        where = cache_path_for(c.state_path())
    where.parent.mkdir(parents=True, exist_ok=True)
    return where


def _other_programs_database(path: Path) -> bytes:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('precious')")
    db.commit()
    db.close()
    return path.read_bytes()


def test_cache_clear_never_deletes_another_programs_database(
        emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    where = _cache_path(monkeypatch, emulator)
    before = _other_programs_database(where)
    assert main(["cache", "clear"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (f"{where} is not provably a kimi-files reuse cache (another program's SQLite "
            "database); nothing was deleted") in err
    assert "removed" not in err and "Traceback" not in err
    assert where.read_bytes() == before


def test_cache_clear_never_deletes_a_file_that_is_no_database(
        emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    where = _cache_path(monkeypatch, emulator)
    where.write_bytes(b"someone's notes, not a database\n" * 100)
    assert main(["cache", "clear"]) == 2
    err = capsys.readouterr().err
    assert f"{where} is not provably a kimi-files reuse cache (not an SQLite database at all)" in err
    assert where.exists()


def test_cache_clear_removes_its_own_cache_too_damaged_to_open(
        emulator: Emulator, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from kimi_files._cache import ReuseCache

    where = _cache_path(monkeypatch, emulator)
    with ReuseCache(where) as cache:
        cache.remember("0" * 64, "file-extract", "cl-1", "a.txt", 1)
    data = bytearray(where.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # every page garbage; the header (ours) intact
    where.write_bytes(bytes(data))
    with pytest.raises(kf.CacheError, match="is damaged"):
        ReuseCache(where)
    assert main(["cache", "clear"]) == 0
    assert f"removed {where}" in capsys.readouterr().err and not where.exists()


def test_prove_ours_is_the_opening_check(tmp_path: Path) -> None:
    from kimi_files._cache import ReuseCache, prove_ours, remove_cache_files

    other = tmp_path / "other.db"
    before = _other_programs_database(other)
    with pytest.raises(kf.CacheError, match="not a kimi-files reuse cache"):
        ReuseCache(other)
    with pytest.raises(kf.CacheError, match=rf"{other} is not provably a kimi-files reuse cache"):
        remove_cache_files(other)
    assert other.read_bytes() == before
    ours = tmp_path / "ours.db"
    ReuseCache(ours).close()
    prove_ours(ours)
    prove_ours(tmp_path / "absent.db")
    (tmp_path / "empty.db").write_bytes(b"")
    prove_ours(tmp_path / "empty.db")
    assert remove_cache_files(ours) == [ours] and not ours.exists()


# --- prune and delete judge age by the server's clock ------------------------------------------


def test_age_is_judged_by_the_servers_clock_or_not_at_all() -> None:
    from kimi_files._quota import age_clock

    assert age_clock(NOW, NOW + 3600.0) == NOW  # an hour apart: the server's time
    unknown = age_clock(None, NOW)
    assert isinstance(unknown, str) and "the server's time is unknown" in unknown
    behind = age_clock(NOW - 40 * 86_400, NOW)
    assert isinstance(behind, str) and "40.0 days behind this machine's" in behind


@pytest.mark.parametrize("offset, said", [(-40 * 86_400.0, "40.0 days behind"),
                                          (None, "the server's time is unknown")])
def test_prune_and_delete_older_than_refuse_when_the_clocks_disagree(
        env: Emulator, capsys: pytest.CaptureFixture[str], offset: float | None,
        said: str) -> None:
    import time

    fresh = env.seed("fresh.txt", 3, created_at=int(time.time()) - 60)
    env.state.date_offset = offset
    assert main(["prune", "--older-than", "30", "--yes"]) == 1
    assert main(["delete", "--older-than", "30", "--yes"]) == 1
    err = capsys.readouterr().err
    assert err.count("kimi-files: refusing --older-than: the server") == 2 and said in err
    assert [f.id for f in env.state.listing()] == [fresh.id]
    # --keep does without ages
    assert main(["prune", "--keep", "1", "--dry-run"]) == 0


def test_prune_older_than_counts_age_on_the_servers_clock(
        env: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    # the server's clock runs 20 hours behind (within a day: trusted); a file 10 days old by
    # it, 10 days and 20 hours by the local clock, is not older than 10.5 days
    env.state.date_offset = -20 * 3600.0
    server_now = int(time.time()) - 20 * 3600
    f = env.seed("f.txt", 3, created_at=server_now - 10 * 86_400)
    assert main(["prune", "--older-than", "10.5", "--dry-run"]) == 0
    assert f.id not in capsys.readouterr().out
    assert main(["prune", "--older-than", "9.5", "--dry-run"]) == 0
    assert f"would delete {f.id}" in capsys.readouterr().out
