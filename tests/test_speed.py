"""What the speed work (issue #12) changed, tested by behaviour, never by time: the body goes
out in large pieces and is re-read on every attempt, nothing is hashed that no decision or
record needs, a re-run does not open unchanged files, and the shortcuts give the verdicts
the long way gives."""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import kimi_files as kf
from kimi_files import _adoption as adoption
from kimi_files._preflight import detect_mime_of, inspect_file
from kimi_files._uploader import PIECE_BYTES, FileBody, MultipartBody, PieceDigest
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write


def _text(n_bytes: int, tag: str = "") -> bytes:
    """Varied lines (the emulator refuses repetitive text), exactly ``n_bytes`` long."""
    lines = b"".join(b"line %07d of %s\n" % (i, tag.encode()) for i in range(n_bytes // 14 + 1))
    return lines[:n_bytes]


def _parts(body: bytes, content_type: str) -> dict[str, tuple[dict[str, str], bytes]]:
    """A multipart/form-data body taken apart: name -> (part headers, content)."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    out = {}
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        name = headers["Content-Disposition"].split('name="', 1)[1].split('"', 1)[0]
        out[name] = headers, content[:-2]
    return out


# --- the body ------------------------------------------------------------------------------------


def test_the_body_goes_out_in_large_pieces_and_is_reread_from_the_start_each_time(
        tmp_path: Path) -> None:
    data = _text(2 * PIECE_BYTES + 12345)
    p = write(tmp_path / "big.txt", data)
    reads: list[int] = []
    rewinds: list[int] = []
    with p.open("rb") as fh:
        body = FileBody(fh, len(data), "big.txt", on_read=lambda c: reads.append(len(c)),
                        on_rewind=lambda: rewinds.append(1))
        multipart = MultipartBody(body, filename='a "q"\\b.txt', purpose="file-extract",
                                  content_type="text/plain")
        first = list(multipart)
        second = list(multipart)  # a retry: the file is read again from its start
    assert first == second and rewinds == [1]
    assert reads == [PIECE_BYTES, PIECE_BYTES, 12345] * 2  # a read per piece, not per 64 KiB
    assert [len(x) for x in first[1:-1]] == [PIECE_BYTES, PIECE_BYTES, 12345]
    whole = b"".join(first)
    assert int(multipart.headers["Content-Length"]) == len(whole)
    parts = _parts(whole, multipart.headers["Content-Type"])
    assert parts["purpose"][1] == b"file-extract"
    headers, content = parts["file"]
    assert content == data and headers["Content-Type"] == "text/plain"
    # the name escaped as httpx escapes it (what adoption.stored_forms expects)
    wire = adoption.wire_name('a "q"\\b.txt')
    assert wire == 'a %22q%22\\\\b.txt'
    assert headers["Content-Disposition"].endswith(f'filename="{wire}"')


def test_a_file_of_one_piece_goes_out_as_one_buffer_and_growth_is_still_caught(
        tmp_path: Path) -> None:
    p = write(tmp_path / "small.txt", b"hello")
    with p.open("rb") as fh:
        pieces = list(MultipartBody(FileBody(fh, 5, "small.txt"), filename="small.txt",
                                    purpose="file-extract", content_type="text/plain"))
    assert len(pieces) == 1 and b"\r\n\r\nhello\r\n--" in pieces[0]
    with p.open("rb") as fh:
        grown = MultipartBody(FileBody(fh, 3, "small.txt"), filename="small.txt",
                              purpose="file-extract", content_type="text/plain")
        with pytest.raises(kf.LocalFileError, match="grew during the upload"):
            list(grown)


def test_an_upload_reads_the_file_in_pieces_of_a_mebibyte(emulator: Emulator,
                                                          client: kf.KimiFiles,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text(5 * PIECE_BYTES)
    p = write(tmp_path / "five.txt", data)
    sizes: list[int] = []
    real = FileBody.read

    def read(self: FileBody, n: int = -1) -> bytes:
        chunk = real(self, n)
        sizes.append(len(chunk))
        return chunk

    monkeypatch.setattr(FileBody, "read", read)
    up = client.upload(p, progress=False)
    assert up.bytes == len(data) and emulator.state.listing()[0].bytes == len(data)
    assert [s for s in sizes if s] == [PIECE_BYTES] * 5


def test_the_async_client_sends_the_same_pieces(emulator: Emulator, tmp_path: Path) -> None:
    import asyncio

    data = _text(PIECE_BYTES + 999)
    p = write(tmp_path / "a.txt", data)

    async def main() -> kf.UploadedFile:
        async with kf.AsyncKimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
            return await c.upload(p, progress=False)

    up = asyncio.run(main())
    assert up.bytes == len(data)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        assert c.content(up.id).text.startswith("line 0000000 of")


# --- hashing -------------------------------------------------------------------------------------


class _Counting:
    """hashlib.sha256, counting every byte hashed."""

    hashed = 0

    def __init__(self, data: bytes = b"") -> None:
        self._h = _REAL_SHA256(data)
        _Counting.hashed += len(data)

    def update(self, data: bytes) -> None:
        _Counting.hashed += len(data)
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def digest(self) -> bytes:
        return self._h.digest()


_REAL_SHA256 = hashlib.sha256


def test_no_state_and_no_cache_hash_nothing(emulator: Emulator, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    for i in range(3):  # sizes no other file shares, above what is hashed as it is checked
        write(folder / f"f{i}.txt", _text(200_000 + i, str(i)))
    _Counting.hashed = 0
    monkeypatch.setattr(hashlib, "sha256", _Counting)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, cache=False) as c:
        report = c.ingest([folder], state=False, progress=False)
    assert report.ok and len(emulator.state.listing()) == 3
    assert _Counting.hashed == 0


def test_with_a_state_the_bytes_sent_are_hashed_once_and_recorded(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text(3 * PIECE_BYTES + 7)
    p = write(tmp_path / "in" / "big.txt", data)
    _Counting.hashed = 0
    monkeypatch.setattr(hashlib, "sha256", _Counting)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, cache=False) as c:
        report = c.ingest([tmp_path / "in"], state=tmp_path / "s.db", progress=False)
    assert report.ok and _Counting.hashed == len(data)  # as it was sent, not before
    monkeypatch.setattr(hashlib, "sha256", _REAL_SHA256)
    with kf.StateStore(tmp_path / "s.db") as store:
        assert store.get(p).sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[union-attr]


def test_piece_digest_matches_hashlib_over_rewinds_and_large_pieces() -> None:
    big = os.urandom(PIECE_BYTES)
    d = PieceDigest()
    try:
        d.update(big)
        d.update(b"x")
        d.reset()  # a rewind: start over
        for piece in (big, big, b"tail"):
            d.update(piece)
        assert d.hexdigest() == hashlib.sha256(big + big + b"tail").hexdigest()
        small = PieceDigest()
        small.update(b"one piece")
        assert small.hexdigest() == hashlib.sha256(b"one piece").hexdigest()
    finally:
        d.close()


# --- resuming --------------------------------------------------------------------------------------


def test_a_rerun_does_not_open_unchanged_files(emulator: Emulator, client: kf.KimiFiles,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    paths = [write(folder / f"f{i}.txt", _text(100_000 + i, str(i))) for i in range(4)]
    state = tmp_path / "s.db"
    assert client.ingest([folder], state=state, progress=False).ok
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else "")
        return real_open(file, *args, **kwargs)

    def spy_os_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fsdecode(file))
        return real_os_open(file, *args, **kwargs)

    written: list[Any] = []
    monkeypatch.setattr(kf.StateStore, "done", lambda *a, **kw: written.append(a))
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    again = client.ingest([folder], state=state, progress=False)
    assert {r.status for r in again.results} == {"skipped"}
    assert not {os.fsdecode(p) for p in paths} & set(opened)
    assert written == []  # their records say so already: nothing rewritten


def test_a_rerun_checks_in_full_an_unchanged_file_whose_copy_is_gone(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    p = write(folder / "a.txt", _text(100_000))
    state = tmp_path / "s.db"
    first = client.ingest([folder], state=state, progress=False, reuse=False)
    client.delete(first.results[0].file_id or "")
    again = client.ingest([folder], state=state, progress=False, reuse=False)
    assert [r.status for r in again.results] == ["uploaded"]
    assert emulator.state.listing()[0].bytes == p.stat().st_size
    # rewritten with its size and mtime put back, and its copy gone: checked in full, refused
    st = p.stat()
    write(p, b"\x7fELF\x02\x01\x01" + b"\0" * (100_000 - 7))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    client.delete(again.results[0].file_id or "")
    third = client.ingest([folder], state=state, progress=False, reuse=False)
    [result] = third.results
    assert result.status == "rejected" and isinstance(result.error, kf.UnsupportedFileTypeError)
    assert "a.txt: the content is" in str(result.error) and emulator.state.listing() == []


# --- shortcuts that must give the long way's verdicts ------------------------------------------------


def test_plain_text_named_txt_is_typed_without_libmagic(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import kimi_files._preflight as pre

    def no_magic() -> Any:
        raise AssertionError("libmagic used")

    monkeypatch.setattr(pre, "_magic", no_magic)
    assert detect_mime_of("héllo\tworld\x1b[0m\n".encode(), "a.txt", "a.txt") == "text/plain"
    local = inspect_file(write(tmp_path / "notes.txt", "plain notes\n"), purpose="file-extract",
                         limits=kf.Limits())
    assert local.mime_type == "text/plain"


@pytest.mark.parametrize(("name", "data", "mime"), [
    ("logo.txt", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>\n', "image/svg+xml"),
    ("a.txt", b"text, then\x00binary" + b"\x01" * 64, "application/octet-stream"),
    ("a.md", b"# a heading\n\nplain text\n", None),
])
def test_what_is_not_plain_text_named_txt_goes_to_libmagic(name: str, data: bytes,
                                                           mime: str | None) -> None:
    import kimi_files._preflight as pre

    expected = mime or str(pre._magic().from_buffer(data))
    assert detect_mime_of(data, name, name) == expected


def test_plain_names_have_the_stored_forms_the_long_way_gives() -> None:
    names = ["a.txt", "Report 2024.PDF", "e\u0301t\u00e9.md", "ß.txt", "x%22y.txt", 'q"x.txt',
             "a\\b.txt", "tab\tname.txt", "\u2028.txt", "esc\x1b.txt", "%41.txt"]
    for name in names:
        fast = adoption.stored_forms(name), adoption.loose_forms(name)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(adoption, "_plain", lambda _: False)
            slow = adoption.stored_forms(name), adoption.loose_forms(name)
        assert fast == slow, name
