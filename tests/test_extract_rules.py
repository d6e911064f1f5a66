"""The decisions of the extract pipeline (kimi_files._extract_rules), with no server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_files._extract_rules import (
    admit,
    deletes_after_text,
    leftovers,
    no_room_message,
    status_of,
    window_for,
)
from kimi_files._models import FileObject
from kimi_files._quota import Usage
from kimi_files._state import OpenAttempt, Record
from kimi_files.errors import (
    ExtractionFailedError,
    LocalEmptyFileError,
    NoExtractableTextError,
    NotEnoughFileSlotsError,
    TokenQuotaExceededError,
)

NOW = 1_700_000_000


def _usage(files: int, max_files: int, used: int = 0, max_bytes: int = 10**10) -> Usage:
    return Usage(files=files, bytes=used, max_files=max_files, max_bytes=max_bytes)


@given(st.integers(0, 1200), st.integers(1, 1000), st.none() | st.integers(1, 2000))
def test_the_window_never_passes_the_free_slots_nor_what_was_asked(files: int, max_files: int,
                                                                   asked: int | None) -> None:
    usage = _usage(files, max_files)
    window = window_for(usage, asked)
    assert 0 <= window <= usage.free_files
    if asked is not None:
        assert window <= asked
    else:
        assert window == usage.free_files


@settings(max_examples=300)
@given(sizes=st.lists(st.integers(1, 100), min_size=1, max_size=40),
       window=st.integers(0, 6), free_bytes=st.integers(0, 300), keep=st.booleans(),
       order=st.randoms(use_true_random=False))
def test_admission_never_passes_the_window_or_the_bytes_and_every_fitting_document_runs(
        sizes: list[int], window: int, free_bytes: int, keep: bool, order: object) -> None:
    """A simulated run: documents start when admitted, end (and are deleted, unless kept) in
    a random order. The run's files on the server never pass the window or the free bytes;
    without keep every document that fits at all is run; nothing waits forever."""
    import random

    assert isinstance(order, random.Random)
    pending = list(enumerate(sizes))
    held: dict[int, int] = {}
    ran: set[int] = set()
    never: set[int] = set()
    while pending or held:
        progressed = False
        for i, size in list(pending):
            verdict = admit(size, held_files=len(held), held_bytes=sum(held.values()),
                            window=window, free_bytes=free_bytes, releases=not keep)
            if verdict == "now":
                held[i] = size
                ran.add(i)
                pending.remove((i, size))
                progressed = True
                assert len(held) <= window and sum(held.values()) <= free_bytes
            elif verdict == "never":
                never.add(i)
                pending.remove((i, size))
                progressed = True
            else:
                assert held, "told to wait with nothing of the run's to be deleted"
                break  # documents start in order
        if held and not keep:
            del held[order.choice(sorted(held))]
            progressed = True
        elif keep and not progressed:
            break
        if not pending and keep:
            break
        assert progressed
    fits = {i for i, s in enumerate(sizes) if s <= free_bytes and window > 0}
    if not keep:
        assert ran == fits and never == set(range(len(sizes))) - fits
    else:
        assert len(ran) <= window and ran | never == set(range(len(sizes)))


def test_admission_at_the_edges() -> None:
    assert admit(10, held_files=0, held_bytes=0, window=1, free_bytes=10, releases=True) == "now"
    assert admit(11, held_files=0, held_bytes=0, window=5, free_bytes=10, releases=True) == "never"
    assert admit(5, held_files=1, held_bytes=6, window=5, free_bytes=10, releases=True) == "wait"
    assert admit(5, held_files=1, held_bytes=6, window=5, free_bytes=10, releases=False) == "never"
    assert admit(1, held_files=2, held_bytes=2, window=2, free_bytes=10, releases=True) == "wait"
    assert admit(1, held_files=0, held_bytes=0, window=0, free_bytes=10, releases=True) == "never"


def test_only_files_this_run_stored_are_deleted_after_the_text() -> None:
    assert deletes_after_text("stored", keep=False) and deletes_after_text("adopted", keep=False)
    assert not deletes_after_text("reused", keep=False)
    assert not deletes_after_text("cached", keep=False)
    assert not any(deletes_after_text(o, keep=True)  # type: ignore[arg-type]
                   for o in ("stored", "adopted", "reused", "cached"))


def test_status_of_each_error() -> None:
    assert status_of(NoExtractableTextError("text extract error", status_code=400)) == "no_text"
    assert status_of(LocalEmptyFileError("empty")) == "refused"
    assert status_of(NotEnoughFileSlotsError("no room")) == "refused"
    assert status_of(ExtractionFailedError("500", status_code=500)) == "failed"
    assert status_of(TokenQuotaExceededError("429", status_code=429)) == "failed"


def test_the_no_room_message_names_the_quota() -> None:
    text = no_room_message(_usage(1000, 1000, used=5 * 1024**3), "12 document(s)")
    assert "holds 1,000 of 1,000 files" in text and "12 document(s)" in text
    assert "1,000 files and 10 GB per account" in text and "nothing was sent or deleted" in text


def _file(fid: str, name: str, size: int, created: int) -> FileObject:
    return FileObject(id=fid, bytes=size, created_at=created, filename=name,
                      purpose="file-extract")


def _attempt(aid: int, path: str, name: str, size: int, since: int | None) -> OpenAttempt:
    return OpenAttempt(aid, path, name, size, "file-extract", since, float(since or NOW))


names = st.sampled_from(["a.txt", "b.txt", "report.pdf"])


@settings(max_examples=300)
@given(listed=st.lists(st.tuples(names, st.integers(1, 3), st.integers(NOW - 100, NOW + 100)),
                       max_size=8),
       attempts=st.lists(st.tuples(names, st.integers(1, 3), st.integers(NOW - 50, NOW + 50)),
                         max_size=4),
       recorded=st.lists(st.integers(0, 7), max_size=3, unique=True),
       claimed=st.lists(st.integers(0, 7), max_size=3, unique=True))
def test_leftovers_delete_only_what_is_provably_the_runs(
        listed: list[tuple[str, int, int]], attempts: list[tuple[str, int, int]],
        recorded: list[int], claimed: list[int]) -> None:
    listing = [_file(f"f{i}", n, s, c) for i, (n, s, c) in enumerate(listed)]
    records = [Record(f"/r{i}", listing[i].bytes, 0, "", listing[i].filename, listing[i].id,
                      "uploaded") for i in recorded if i < len(listing)]
    ledger = [_attempt(j, f"/d{j % 2}/{n}", n, s, since) for j, (n, s, since) in enumerate(attempts)]
    others = {listing[i].id for i in claimed if i < len(listing)}
    plan = leftovers(records, ledger, listing, others, server_now=NOW + 60, wall_now=None)
    deleted = {f.id for f in plan.delete}
    recorded_ids = {r.file_id for r in records}
    assert len(deleted) == len(plan.delete)  # each once
    assert recorded_ids <= deleted  # every file whose id came in a run's answer
    for f in plan.delete:
        if f.id in recorded_ids:
            continue
        assert f.id not in others  # never a file known to be someone else's
        owners = [a for a in ledger if a.filename == f.filename and a.size == f.bytes]
        assert len({a.path for a in owners if a.size == f.bytes}) == 1  # one document
        assert f.created_at >= min(a.server_time for a in owners)  # type: ignore[type-var]
        # no more files alike than that document's attempts could have stored
        alike = [g for g in listing if g.filename == f.filename and g.bytes == f.bytes
                 and g.id not in others | recorded_ids]
        assert f in alike and len(alike) <= len(owners)
    assert not deleted & {f.id for _, f in plan.suspects}
    # an attempt is settled once, or stays open: never both
    assert not set(plan.settle) & {a.id for a in plan.open}
    assert set(plan.settle) | {a.id for a in plan.open} == {a.id for a in ledger}


def test_leftovers_of_an_attempt_beside_a_look_alike_are_suspects() -> None:
    ours = _file("f-ours", "a.txt", 5, NOW + 1)
    theirs = _file("f-theirs", "a.txt", 5, NOW - 30)
    attempt = _attempt(1, "/in/a.txt", "a.txt", 5, NOW)
    alone = leftovers([], [attempt], [ours], (), server_now=NOW + 2, wall_now=None)
    assert [f.id for f in alone.delete] == ["f-ours"] and alone.settle == (1,)
    assert alone.forget == () and alone.open == ()
    both = leftovers([], [attempt], [ours, theirs], (), server_now=NOW + 2, wall_now=None)
    assert both.delete == () and {f.id for _, f in both.suspects} == {"f-ours", "f-theirs"}
    assert both.open == (attempt,) and both.settle == ()
    # the attempts of one document by runs killed one after the other are one owner
    again = _attempt(2, "/in/a.txt", "a.txt", 5, NOW + 1)
    twice = leftovers([], [attempt, again], [ours], (), server_now=NOW + 2, wall_now=None)
    assert [f.id for f in twice.delete] == ["f-ours"]
    assert twice.settle == (1,) and twice.open == (again,)  # the other may still land one
    late_copy = _file("f-late", "a.txt", 5, NOW + 3)
    both_landed = leftovers([], [attempt, again], [ours, late_copy], (), server_now=NOW + 4,
                            wall_now=None)
    assert sorted(f.id for f in both_landed.delete) == ["f-late", "f-ours"]
    assert sorted(both_landed.settle) == [1, 2] and both_landed.open == ()
    three = _file("f-3", "a.txt", 5, NOW + 3)  # more copies than attempts: someone else's?
    too_many = leftovers([], [attempt, again], [ours, late_copy, three], (),
                         server_now=NOW + 4, wall_now=None)
    assert too_many.delete == () and len(too_many.suspects) == 3
    other = _attempt(3, "/in/b/a.txt", "a.txt", 5, NOW + 1)  # another document alike
    alike = leftovers([], [attempt, other], [ours], (), server_now=NOW + 2, wall_now=None)
    assert alike.delete == () and [f.id for _, f in alike.suspects] == ["f-ours"] * 2
    # an attempt too old for a copy to land any more is settled, its suspects reported
    late = leftovers([], [attempt], [ours, theirs], (), server_now=NOW + 5000, wall_now=None)
    assert late.settle == (1,) and late.delete == () and len(late.suspects) == 2
