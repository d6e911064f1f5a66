"""kill -9 at random moments during a batch, then a re-run: no duplicates, nothing missing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from kimi_files._state import StateStore
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write

KIMI_UPLOAD = str(Path(sys.executable).parent / "kimi-upload")


#: A run of the async batch in a process of its own (the CLI is the sync one).
AINGEST = ("import asyncio, sys, kimi_files as kf; "
           "r = asyncio.run(kf.aingest([sys.argv[2]], state=sys.argv[1], concurrency=4)); "
           "sys.exit(0 if r.ok and not r.suspects_remain else 1)")


def _run(emu: Emulator, folder: Path, state: Path, kill_after: float | None,
         mode: str = "sync") -> int | None:
    """One run (``kimi-upload``, or ``aingest`` in a Python process); with ``kill_after``,
    SIGKILL it once that many seconds have passed *and* it has sent an upload (so every kill
    interrupts a run in the middle)."""
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emu.base_url}
    posts_before = sum(r.method == "POST" for r in emu.requests)
    command = ([KIMI_UPLOAD, "--state", str(state), "--no-progress", "--json",
                "--concurrency", "4", str(folder)] if mode == "sync"
               else [sys.executable, "-c", AINGEST, str(state), str(folder)])
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if kill_after is None:
        return proc.wait(120)
    deadline = time.monotonic() + 60
    while (sum(r.method == "POST" for r in emu.requests) == posts_before
           and time.monotonic() < deadline):
        time.sleep(0.01)
    time.sleep(kill_after)
    assert proc.poll() is None, "the run finished before the kill: it interrupted nothing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # a killed client's last request may still be finishing on the server: let it land
    deadline = time.monotonic() + 10
    while emu.state.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    return None


def _crash_then_finish(emu: Emulator, tmp_path: Path, files: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    folder = tmp_path / "in"
    paths = [write(folder / f"d{i % 5}" / f"file{i:03d}.txt", f"document {i}\n" * (i + 1))
             for i in range(files)]
    state = tmp_path / "state.sqlite3"
    emu.state.extract_delay = 0.03
    for _ in range(kills):
        _run(emu, folder, state, kill_after=rng.uniform(0.0, 0.3))
    assert _run(emu, folder, state, kill_after=None) == 0
    with StateStore(state) as store:
        assert store.integrity_ok()
        records = store.records()
        reported = store.suspects()
    assert len(records) == files and {r.status for r in records} == {"uploaded"}
    assert {Path(r.path) for r in records} == {p.absolute() for p in paths}
    stored = {f.id: f for f in emu.state.listing()}
    for rec in records:  # every file stored, with its own content
        copy = stored[rec.file_id]
        assert copy.path is not None and copy.path.read_bytes() == Path(rec.path).read_bytes()
    # a copy beyond one a file (a killed request that landed, a lost answer that cannot be
    # told apart) is never adopted or deleted, and always reported
    extras = set(stored) - {r.file_id for r in records}
    assert extras <= reported, (sorted(extras - reported), Counter(emu.filenames()))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kill_9_next_to_look_alikes_never_records_the_wrong_file(emulator: Emulator,
                                                                 tmp_path: Path,
                                                                 mode: str) -> None:
    """Folders that each hold an equal-size report.txt (and one already in the account):
    after kills at random moments and a final run, every file's record names a stored file
    with *its* content, and every content reached the server."""
    rng = random.Random(11)
    folder = tmp_path / "in"
    paths = [write(folder / f"dept{i:02d}" / "report.txt", f"report of dept {i:02d}\n")
             for i in range(24)]
    size = paths[0].stat().st_size
    outsider = emulator.state.seed_file("report.txt", size, created_at=int(time.time()) - 60)
    emulator.state.extract_delay = 0.05
    state = tmp_path / "state.sqlite3"
    for _ in range(3):
        _run(emulator, folder, state, kill_after=rng.uniform(0.0, 0.2), mode=mode)
    code = _run(emulator, folder, state, kill_after=None, mode=mode)
    stored = {f.id: f for f in emulator.state.listing()}
    assert outsider.id in stored  # someone else's look-alike is never touched
    with StateStore(state) as store:
        records = store.records()
        reported = store.suspects()
    # look-alikes next to killed requests cannot always be told apart: then the copies are
    # reported and the run exits 1 (possible extra copies remain), else 0
    assert code == 0 or (code == 1 and reported), code
    assert len(records) == len(paths) and {r.status for r in records} == {"uploaded"}
    for rec in records:
        copy = stored[rec.file_id]
        assert copy.path is not None and copy.path.read_bytes() == Path(rec.path).read_bytes(), (
            f"{rec.path} is recorded as {rec.file_id}, which holds another file's content")
    assert len({r.file_id for r in records}) == len(paths)
    assert outsider.id not in {r.file_id for r in records}


def test_kill_9_then_rerun(emulator: Emulator, tmp_path: Path) -> None:
    _crash_then_finish(emulator, tmp_path, files=40, kills=3, seed=7)


@pytest.mark.slow
def test_kill_9_many_times(emulator: Emulator, tmp_path: Path) -> None:
    for seed in range(5):
        emulator.state.reset()
        _crash_then_finish(emulator, tmp_path / str(seed), files=120, kills=6, seed=seed)


def test_ctrl_c_stops_cleanly_then_rerun_completes(emulator: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    paths = [write(folder / f"f{i:02d}.txt", f"doc {i}\n") for i in range(30)]
    state = tmp_path / "state.sqlite3"
    emulator.state.extract_delay = 0.1
    env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONSHOT_BASE_URL": emulator.base_url}
    proc = subprocess.Popen([KIMI_UPLOAD, "--state", str(state), "--no-progress",
                             "--concurrency", "2", str(folder)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(emulator.filenames()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(emulator.filenames())
    assert 3 <= done < 30
    assert out.count("uploaded ") == done  # every upload that finished was reported
    with StateStore(state) as store:
        assert sum(r.status == "uploaded" for r in store.records()) == done
    assert _run(emulator, folder, state, kill_after=None) == 0
    assert Counter(emulator.filenames()) == Counter(p.name for p in paths)
