"""The state store: rows before and after an upload, its location, no key in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_files.state import StateStore, default_state_path, sha256_of

from .conftest import API_KEY, write


def test_intent_then_done(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "abc")
    with StateStore(tmp_path / "s.db") as store:
        assert store.get(f) is None
        store.begin(f, size=3, mtime_ns=1, sha256="", filename="a.txt")
        rec = store.get(f)
        assert rec is not None and rec.status == "pending" and rec.file_id is None
        store.done(f, size=3, mtime_ns=1, sha256=sha256_of(f), filename="a.txt", file_id="x")
        rec = store.get(tmp_path / "." / "a.txt")  # the same file by another spelling
        assert rec is not None and (rec.status, rec.file_id) == ("uploaded", "x")
        assert rec.path == str(f) and rec.sha256 == sha256_of(f)
        assert store.integrity_ok()
    with StateStore(tmp_path / "s.db") as again:  # it persists
        assert [r.file_id for r in again.records()] == ["x"]


def test_non_utf8_paths_are_kept_exactly(tmp_path: Path) -> None:
    import os

    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    name = os.fsdecode(raw)
    with StateStore(tmp_path / "s.db") as store:
        store.done(name, size=1, mtime_ns=1, sha256="h", filename="caf\ufffd.txt", file_id="y")
        assert store.get(name) is not None and store.records()[0].path == name


def test_location_per_account_and_base_url(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    a = default_state_path("https://api.moonshot.ai/v1", API_KEY)
    b = default_state_path("https://api.moonshot.cn/v1", API_KEY)
    c = default_state_path("https://api.moonshot.ai/v1", API_KEY + "x")
    assert a.parent == tmp_path / "xdg" / "kimi-files"
    assert len({a, b, c}) == 3
    assert API_KEY not in str(a) and a.name.startswith("api.moonshot.ai_https-")
    monkeypatch.setenv("KIMI_FILES_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_path("http://127.0.0.1:8000/v1", "k").parent == tmp_path / "explicit"
