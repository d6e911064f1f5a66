"""Trust under hostile conditions: adopt only a provably own copy, delete nothing not ours.

Pure rules (kimi_files._adoption) are tested directly; the loops that use them against the
emulator, with look-alike files already in the account or arriving at the worst moment.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._adoption import (
    Attempt,
    ServerClock,
    Verdict,
    could_be,
    could_be_loosely,
    resolve,
    stored_forms,
    wire_name,
)
from kimi_files._models import FileObject
from kimi_files._reconcile import RELIST_WAITS
from kimi_files.emulator import Emulator

from .conftest import Api, write

# --- the name as sent ---------------------------------------------------------------------------

HOSTILE_NAMES = [f"a{chr(c)}b.txt" for c in range(1, 0x20)] + [
    'quote".txt', "back\\slash.txt", "semi;colon.txt", "报告.txt", "é\u00a0x.txt",
    'all"\\;\t\r\n.txt', "del\x7f.txt", "esc\x1b.txt", "pct%22.txt",
]


def _httpx_filename(name: str) -> str:
    """What httpx really writes into the multipart header for ``name``."""
    request = httpx.Request("POST", "http://x/", files={"file": (name, b"x", "text/plain")})
    head = b"".join(request.stream).split(b"\r\n\r\n", 1)[0].decode("utf-8")
    match = re.search(r'filename="(.*)"', head)
    assert match is not None, head
    return match.group(1)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_wire_name_is_what_httpx_writes(name: str) -> None:
    assert wire_name(name) == _httpx_filename(name)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_stored_forms_hold_the_name_sent_decoded_and_raw(name: str) -> None:
    forms = stored_forms(name)
    assert name in forms and _httpx_filename(name) in forms


def test_stored_forms_cover_a_partial_decoder() -> None:
    # a server that decodes only %22 and CR/LF (HTML5) keeps the tab encoded
    assert 'a"%09b' in stored_forms('a"\tb')
    assert "a%09b" in stored_forms("a\tb") and "a\\\\b" in stored_forms("a\\b")
    assert "other.txt" not in stored_forms("a\tb")


# --- which file is ours -------------------------------------------------------------------------


def _f(fid: str, name: str = "r.txt", size: int = 10, at: int = 1000, purpose: str = "file-extract",
       status: str = "ok") -> FileObject:
    return FileObject(id=fid, filename=name, bytes=size, created_at=at, purpose=purpose,
                      status=status)


ATTEMPT = Attempt("r.txt", 10, "file-extract", 1000)


def test_could_be_needs_every_piece_of_evidence() -> None:
    assert could_be(_f("a"), ATTEMPT)
    assert not could_be(_f("a", at=999), ATTEMPT)  # there before the attempt began
    assert not could_be(_f("a", size=11), ATTEMPT)
    assert not could_be(_f("a", name="R.txt"), ATTEMPT)
    assert not could_be(_f("a", purpose="image"), ATTEMPT)
    # a created_at prune would call implausible (more than a day ahead) is never adopted:
    # reported as a possible copy at most
    assert could_be(_f("a", at=1000 + 86_400), ATTEMPT)
    ahead = _f("a", at=1000 + 10 * 86_400)
    assert not could_be(ahead, ATTEMPT)
    assert resolve({0: ATTEMPT}, [ahead])[0] == Verdict(suspects=(ahead,))
    unknown = Attempt("r.txt", 10, "file-extract", None)  # the start was never known
    assert could_be(_f("a", at=1), unknown)
    assert resolve({0: unknown}, [_f("a")])[0] == Verdict(suspects=(_f("a"),))  # never adopted
    assert could_be(_f("a", name="a%09b"), Attempt("a\tb", 10, "file-extract", 1000))


def test_resolve_adopts_a_unique_candidate_only() -> None:
    old = _f("old", at=500)
    ours = _f("ours", at=1001)
    # an older look-alike that was listed before the upload (claimed) is no rival
    assert resolve({0: ATTEMPT}, [old, ours], claimed={"old"})[0].adopted == ours
    assert resolve({0: ATTEMPT}, [old, ours], claimed={"old", "ours"})[0].adopted is None
    # one nobody accounts for is: it might be ours under a clock that runs apart
    verdict = resolve({0: ATTEMPT}, [old, ours])[0]
    assert verdict.adopted is None and verdict.suspects == (old, ours)


def test_loose_candidates_are_reported_never_adopted() -> None:
    nfc = _f("nfc", name="re\u0301sume\u0301.txt", at=1001)  # decomposed, as macOS writes
    attempt = Attempt("résumé.txt", 10, "file-extract", 1000)  # composed é
    assert not could_be(nfc, attempt) and could_be_loosely(nfc, attempt)
    verdict = resolve({0: attempt}, [nfc])[0]
    assert verdict.adopted is None and verdict.suspects == (nfc,)
    for stored in ["100% done.txt", " r.txt ", "R.TXT", "report.txt"]:
        sent = {"100% done.txt": "100%25 done.txt", " r.txt ": " r.txt ", "R.TXT": "r.txt",
                "report.txt": "report.txt"}[stored]
        f = _f("x", name=stored, at=900)  # older than the attempt by the Date clock
        assert could_be_loosely(f, Attempt(sent, 10, "file-extract", 1000)), stored


def test_resolve_with_two_candidates_adopts_neither() -> None:
    ours, colleague = _f("ours", at=1001), _f("colleague", at=1001)
    verdict = resolve({0: ATTEMPT}, [ours, colleague])[0]
    assert verdict.adopted is None
    assert {f.id for f in verdict.suspects} == {"ours", "colleague"}


def test_resolve_when_two_attempts_could_own_one_file_adopts_for_neither() -> None:
    copy = _f("copy", at=1005)
    verdicts = resolve({"a/r.txt": ATTEMPT, "b/r.txt": Attempt("r.txt", 10, "file-extract", 1002)},
                       [copy])
    assert verdicts["a/r.txt"].adopted is None and verdicts["b/r.txt"].adopted is None
    assert verdicts["a/r.txt"].suspects == (copy,) == verdicts["b/r.txt"].suspects


def test_resolve_never_adopts_a_failed_copy() -> None:
    failed = _f("bad", at=1001, status="error")
    verdict = resolve({0: ATTEMPT}, [failed])[0]
    assert verdict.adopted is None and verdict.suspects == (failed,)


files_st = st.lists(
    st.builds(_f, fid=st.text("abcdef", min_size=1, max_size=3), name=st.sampled_from(["r.txt", "s.txt"]),
              size=st.integers(9, 11), at=st.integers(995, 1005),
              status=st.sampled_from(["ok", "error"])),
    max_size=8, unique_by=lambda f: f.id)
attempts_st = st.dictionaries(
    st.integers(0, 5),
    st.builds(Attempt, filename=st.sampled_from(["r.txt", "s.txt"]), size=st.integers(9, 11),
              purpose=st.just("file-extract"), since=st.one_of(st.none(), st.integers(995, 1005))),
    max_size=4)


@given(attempts_st, files_st, st.sets(st.text("abcdef", min_size=1, max_size=3), max_size=3))
def test_resolve_properties(attempts: dict[int, Attempt], files: list[FileObject],
                            claimed: set[str]) -> None:
    verdicts = resolve(attempts, files, claimed)
    assert set(verdicts) == set(attempts)
    adopted = [v.adopted.id for v in verdicts.values() if v.adopted is not None]
    assert len(adopted) == len(set(adopted))  # no file adopted twice
    for key, verdict in verdicts.items():
        if verdict.adopted is not None:
            f = verdict.adopted
            assert f.id not in claimed and could_be(f, attempts[key]) and not f.failed
            assert attempts[key].since is not None
            # no other attempt could own it, and it was the attempt's only candidate
            assert not any(could_be_loosely(f, a) for k, a in attempts.items() if k != key)
            assert not verdict.suspects
            assert [g for g in files if g.id not in claimed
                    and could_be_loosely(g, attempts[key])] == [f]
        for s in verdict.suspects:
            assert s.id not in claimed and could_be_loosely(s, attempts[key])


def test_server_clock_is_a_lower_bound_from_date_headers() -> None:
    now = [100.0]
    clock = ServerClock(monotonic=lambda: now[0])
    assert clock.now() is None
    clock.observe_date("garbage")
    assert clock.now() is None
    clock.observe_date("Sun, 29 Nov 2026 12:00:00 GMT")
    base = 1795953600
    assert clock.now() == base
    now[0] += 2.7
    assert clock.now() == base + 2
    clock.observe(base)  # an older figure never lowers the bound
    assert clock.now() == base + 2
    clock.observe(base + 10)
    assert clock.now() == base + 10


# --- against the emulator -------------------------------------------------------------------------


def _drop_then(emulator: Emulator, api: Api, monkeypatch: pytest.MonkeyPatch,
               after_drop: Any) -> None:
    """The next upload is stored and its answer dropped; then ``after_drop()`` runs (once),
    before the client can look for its copy."""
    emulator.fail_next("store_then_drop")
    original = api.client.create
    done = []

    def then() -> None:
        if not done:
            done.append(True)
            after_drop()

    def create(*args: Any, **kwargs: Any) -> FileObject:
        try:
            return original(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            then()

    async def acreate(*args: Any, **kwargs: Any) -> FileObject:
        try:
            return await original(*args, **kwargs)  # type: ignore[no-any-return]
        finally:
            then()

    monkeypatch.setattr(api.client, "create", acreate if api.kind == "async" else create)


def test_lost_answer_adopts_ours_not_an_older_look_alike(
        emulator: Emulator, api: Api, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "report.txt", "0123456789")
    old = emulator.state.seed_file("report.txt", 10, created_at=int(time.time()) - 3600)
    _drop_then(emulator, api, monkeypatch, lambda: None)
    up = api.upload(p)
    assert up.adopted and up.id != old.id and up.suspects == ()
    assert sorted(f.id for f in emulator.state.listing()) == sorted([old.id, up.id])


def test_a_look_alike_arriving_after_a_lost_answer_is_neither_adopted_nor_deleted(
        emulator: Emulator, api: Api, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "report.txt", "0123456789")
    colleague: list[str] = []
    _drop_then(emulator, api, monkeypatch,
               lambda: colleague.append(emulator.state.seed_file("report.txt", 10).id))
    up = api.upload(p)
    ids = {f.id for f in emulator.state.listing()}
    assert colleague[0] in ids  # the colleague's file survives
    assert not up.adopted and up.id != colleague[0]
    assert len(ids) == 3  # ours (lost), the colleague's, and ours again
    assert {f.id for f in up.suspects} == ids - {up.id}


def test_a_suspect_of_a_batch_upload_is_said_once(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "in" / "report.txt", "0123456789")
    emulator.fail_next("store_then_drop")
    original = client.create
    colleague: list[str] = []

    def create(*args: Any, **kwargs: Any) -> FileObject:
        try:
            return original(*args, **kwargs)
        finally:
            if not colleague:
                colleague.append(emulator.state.seed_file("report.txt", 10).id)

    monkeypatch.setattr(client, "create", create)
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    suspects = {f.id for f in report.suspects}
    assert colleague[0] in suspects
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for fid in suspects:
        assert sum(f"{fid} (report.txt" in m and "may be a copy" in m for m in said) == 1


def test_a_failed_copy_found_after_a_lost_answer_is_reported_not_deleted(
        emulator: Emulator, api: Api, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "report.txt", "0123456789")
    failed: list[str] = []
    _drop_then(emulator, api, monkeypatch, lambda: failed.append(
        emulator.state.seed_file("report.txt", 10, status="error").id))
    up = api.upload(p)
    assert failed[0] in {f.id for f in emulator.state.listing()}
    assert failed[0] in {f.id for f in up.suspects}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_lost_answer_for_a_hostile_name_leaves_one_copy(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float],
        name: str) -> None:
    p = write(tmp_path / "f.txt", "0123456789")
    emulator.fail_next("store_then_drop")
    sent = _upload_as(client, p, name)
    assert sent.adopted, emulator.filenames()
    assert len(emulator.state.listing()) == 1


def _upload_as(client: kf.KimiFiles, path: Path, name: str) -> Any:
    """Upload ``path`` under the file name ``name`` (any name, even one no file system allows)."""
    from kimi_files._preflight import inspect_file
    from kimi_files._uploader import Claims, send_steps

    local = inspect_file(path, purpose="file-extract", limits=client.limits)
    local = dataclasses.replace(local, filename=name)
    return client.run(send_steps(client, local, purpose="file-extract",
                                 claims=Claims(f.id for f in client.list())))


def test_a_same_size_rewrite_during_the_upload_fails_and_removes_our_copy(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._preflight import inspect_file
    from kimi_files._uploader import Claims, send_steps

    text = b"".join(b"line %07d of the first version\n" % i for i in range(80_000))
    p = write(tmp_path / "live.txt", text)  # more than one piece: rewritten mid-send
    local = inspect_file(p, purpose="file-extract", limits=client.limits)
    rewritten = []

    def on_read(chunk: bytes) -> None:
        if not rewritten:
            rewritten.append(True)
            with open(p, "r+b") as fh:
                fh.write(text.replace(b"first", b"other"))

    with pytest.raises(kf.LocalFileError, match=r"changed while it was sent.*was deleted"):
        client.run(send_steps(client, local, purpose="file-extract", claims=Claims(),
                              on_read=on_read))
    assert emulator.state.listing() == []


def test_a_malformed_success_is_reconciled_not_reported_with_an_empty_id() -> None:
    from kimi_files._preflight import LocalFile
    from kimi_files._uploader import _answer_fits, _size_lie

    local = LocalFile(Path("x.txt"), "x.txt", 10, 0, "text/plain")
    with pytest.raises(kf.MalformedResponseError, match="no id"):
        _answer_fits(FileObject(id="", bytes=10), local)
    lie = _size_lie(FileObject(id="cl-1", bytes=9), local)
    assert lie is not None and "9 bytes where 10 were sent" in str(lie)
    _answer_fits(FileObject(id="cl-1", bytes=10), local)
    assert _size_lie(FileObject(id="cl-1", bytes=10), local) is None


def test_relisting_is_bounded() -> None:
    assert 0 < sum(RELIST_WAITS) <= 10


# --- resuming after a crash ---------------------------------------------------------------------


def _pending(store: Any, path: Path, server_time: int | None, name: str | None = None) -> None:
    from kimi_files._hashing import sha256_of

    store.begin(path, size=path.stat().st_size, mtime_ns=path.stat().st_mtime_ns,
                sha256=sha256_of(path), filename=name or path.name, server_time=server_time)


def test_resume_never_adopts_a_look_alike_that_was_there_before(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import StateStore

    p = write(tmp_path / "in" / "report.txt", "0123456789")
    client.list()
    now = client.clock.now()
    assert now is not None
    old = emulator.state.seed_file("report.txt", 10, created_at=now - 3600)
    with StateStore(tmp_path / "s.db") as store:
        _pending(store, p, now)  # a run was killed after its intent, before anything was stored
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = report.results
    assert result.status == "uploaded" and result.file_id != old.id
    # never adopted, never deleted; said (it may be a copy, or someone else's), once
    assert old.id in {f.id for f in emulator.state.listing()}
    assert [f.id for f in report.suspects] == [old.id]
    again = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert again.suspects == [] and again.results[0].status == "skipped"


def test_two_intents_that_could_own_one_copy_adopt_nothing_and_delete_nothing(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import StateStore

    a = write(tmp_path / "in" / "a" / "report.txt", "0123456789")
    b = write(tmp_path / "in" / "b" / "report.txt", "9876543210")
    client.list()
    now = client.clock.now()
    with StateStore(tmp_path / "s.db") as store:
        _pending(store, a, now)
        _pending(store, b, now)
    with a.open("rb") as fh:  # one of them reached the server; nobody can tell which
        copy = client.create(fh, filename="report.txt", content_type="text/plain")
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    assert [r.status for r in report.results] == ["uploaded", "uploaded"]
    assert copy.id not in {r.file_id for r in report.results}
    assert [f.id for f in report.suspects] == [copy.id]
    assert copy.id in {f.id for f in emulator.state.listing()}
    assert "kimi-files delete " + copy.id in report.summary()
    # every content reached the server: each result's file is a separate stored file
    assert len({r.file_id for r in report.results}) == 2


def test_an_intent_of_an_old_version_reports_no_time_and_is_never_adopted(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import StateStore

    p = write(tmp_path / "in" / "report.txt", "0123456789")
    with StateStore(tmp_path / "s.db") as store:
        _pending(store, p, None)
    with p.open("rb") as fh:
        copy = client.create(fh, filename="report.txt", content_type="text/plain")
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    (result,) = report.results
    assert result.status == "uploaded" and result.file_id != copy.id
    assert [f.id for f in report.suspects] == [copy.id]


def test_a_copy_a_killed_run_stores_late_is_reported(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import StateStore

    p = write(tmp_path / "in" / "report.txt", "0123456789")
    client.list()
    now = client.clock.now()
    with StateStore(tmp_path / "s.db") as store:
        _pending(store, p, now)
    late: list[str] = []

    def on_result(result: Any) -> None:  # the killed run's request lands during this run
        late.append(emulator.state.seed_file("report.txt", 10).id)

    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db",
                       on_result=on_result)
    (result,) = report.results
    assert result.status == "uploaded" and result.file_id != late[0]
    assert [f.id for f in report.suspects] == late


def test_same_name_uploads_write_their_intent_only_once_it_is_their_turn(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    from kimi_files._state import StateStore

    for d in "abcd":
        write(tmp_path / "in" / d / "report.txt", f"content {d}")
    calls: list[tuple[str, str]] = []

    class Recording(StateStore):
        def begin(self, path: Any, **kw: Any) -> None:
            calls.append(("begin", str(path)))
            super().begin(path, **kw)

        def done(self, path: Any, **kw: Any) -> None:
            calls.append(("done", str(path)))
            super().done(path, **kw)

    with Recording(tmp_path / "s.db") as store:
        report = kf.ingest([tmp_path / "in"], client=client, state=store, concurrency=4)
    assert report.ok
    # never two intents of look-alike uploads open at once
    assert [c[0] for c in calls] == ["begin", "done"] * 4


# --- options, pacing, proxies -------------------------------------------------------------------


def test_bad_options_are_refused_before_any_request_or_deletion(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.txt", "hello")
    emulator.state.seed_file("old.txt", 5)
    with pytest.raises(kf.ConfigurationError, match=r"rpm .* at least 1, not 0"):
        kf.ingest([tmp_path / "in"], client=client, rpm=0, free_quota="oldest", state=False)
    with pytest.raises(kf.ConfigurationError, match=r"free_quota must be .*'oldset'"):
        kf.ingest([tmp_path / "in"], client=client, free_quota="oldset", state=False)  # type: ignore[arg-type]
    with pytest.raises(kf.ConfigurationError, match=r"free_quota must be .*'oldset'"):
        client.upload(tmp_path / "in" / "a.txt", free_quota="oldset")  # type: ignore[arg-type]
    with pytest.raises(kf.ConfigurationError, match="concurrency must be"):
        kf.ingest([tmp_path / "in"], client=client, concurrency=0, state=False)
    assert emulator.requests == [] and len(emulator.state.listing()) == 1


def test_a_429_teaches_the_pacer_inside_its_slot(emulator: Emulator, client: kf.KimiFiles,
                                                 no_wait: list[float]) -> None:
    emulator.fail_next("max_concurrency", times=3, endpoint="list", limit=1, after=1)
    client.list()
    # three 429s: the window halves each time and is never counted as a success first
    assert client.pacer.concurrency == 1 and client.pacer.window == 1


def test_a_loopback_base_url_never_goes_through_a_proxy(
        emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import API_KEY

    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, max_retries=0) as c:
        assert c.list().data == ()


# --- one run per state ------------------------------------------------------------------------


def test_a_second_run_on_the_same_state_stops_at_once(emulator: Emulator, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from kimi_files._state import StateStore

    from .conftest import API_KEY

    write(tmp_path / "in" / "a.txt", "hello")
    state = tmp_path / "s.db"
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emulator.base_url}
    with StateStore(state):  # another run holds it
        r = subprocess.run([str(Path(sys.executable).parent / "kimi-upload"), "--state", str(state),
                            str(tmp_path / "in")], env=env, capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"pid {os.getpid()}" in r.stderr and str(state) in r.stderr and "--wait" in r.stderr
    assert "Traceback" not in r.stderr and emulator.requests == []


def test_a_state_removed_mid_run_stops_the_run(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path / "in" / f"f{i}.txt", f"file {i}")
    state = tmp_path / "s.db"

    def on_result(result: Any) -> None:
        if state.exists():
            state.unlink()

    with pytest.raises(kf.StateError, match="was removed while this run was using it"):
        kf.ingest([tmp_path / "in"], client=client, state=state, concurrency=1,
                  on_result=on_result)
    assert len(emulator.state.listing()) < 6  # it stopped instead of uploading unrecorded


# --- the hostile findings: each a test ------------------------------------------------------


def test_a_late_copy_of_an_interrupted_attempt_is_never_adopted_for_another_file(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    """Run 3 sends f1 and is killed (the server keeps extracting); run 4 re-sends f1 and is
    killed after beginning f2; run 3's copy of f1 lands; run 5 must not take it for f2."""
    from kimi_files._hashing import sha256_of
    from kimi_files._state import StateStore

    f1 = write(tmp_path / "data" / "f1" / "report.txt", "report number 0001\n")
    f2 = write(tmp_path / "data" / "f2" / "report.txt", "report number 0002\n")
    client.list()
    now = client.clock.now()
    assert now is not None

    def meta(p: Path) -> dict[str, Any]:
        return {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns, "sha256": "",
                "filename": "report.txt"}

    with StateStore(tmp_path / "s.db") as store:
        store.begin(f1, **meta(f1), server_time=now - 20)  # run 3, killed in flight
        second = store.begin(f1, **meta(f1), server_time=now - 10)  # run 4 sends f1 again
        with f1.open("rb") as fh:
            y = client.create(fh, filename="report.txt", content_type="text/plain")
        store.done(f1, **{**meta(f1), "sha256": sha256_of(f1)}, file_id=y.id, settles=second)
        store.begin(f2, **meta(f2), server_time=now - 5)  # run 4 begins f2, killed
    with f1.open("rb") as fh:  # run 3's request lands late
        late = client.create(fh, filename="report.txt", content_type="text/plain")
    report = kf.ingest([tmp_path / "data"], client=client, state=tmp_path / "s.db")
    by_path = {Path(r.path).parent.name: r for r in report.results}
    assert by_path["f1"].file_id == y.id
    assert by_path["f2"].status == "uploaded" and by_path["f2"].file_id != late.id
    assert client.content(by_path["f2"].file_id).text == "report number 0002\n"
    assert [f.id for f in report.suspects] == [late.id]


def test_two_uploads_of_look_alikes_on_one_client_never_take_each_others_copy(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, no_wait: list[float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path / "A" / "report.txt", "report of folder A\n")
    b = write(tmp_path / "B" / "report.txt", "report of folder B\n")
    emulator.fail_next("drop")  # A's first attempt is lost before the server stores it
    other: list[kf.UploadedFile] = []
    started: list[bool] = []
    original = client.create

    def create(*args: Any, **kwargs: Any) -> FileObject:
        try:
            return original(*args, **kwargs)
        finally:
            if not started:  # meanwhile B, on the same client, is stored
                started.append(True)
                other.append(client.upload(b))

    monkeypatch.setattr(client, "create", create)
    up_a = client.upload(a)
    assert up_a.id != other[0].id and not up_a.adopted
    assert client.content(up_a.id).text == "report of folder A\n"


def test_names_a_server_may_store_alike_go_one_after_the_other() -> None:
    from kimi_files._planner import _groups
    from kimi_files._preflight import LocalFile
    from kimi_files._scan import Item

    def item(name: str, size: int = 15) -> Item:
        return Item(LocalFile(Path("/x") / name, name, size, 0, "text/plain"), name)

    one, two, other, bigger = item("a\\b.txt"), item("a\\\\b.txt"), item("c.txt"), item("a\\b.txt", 16)
    groups = _groups([one, other, two, bigger])
    assert groups == ((one, two), (other,), (bigger,))


def test_a_same_size_rewrite_after_hashing_with_the_mtime_put_back_is_caught(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import kimi_files._batch as batch

    a = write(tmp_path / "in" / "a.txt", "first document\n")
    b = write(tmp_path / "in" / "b.txt", "second document")  # same size: hashed up front
    real = batch.hash_where_needed

    def then_rewrite(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        st = b.stat()
        b.write_bytes(b"EVIL! document\n")
        os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p or rsync -a would
        return result

    monkeypatch.setattr(batch, "hash_where_needed", then_rewrite)
    report = kf.ingest([tmp_path / "in"], client=client, state=tmp_path / "s.db")
    by_name = {Path(r.path).name: r for r in report.results}
    assert by_name["a.txt"].status == "uploaded"
    assert by_name["b.txt"].status == "failed"
    assert "changed while it was sent (or since it was hashed)" in str(by_name["b.txt"].error)
    assert emulator.filenames() == ["a.txt"]  # b's copy was ours, and was removed
    assert a.exists()


def test_the_server_clock_trusts_its_own_stored_times_over_a_date_that_runs_ahead() -> None:
    now = [0.0]
    clock = ServerClock(monotonic=lambda: now[0])
    clock.observe(2_000_000_000)  # a Date header a year ahead
    clock.observe_stored(1_968_000_000)  # what the storage clock said for our own upload
    assert clock.now() == 1_968_000_000
    now[0] = 5.5
    assert clock.now() == 1_968_000_005


def test_a_copy_stored_after_the_client_timed_out_is_adopted_by_the_relisting(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's ``store_late`` fault: the answer is held past the client's time-out and
    the file stored only then (a slow extraction). The client lists again after a pause
    before it sends again: that pause is where the late copy lands (the test makes the pause
    end exactly when the server has stored it, instead of sleeping)."""
    import kimi_files._retry as retry

    from .conftest import API_KEY

    p = write(tmp_path / "slow.txt", "stored after the client gave up\n")
    fault = emulator.state.add_fault("store_late", delay=0.05)
    pauses: list[float] = []

    def pause(seconds: float, stop: Any = None, **kwargs: Any) -> bool:
        pauses.append(seconds)
        assert fault.stored.wait(30)  # the server stores it during our pause
        return True

    monkeypatch.setattr(retry, "sleep", pause)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, timeout=0.3) as c:
        up = c.upload(p)
    assert up.adopted and up.attempts == 1 and up.suspects == ()
    assert [f.id for f in emulator.state.listing()] == [up.id]
    assert len(pauses) == 1  # one pause (the retry's), then the listing found the copy
    assert _post_count(emulator) == 1  # never sent twice


def _post_count(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST")


def test_a_typo_in_free_quota_is_a_type_error_under_mypy(tmp_path: Path) -> None:
    from mypy import api

    code = tmp_path / "typo.py"
    code.write_text("import kimi_files\n"
                    "kimi_files.upload('a.txt', free_quota='oldset')\n"
                    "kimi_files.upload('a.txt', free_quota='oldest')\n"
                    "kimi_files.upload('a.txt', free_quota=['cl-1', 'cl-2'])\n")
    out, _, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "c"),
                              str(code)])
    assert status == 1, out
    assert out.count("error:") == 1 and "typo.py:2:" in out and "free_quota" in out, out
