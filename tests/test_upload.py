"""kimi_files.upload() against the emulator: preflight, room, streaming, retries, no duplicates."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files._config import Limits
from kimi_files._progress import ProgressBar
from kimi_files._reconcile import RELIST_WAITS
from kimi_files._uploader import FileBody
from kimi_files.emulator import Emulator

from .conftest import API_KEY, emulator_process, write

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"


def _posts(emu: Emulator) -> list[object]:
    return list(emu.uploads())


def test_upload_returns_the_stored_file(emulator: Emulator, tmp_path: Path) -> None:
    p = write(tmp_path / "report.md", "# Report\n")
    up = kf.upload(p, api_key=API_KEY, base_url=emulator.base_url, progress=False)
    assert isinstance(up, kf.FileObject) and isinstance(up, kf.UploadedFile)
    assert up.filename == "report.md" and up.bytes == 9 and up.attempts == 1
    assert not up.adopted and up.deleted == () and up.path == str(p)
    assert emulator.filenames() == ["report.md"]


def test_detected_type_is_sent_as_content_type(emulator: Emulator, client: kf.KimiFiles) -> None:
    up = client.upload(CORPUS / "kimi-files-intro.pdf")
    assert up.mime_type == "application/pdf"
    assert emulator.state.files[up.id].content_type == "application/pdf"


@pytest.mark.parametrize(
    ("make", "cls", "pattern"),
    [
        (lambda d: d / "missing.txt", kf.LocalFileError, "missing.txt: no such file"),
        (lambda d: d, kf.LocalFileError, "a directory, not a regular file"),
        (lambda d: write(d / "empty.txt", b""), kf.EmptyFileError, "empty.txt: the file is empty"),
        (lambda d: write(d / "big.txt", b"x" * 31), kf.FileTooLargeError,
         "big.txt: 31 bytes is over the per-file limit of 30 bytes"),
        (lambda d: write(d / "a.tar.gz", gzip.compress(b"data")), kf.UnsupportedFileTypeError,
         "a.tar.gz: the content is application/gzip"),
    ],
    ids=["missing", "directory", "empty", "too-large", "archive"],
)
def test_refused_locally_sends_nothing(emulator: Emulator, tmp_path: Path, make: object,
                                       cls: type[Exception], pattern: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                      limits=Limits(max_file_bytes=30)) as c, pytest.raises(cls, match=pattern):
        c.upload(path)
    assert _posts(emulator) == []
    assert all(r.method == "GET" for r in emulator.requests)


def test_fifo_and_symlink_loop_and_bad_purpose(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(kf.LocalFileError, match="a FIFO"):
        client.upload(fifo)
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with pytest.raises(kf.LocalFileError, match="symbolic link loop"):
        client.upload(loop)
    with pytest.raises(kf.InvalidPurposeError, match="'fine-tune' is not accepted"):
        client.upload(write(tmp_path / "a.txt", "x"), purpose="fine-tune")
    assert emulator.requests == []


def test_unreadable_file(client: kf.KimiFiles, tmp_path: Path, emulator: Emulator,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "secret.txt", "x")
    p.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for a user
        import builtins

        real_open = builtins.open

        def guarded(file: object, *a: object, **kw: object) -> object:
            if str(file) == str(p):
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(file, *a, **kw)  # type: ignore[call-overload]

        monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(kf.LocalFileError, match="secret.txt: permission denied"):
        client.upload(p)
    assert emulator.requests == []


def test_type_override_and_mismatch_warning(emulator: Emulator, client: kf.KimiFiles,
                                            tmp_path: Path) -> None:
    blob = write(tmp_path / "data.gz", gzip.compress(b"data"))
    up = client.upload(blob, allow_any_type=True)
    assert up.mime_type == "application/gzip"
    fake = write(tmp_path / "notes.pdf", "plain text, not a PDF\n")
    up = client.upload(fake)
    assert up.mime_type == "text/plain"
    assert up.warnings and "suggests application/pdf" in up.warnings[0]


def test_no_room_refuses_before_sending(emulator: Emulator, tmp_path: Path, limited: Any) -> None:
    client = limited(max_files=3)
    for i in range(3):
        emulator.seed(f"old{i}.txt", 10, created_at=1000 + i)
    with pytest.raises(kf.NotEnoughFileSlotsError, match="1 file.s. must go") as info:
        client.upload(write(tmp_path / "a.txt", "x"))
    assert info.value.files_to_free == 1
    assert "free_quota='oldest'" in str(info.value)
    assert [r.method for r in emulator.requests] == ["GET"]
    assert len(emulator.filenames()) == 3


def test_free_quota_oldest_deletes_exactly_what_is_needed(emulator: Emulator,
                                                          tmp_path: Path, limited: Any) -> None:
    client = limited(max_files=5, max_total_bytes=100)
    seeded = [emulator.seed(f"old{i}.txt", 30, created_at=1000 - i) for i in range(3)]
    # 90 of 100 bytes used: a 25-byte file needs 15 bytes, i.e. the single oldest file
    up = client.upload(write(tmp_path / "new.txt", "y" * 25), free_quota="oldest")
    assert [f.id for f in up.deleted] == [seeded[2].id]
    assert sorted(emulator.filenames()) == ["new.txt", "old0.txt", "old1.txt"]
    deletes = [r for r in emulator.requests if r.method == "DELETE"]
    assert len(deletes) == 1


def test_free_quota_never_deletes_when_the_upload_would_fail_anyway(emulator: Emulator,
                                                                    tmp_path: Path, limited: Any) -> None:
    client = limited(max_files=1)
    emulator.seed("old.txt", 1)
    with pytest.raises(kf.EmptyFileError):
        client.upload(write(tmp_path / "empty.txt", b""), free_quota="oldest")
    assert emulator.filenames() == ["old.txt"]
    assert not [r for r in emulator.requests if r.method == "DELETE"]


def test_retries_extraction_failures_and_rewinds(emulator: Emulator, client: kf.KimiFiles,
                                                 tmp_path: Path, no_wait: list[float]) -> None:
    # not one repeated character: the service (and the emulator) finds no text in that
    p = write(tmp_path / "a.txt", "0123456789" * 20_000)
    emulator.fail_next("extraction_failed", times=2)
    up = client.upload(p)
    assert up.attempts == 3 and len(no_wait) == 2
    posts = _posts(emulator)
    assert len(posts) == 3 and all(r.body_bytes == 200_000 for r in posts)  # type: ignore[attr-defined]
    assert emulator.filenames() == ["a.txt"]
    assert emulator.state.files[up.id].path.read_bytes() == p.read_bytes()  # type: ignore[union-attr]


def test_rate_limit_wait_is_the_servers(emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
                                        no_wait: list[float]) -> None:
    emulator.fail_next("max_rpm", limit=3, after=7)
    emulator.fail_next("max_concurrency", limit=1, after=2)
    up = client.upload(write(tmp_path / "a.txt", "x"))
    assert up.attempts == 3
    # the server's figures, each plus up to `jitter` (1 s) so that workers do not wake together
    assert 7 <= no_wait[0] <= 8 and 2 <= no_wait[1] <= 3
    # the client's pacer learned "max RPM: 3": the fourth request of the minute (the list
    # counts too) waits for the window instead of drawing another 429
    assert len(no_wait) == 3 and 60 < no_wait[2] < 62


@pytest.mark.parametrize("fault", ["engine_overloaded", "invalid_state", "html_502", "html_503",
                                   "html_504", "empty_500", "garbage", "drop"])
def test_each_retryable_fault_is_retried(emulator: Emulator, client: kf.KimiFiles,
                                         tmp_path: Path, no_wait: list[float], fault: str) -> None:
    emulator.fail_next(fault)
    up = client.upload(write(tmp_path / "a.txt", "x"))
    assert up.attempts == 2
    assert emulator.filenames() == ["a.txt"]


@pytest.mark.parametrize(
    ("fault", "cls"),
    [("account_suspended", kf.AccountSuspendedError),
     ("token_quota", kf.TokenQuotaExceededError),
     ("invalid_authentication", kf.AuthenticationError),
     ("api_not_open", kf.PermissionDeniedError),
     ("invalid_request", kf.InvalidRequestError),
     ("content_filter", kf.ContentFilterError)],
)
def test_never_retried(emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
                       no_wait: list[float], fault: str, cls: type[Exception]) -> None:
    emulator.fail_next(fault, times=5)
    with pytest.raises(cls):
        client.upload(write(tmp_path / "a.txt", "x"))
    assert len(_posts(emulator)) == 1 and no_wait == []


def test_attempts_are_bounded(emulator: Emulator, tmp_path: Path, no_wait: list[float]) -> None:
    emulator.fail_next("engine_overloaded", times=10)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, max_retries=2) as c, \
            pytest.raises(kf.EngineOverloadedError):
        c.upload(write(tmp_path / "a.txt", "x"))
    assert len(_posts(emulator)) == 3
    emulator.state.clear_faults()
    emulator.fail_next("engine_overloaded", times=10)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c, \
            pytest.raises(kf.EngineOverloadedError):
        c.upload(write(tmp_path / "b.txt", "x"), max_retries=0)


def test_lost_response_is_adopted_not_duplicated(emulator: Emulator, client: kf.KimiFiles,
                                                 tmp_path: Path, no_wait: list[float]) -> None:
    emulator.fail_next("store_then_drop")
    up = client.upload(write(tmp_path / "a.txt", "hello"))
    assert up.adopted
    assert emulator.filenames() == ["a.txt"]
    assert len(_posts(emulator)) == 1  # the stored copy was found: nothing sent again


def test_repeated_lost_responses_still_leave_one_copy(emulator: Emulator, client: kf.KimiFiles,
                                                      tmp_path: Path,
                                                      no_wait: list[float]) -> None:
    emulator.fail_next("store_then_drop")
    emulator.fail_next("drop", endpoint="list")  # the reconciliation itself loses an answer
    up = client.upload(write(tmp_path / "a.txt", "hello"))
    assert up.adopted and emulator.filenames() == ["a.txt"]


def test_same_name_already_on_the_server_is_not_adopted(emulator: Emulator,
                                                        client: kf.KimiFiles, tmp_path: Path,
                                                        no_wait: list[float]) -> None:
    p = write(tmp_path / "a.txt", "hello")
    first = client.upload(p)
    emulator.fail_next("drop")  # not stored
    second = client.upload(p, reuse=False)
    assert not second.adopted and second.id != first.id
    assert emulator.filenames() == ["a.txt", "a.txt"]


def test_failed_status_is_deleted_then_retried(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path, no_wait: list[float]) -> None:
    emulator.fail_next("status_failed")
    up = client.upload(write(tmp_path / "a.txt", "hello"))
    assert up.attempts == 2 and up.status == "ok"
    assert emulator.filenames() == ["a.txt"]
    assert [r.method for r in emulator.requests] == ["GET", "POST", "DELETE", "POST"]


def test_timeout_after_body_sent_reconciles(emulator: Emulator, tmp_path: Path,
                                            no_wait: list[float]) -> None:
    emulator.fail_next("hang", delay=2)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, timeout=0.5) as c:
        up = c.upload(write(tmp_path / "a.txt", "hello"))
    assert up.attempts == 2 and emulator.filenames() == ["a.txt"]
    methods = [r.method for r in emulator.requests]
    # listed (again after short pauses: a slow server may store it late) before sending
    # again, and once more after, to report a copy stored late
    assert methods == ["GET", "POST", *["GET"] * (1 + len(RELIST_WAITS)), "POST", "GET"]
    assert no_wait[1:] == list(RELIST_WAITS)


def test_file_body_refuses_a_file_that_changed(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", b"12345")
    with p.open("rb") as fh:
        body = FileBody(fh, 10, "a.txt")
        with pytest.raises(kf.LocalFileError, match="shrank"):
            while body.read(4):
                pass
    with p.open("rb") as fh:
        body = FileBody(fh, 3, "a.txt")
        with pytest.raises(kf.LocalFileError, match="grew"):
            while body.read(2):
                pass


def test_file_body_rewinds(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", b"abcdef")
    rewinds: list[int] = []
    with p.open("rb") as fh:
        body = FileBody(fh, 6, "a.txt", on_rewind=lambda: rewinds.append(1))
        assert body.read(4) == b"abcd"
        body.seek(0)
        assert body.read() == b"abcdef" and rewinds == [1]


def test_file_changed_between_preflight_and_send(emulator: Emulator, client: kf.KimiFiles,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._uploader as up_mod

    p = write(tmp_path / "a.txt", "hello")
    real = up_mod._checked

    def then_grow(*a: Any, **kw: Any) -> Any:
        result = yield from real(*a, **kw)
        with p.open("ab") as fh:
            fh.write(b" world")
        return result

    monkeypatch.setattr(up_mod, "_checked", then_grow)
    with pytest.raises(kf.LocalFileError, match="changed since the preflight"):
        client.upload(p)
    assert _posts(emulator) == []


def test_progress_never_passes_total_and_rewinds() -> None:
    out = io.StringIO()
    kf.enable_progress_bars()
    bar = ProgressBar(total=10, enabled=True, file=out)
    kf.disable_progress_bars()
    try:
        bar.advance(7)
        bar.advance(7)
        assert bar.n == 10
        bar.rewind("retry 2")
        assert bar.n == 0
    finally:
        bar.close()
    assert "retry 2" in out.getvalue()


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_is_quiet_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_files._progress import enable_progress_bars, progress_enabled

    monkeypatch.delenv("KIMI_FILES_NO_PROGRESS", raising=False)
    enable_progress_bars()
    try:
        monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
        assert progress_enabled(None) is False  # a pipe or a file: no bar
        assert progress_enabled(True) is True  # asked for explicitly
        monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
        assert progress_enabled(None) is True  # a terminal: bars by default
        monkeypatch.setenv("KIMI_FILES_NO_PROGRESS", "1")
        assert progress_enabled(True) is False and progress_enabled(None) is False
    finally:
        kf.disable_progress_bars()


def test_a_large_upload_streams_in_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    line = b"constant memory: the file is read in chunks, never whole.\n"
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        block = line * (1024 * 1024 // len(line))
        for _ in range(48):
            fh.write(block)
    size = big.stat().st_size
    # the emulator in a process of its own: what is traced is the client's memory alone
    with emulator_process() as base_url, \
            kf.KimiFiles(api_key=API_KEY, base_url=base_url, cache=False) as client:
        tracemalloc.start()
        try:
            up = client.upload(big, progress=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert up.bytes == size
    # the client never holds the file: well under its size
    assert peak < 8 * 1024 * 1024 < size / 5, f"peak {peak:,} bytes for a {size:,}-byte upload"


def test_extract_path_and_id(emulator: Emulator, client: kf.KimiFiles, tmp_path: Path,
                             no_wait: list[float]) -> None:
    p = write(tmp_path / "季度报告.txt", "收入增长\n")
    assert kf.extract(p, client=client) == "收入增长\n"
    fid = emulator.state.listing()[0].id
    emulator.fail_next("extraction_failed", endpoint="content")
    assert kf.extract(file_id=fid, api_key=API_KEY, base_url=emulator.base_url) == "收入增长\n"
    assert len(no_wait) == 1
    with pytest.raises(kf.LocalFileError, match="no such file"):
        kf.extract(str(tmp_path / "nope.pdf"), client=client)
    # a file id is never taken for a path, nor a path for a file id
    with pytest.raises(kf.LocalFileError, match="no such file"):
        kf.extract("cl-abc.def", client=client)
    with pytest.raises(kf.ConfigurationError, match="a path, or file_id=..., and not both"):
        kf.extract(p, file_id=fid, client=client)
    with pytest.raises(kf.ConfigurationError, match="a path, or file_id=..., and not both"):
        kf.extract(client=client)


def test_upload_error_never_contains_the_key(emulator: Emulator, tmp_path: Path,
                                             no_wait: list[float]) -> None:
    emulator.fail_next("account_suspended")
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c, \
            pytest.raises(kf.KimiError) as info:
        c.upload(write(tmp_path / "a.txt", "x"))
    assert API_KEY not in str(info.value) + repr(info.value) + repr(info.value.__dict__)


def test_large_file_streams_intact(emulator: Emulator, client: kf.KimiFiles,
                                   tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    with p.open("wb") as fh:
        for i in range(2000):
            fh.write((f"line {i:06d} " + "x" * 1000 + "\n").encode())
    up = client.upload(p)
    stored = emulator.state.files[up.id].path
    assert stored is not None and stored.stat().st_size == p.stat().st_size
    with stored.open("rb") as a, p.open("rb") as b:
        assert shutil.copyfileobj is not None and a.read() == b.read()


def test_cancellation_paths_say_what_stopped(emulator: Emulator, client: kf.KimiFiles,
                                             tmp_path: Path, no_wait: list[float]) -> None:
    import threading

    from kimi_files._preflight import inspect_file
    from kimi_files._quota import plan_room
    from kimi_files._uploader import Claims, free_room_steps, send_steps

    local = inspect_file(write(tmp_path / "a.txt", "x"), purpose="file-extract",
                         limits=client.limits)
    stop = threading.Event()
    stop.set()
    with pytest.raises(kf.UploadCancelledError, match="a.txt: cancelled before it was uploaded"):
        client.run(send_steps(client, local, purpose="file-extract", claims=Claims(), stop=stop))
    emulator.fail_next("engine_overloaded")
    stop.clear()

    def stop_on_read(chunk: bytes) -> None:
        stop.set()  # Ctrl-C arrives while the first attempt is under way

    with pytest.raises(kf.UploadCancelledError, match="a.txt: cancelled while waiting to retry"):
        client.run(send_steps(client, local, purpose="file-extract", claims=Claims(), stop=stop,
                              on_read=stop_on_read))
    old = emulator.seed("old.txt", 1)
    plan = plan_room(client.list().data, 1, 1, kf.Limits(max_files=1), "oldest")
    with pytest.raises(kf.UploadCancelledError, match="cancelled while freeing room for x"):
        client.run(free_room_steps(plan, what="x", stop=stop))
    assert old.id in {f.id for f in emulator.state.listing()}
    assert [f.id for f in client.run(free_room_steps(plan, what="x"))] == [old.id]
    assert emulator.filenames() == []  # the cancelled upload left nothing behind
