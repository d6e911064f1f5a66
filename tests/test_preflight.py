"""Local checks before any byte is sent: symbolic links, folder walks, what each purpose takes,
batch JSON lines and PDFs with no text layer. Pure rules directly; the rest through
``inspect_file``, ``collect`` and the client against the emulator."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._batch import collect, ingest
from kimi_files._config import Limits
from kimi_files._filerules import (
    IMAGE_TYPES,
    PDF_TEXT_PAGES,
    VIDEO_TYPES,
    LocalFile,
    check_jsonl_lines,
    classify_type,
    type_refusal,
)
from kimi_files._preflight import inspect_file, pdf_text_warning
from kimi_files.emulator import Emulator

from .conftest import write

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "corpus"
TEXT_PDF = CORPUS / "kimi-files-intro.pdf"


def _posts(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.method == "POST")


def _inspect(path: Path, purpose: str = "file-extract") -> LocalFile:
    return inspect_file(path, purpose=purpose, limits=Limits())


# --- sample files whose type libmagic recognises from their first bytes -----------------------


def _ftyp(brand: bytes) -> bytes:
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\0\0\0\0" + brand + b"isom" + b"\0" * 64


def _riff(kind: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 1000) + kind + b"\0" * 64


def _ebml(doctype: bytes) -> bytes:
    return (bytes.fromhex("1A45DFA3") + b"\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04"
            b"\x42\xf3\x81\x08\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
            + b"\x42\x87\x81\x02\x42\x85\x81\x02" + b"\0" * 64)


IMAGES = {  # name: (bytes, type libmagic gives)
    "a.png": (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0" + b"\0" * 32,
              "image/png"),
    "a.jpg": (b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01" + b"\0" * 32, "image/jpeg"),
    "a.gif": (b"GIF89a\x01\0\x01\0" + b"\0" * 32, "image/gif"),
    "a.webp": (_riff(b"WEBPVP8 "), "image/webp"),
}
OTHER_IMAGES = {
    "a.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>\n', "image/svg+xml"),
    "a.bmp": (b"BM" + struct.pack("<IHHI", 100, 0, 0, 54) + struct.pack("<IiiHH", 40, 1, 1, 1, 24)
              + b"\0" * 40, "image/bmp"),
    "a.tif": (b"II*\0\x08\0\0\0" + b"\0" * 32, "image/tiff"),
    "a.heic": (_ftyp(b"heic"), "image/heic"),
}
VIDEOS = {
    "a.mp4": (_ftyp(b"isom"), "video/mp4"),
    "a.mov": (_ftyp(b"qt  "), "video/quicktime"),
    "a.3gp": (_ftyp(b"3gp4"), "video/3gpp"),
    "a.avi": (_riff(b"AVI LIST"), "video/x-msvideo"),
    "a.mpg": (b"\x00\x00\x01\xba\x44" + b"\0" * 64, "video/mpeg"),
    "a.flv": (b"FLV\x01\x05\x00\x00\x00\x09" + b"\0" * 64, "video/x-flv"),
    "a.wmv": (bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C") + b"\0" * 64, "video/x-ms-asf"),
    "a.webm": (_ebml(b"webm"), "video/webm"),
}
OTHER_VIDEOS = {
    "a.mkv": (_ebml(b"matroska"), "video/x-matroska"),
    "a.3g2": (_ftyp(b"3g2a"), "video/3gpp2"),
}


def _blank_pdf(path: Path, pages: int = 1) -> Path:
    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    with path.open("wb") as fh:
        writer.write(fh)
    return path


# --- symbolic links are checked as what they point to -----------------------------------------


def test_a_link_is_typed_and_sized_as_its_target(tmp_path: Path) -> None:
    link = tmp_path / "intro-link.pdf"
    link.symlink_to(TEXT_PDF)
    # libmagic given the link's name would answer inode/symlink
    local = inspect_file(link, purpose="file-extract", limits=Limits())
    assert local.mime_type == "application/pdf" and local.size == TEXT_PDF.stat().st_size
    assert local.filename == "intro-link.pdf" and local.warnings == ()


def test_a_link_is_sent_with_its_targets_content_type(emulator: Emulator, client: kf.KimiFiles,
                                                      tmp_path: Path) -> None:
    link = tmp_path / "intro.pdf"
    link.symlink_to(TEXT_PDF)
    up = client.upload(link)
    assert up.mime_type == "application/pdf"
    assert emulator.state.files[up.id].content_type == "application/pdf"
    stored = emulator.state.files[up.id].path
    assert stored is not None and stored.read_bytes() == TEXT_PDF.read_bytes()


@pytest.mark.parametrize("kind", ["executable", "archive"])
def test_a_link_to_an_executable_or_archive_is_refused_like_it(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path, kind: str) -> None:
    if kind == "executable":
        target = Path(os.path.realpath(sys.executable))
    else:
        target = write(tmp_path / "bundle.tar.gz", gzip.compress(b"data" * 100))
    link = tmp_path / "notes.txt"
    link.symlink_to(target)
    with pytest.raises(kf.UnsupportedFileTypeError, match=r"notes\.txt: the content is "
                       r"application/(x-(pie-)?executable|x-sharedlib|gzip)") as info:
        client.upload(link)
    assert info.value.rule == "type" and info.value.path == str(link)
    assert _posts(emulator) == 0


def test_broken_link_and_link_loop_name_the_link(tmp_path: Path) -> None:
    dangling = tmp_path / "report.pdf"
    dangling.symlink_to(tmp_path / "gone.pdf")
    with pytest.raises(kf.LocalFileError, match=(
            r"report\.pdf: broken symbolic link: it points to .*gone\.pdf, which does not "
            r"exist; fix or remove the link")) as info:
        _inspect(dangling)
    assert info.value.rule == "exists" and info.value.path == str(dangling)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(kf.LocalFileError, match=r"a\.txt: symbolic link loop \(it points to "
                       r".*b\.txt, which leads back to itself or through too many links\); fix "
                       r"or remove the link"):
        _inspect(a)
    (tmp_path / "d").symlink_to("d")
    with pytest.raises(kf.LocalFileError, match=r"inside\.txt: symbolic link loop on its path"):
        _inspect(tmp_path / "d" / "inside.txt")


def test_a_link_to_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "docs"
    link.symlink_to(tmp_path / "real")
    with pytest.raises(kf.LocalFileError, match=r"docs \(a symbolic link to .*real\): a "
                       r"directory, not a regular file"):
        _inspect(link)


# --- walking a folder: links that lead out are not followed -----------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[Path]:
    """in/ with a plain file, links to a file inside and outside, to a hidden file inside,
    to a folder inside and outside; outside/ holds a credentials file and a folder."""
    root = tmp_path / "in"
    write(root / "a.txt", "a")
    write(root / "sub" / "b.txt", "b")
    write(root / ".env", "API_KEY=secret")
    write(tmp_path / "outside" / "credentials", "aws_secret_access_key=x")
    write(tmp_path / "outside" / "docs" / "c.txt", "c")
    (root / "same.txt").symlink_to("a.txt")
    (root / "creds").symlink_to(tmp_path / "outside" / "credentials")
    (root / "env.txt").symlink_to(".env")
    (root / "sub-again").symlink_to("sub")
    (root / "shared").symlink_to(tmp_path / "outside" / "docs")
    yield root


def _names(files: list[Path], root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in files)


def test_walk_does_not_follow_links_out_of_the_folder(linked: Path, tmp_path: Path) -> None:
    files, rejected = collect([linked])
    assert _names(files, linked) == ["a.txt", "same.txt", "sub/b.txt"]
    by_path = {r.path: r for r in rejected}
    assert sorted(by_path) == sorted(str(linked / n) for n in ("creds", "env.txt", "shared"))
    assert all(r.status == "rejected" and isinstance(r.error, kf.LocalFileError)
               and r.error.rule == "link" for r in rejected)
    creds = str(by_path[str(linked / "creds")].error)
    assert creds == (f"{linked / 'creds'}: not followed: a symbolic link to "
                     f"{tmp_path / 'outside' / 'credentials'}, outside the folder given; pass "
                     "--follow-links (follow_links=True) to include it")
    assert "a hidden or skipped path inside the folder" in str(by_path[str(linked / "env.txt")].error)
    assert f"a symbolic link to {tmp_path / 'outside' / 'docs'}, outside the folder" in str(
        by_path[str(linked / "shared")].error)


def test_follow_links_takes_them(linked: Path) -> None:
    files, rejected = collect([linked], follow_links=True)
    assert rejected == []
    # the link to a folder inside is still not descended: its files come by their own name
    assert _names(files, linked) == ["a.txt", "creds", "env.txt", "same.txt", "shared/c.txt",
                                     "sub/b.txt"]


def test_filters_apply_to_links_before_they_are_judged(linked: Path) -> None:
    files, rejected = collect([linked], exclude=["creds", "env.txt", "shared"])
    assert rejected == [] and _names(files, linked) == ["a.txt", "same.txt", "sub/b.txt"]


def test_follow_links_never_loops(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "a.txt", "a")
    outside = tmp_path / "outside"
    write(outside / "b.txt", "b")
    (root / "out").symlink_to(outside)
    (root / "out-again").symlink_to(outside)
    (outside / "back").symlink_to(root)  # leads to the folder walked: a loop
    (outside / "self").symlink_to(outside)
    (root / "up").symlink_to(tmp_path)  # an ancestor of the folder
    files, rejected = collect([root], follow_links=True)
    assert rejected == []
    assert _names(files, root) == ["a.txt", "out/b.txt"]


def test_broken_link_in_a_folder_is_reported_by_the_preflight(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "a.txt", "a")
    (root / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    files, rejected = collect([root])
    assert rejected == [] and _names(files, root) == ["a.txt", "gone.txt"]
    with pytest.raises(kf.LocalFileError, match="gone.txt: broken symbolic link"):
        _inspect(root / "gone.txt")


def test_a_link_to_a_skipped_file_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "in"
    state = write(root / "state.sqlite3", b"SQLite format 3\0")
    write(root / "a.txt", "a")
    (root / "state-link").symlink_to(state)
    files, rejected = collect([root], skip=[state], follow_links=True)
    assert rejected == [] and _names(files, root) == ["a.txt"]


def test_only_outside_links_in_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "creds").symlink_to(write(tmp_path / "credentials", "x"))
    _, rejected = collect([root])
    assert [r.path for r in rejected] == [str(root / "creds")]  # no "no eligible files" too


def test_ingest_does_not_upload_a_link_to_credentials(emulator: Emulator, client: kf.KimiFiles,
                                                      linked: Path, tmp_path: Path) -> None:
    report = ingest([linked], client=client, state=tmp_path / "s.db")
    statuses = {Path(r.path).name: r.status for r in report.results}
    assert statuses == {"a.txt": "uploaded", "same.txt": "skipped", "b.txt": "uploaded",
                        "creds": "rejected", "env.txt": "rejected", "shared": "rejected"}
    assert "credentials" not in emulator.filenames() and "creds" not in emulator.filenames()
    assert "--follow-links" in report.summary()


# --- what each purpose takes ------------------------------------------------------------------


@pytest.mark.parametrize("mime", sorted(IMAGE_TYPES))
def test_file_extract_refuses_images_and_points_to_vision(mime: str) -> None:
    assert type_refusal(mime, ".png", "file-extract") is not None
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"scan\.png: the content is {mime}, an image: the platform no longer extracts text "
            r"from images under purpose 'file-extract'; upload it with purpose=\"image\" "
            r"\(--purpose image\) for vision, or pass allow_any_type=True \(--allow-any-type\) "
            r"to send it anyway")) as info:
        classify_type("scan.png", "scan.png", mime, "file-extract")
    assert info.value.rule == "image_not_extracted" and info.value.path == "scan.png"
    assert classify_type("scan.png", "scan.png", mime, "file-extract",
                         allow_any_type=True)[0] == mime


def test_file_extract_refuses_images_vision_cannot_take_either() -> None:
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            r"logo\.svg: the content is image/svg\+xml, an image: .*; convert it to PNG, JPEG, "
            r"WebP, GIF and upload that with purpose=\"image\"")):
        classify_type("logo.svg", "logo.svg", "image/svg+xml", "file-extract")


def test_file_extract_points_videos_to_the_video_purpose() -> None:
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            r"a\.mp4: the content is video/mp4, a video, which purpose 'file-extract' cannot "
            r"use; upload it with purpose=\"video\" \(--purpose video\), or pass")):
        classify_type("a.mp4", "a.mp4", "video/mp4", "file-extract")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_purpose_takes_png_jpeg_webp_gif(tmp_path: Path, name: str) -> None:
    data, mime = IMAGES[name]
    local = inspect_file(write(tmp_path / name, data), purpose="image", limits=Limits())
    assert local.mime_type == mime and local.warnings == ()


@pytest.mark.parametrize("name", [*sorted(OTHER_IMAGES), "a.txt", "a.mp4"])
def test_image_purpose_refuses_the_rest_with_the_list(tmp_path: Path, name: str) -> None:
    data, mime = (OTHER_IMAGES | VIDEOS | {"a.txt": (b"hello\n", "text/plain")})[name]
    path = write(tmp_path / name, data)
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"{name}: the content is {mime.replace('+', '.')}, but purpose 'image' accepts "
            r"only PNG, JPEG, WebP, GIF \(image/gif, image/jpeg, image/png, image/webp\); "
            r"convert it to one of those, or pass allow_any_type=True")) as info:
        inspect_file(path, purpose="image", limits=Limits())
    assert info.value.rule == "image_type"
    assert inspect_file(path, purpose="image", limits=Limits(),
                        allow_any_type=True).mime_type == mime


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_video_purpose_takes_the_listed_formats(tmp_path: Path, name: str) -> None:
    data, mime = VIDEOS[name]
    assert mime in VIDEO_TYPES
    local = inspect_file(write(tmp_path / name, data), purpose="video", limits=Limits())
    assert local.mime_type == mime and local.warnings == ()


@pytest.mark.parametrize("name", [*sorted(OTHER_VIDEOS), "a.png"])
def test_video_purpose_refuses_the_rest(tmp_path: Path, name: str) -> None:
    data, mime = (OTHER_VIDEOS | IMAGES)[name]
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"{name}: the content is {mime}, but purpose 'video' accepts only mp4, mpeg, mov, "
            r"avi, flv, mpg, webm, wmv, 3gpp; convert it")) as info:
        inspect_file(write(tmp_path / name, data), purpose="video", limits=Limits())
    assert info.value.rule == "video_type"


def test_vision_purposes_through_the_client(emulator: Emulator, client: kf.KimiFiles,
                                            tmp_path: Path) -> None:
    png = ROOT / "examples" / "images" / "chart.png"
    with pytest.raises(kf.UnsupportedFileTypeError, match="chart.png: the content is image/png"):
        client.upload(png)
    with pytest.raises(kf.UnsupportedFileTypeError, match="--purpose image"):
        client.preflight(png)
    assert _posts(emulator) == 0
    up = client.upload(png, purpose="image")
    assert up.purpose == "image" and emulator.state.files[up.id].content_type == "image/png"
    # sent anyway: the service (and the emulator) refuse it themselves
    with pytest.raises(kf.InvalidRequestError, match="no longer extracted"):
        client.upload(png, allow_any_type=True)
    emulator.state.extract_images = True  # the older behaviour of the service
    anyway = client.upload(png, allow_any_type=True)
    assert anyway.purpose == "file-extract" and anyway.mime_type == "image/png"
    video = write(tmp_path / "clip.mp4", VIDEOS["a.mp4"][0])
    up = client.upload(video, purpose="video")
    assert emulator.state.files[up.id].content_type == "video/mp4"


@pytest.mark.parametrize(("name", "mime", "ok"), [
    ("a.jsonl", "application/json", True),
    ("a.jsonl", "text/plain", True),
    ("a.json", "application/json", False),
    ("a.txt", "text/plain", False),
    ("a.jsonl", "application/gzip", False),
])
def test_batch_purpose_takes_jsonl_files(name: str, mime: str, ok: bool) -> None:
    if ok:
        assert classify_type(name, name, mime, "batch")[0] == mime
        return
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"{name}: the content is {mime} named \.\w+, but purpose 'batch' takes a \.jsonl "
            r"file \(one JSON request object per line\); write the requests as JSON lines in a "
            r"file named \*\.jsonl, or pass allow_any_type=True")) as info:
        classify_type(name, name, mime, "batch")
    assert info.value.rule == "batch_type"


def _lines(*rows: str) -> list[bytes]:
    return [(r + "\n").encode() for r in rows]


def test_jsonl_rule_accepts_objects_and_blank_lines() -> None:
    check_jsonl_lines("b.jsonl", _lines('{"custom_id": "1"}', "", "  ", '{"a": [1, 2]}'))
    check_jsonl_lines("b.jsonl", [b'\xef\xbb\xbf{"bom": true}\r\n', b'{"crlf": 1}\r\n'])


@pytest.mark.parametrize(("rows", "line", "why"), [
    (['{"a": 1}'] * 6 + ['{"a": 1'], 7, r"Expecting ',' delimiter at column 8"),
    (["", "[1, 2]"], 2, "it is a JSON array, not an object"),
    (['"text"'], 1, "it is a JSON string, not an object"),
    (["42"], 1, "it is a JSON number, not an object"),
    (["null"], 1, "it is a JSON literal, not an object"),
    (['{"a": 1}', "not json"], 2, "Expecting value at column 1"),
])
def test_jsonl_rule_names_the_first_bad_line(rows: list[str], line: int, why: str) -> None:
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"b\.jsonl: line {line} is not a JSON object: {why}; purpose 'batch' needs one "
            r"JSON request object per line: fix that line")) as info:
        check_jsonl_lines("b.jsonl", _lines(*rows))
    assert info.value.rule == "jsonl" and info.value.path == "b.jsonl"


def test_jsonl_rule_other_refusals() -> None:
    with pytest.raises(kf.UnsupportedFileTypeError, match="line 2 is not a JSON object: it is "
                       "not UTF-8 text"):
        check_jsonl_lines("b.jsonl", [b'{"a": 1}\n', b'{"a": "\xff"}\n'])
    with pytest.raises(kf.UnsupportedFileTypeError, match=r"b\.jsonl: no JSON lines in the file "
                       r"\(only blank lines\)"):
        check_jsonl_lines("b.jsonl", _lines("", "   "))


def test_jsonl_rule_stops_at_the_first_bad_line() -> None:
    read: list[int] = []

    def lines() -> Iterator[bytes]:
        for i in range(1, 1000):
            read.append(i)
            yield b"[]\n" if i == 3 else b"{}\n"

    with pytest.raises(kf.UnsupportedFileTypeError, match="line 3 is not"):
        check_jsonl_lines("b.jsonl", lines())
    assert read == [1, 2, 3]


def test_batch_file_is_checked_in_the_preflight(emulator: Emulator, client: kf.KimiFiles,
                                                tmp_path: Path) -> None:
    rows = [json.dumps({"custom_id": str(i), "method": "POST"}) for i in range(6)]
    bad = write(tmp_path / "requests.jsonl", "\n".join([*rows, "{oops}", *rows]) + "\n")
    for allow_any_type in (False, True):  # a type override does not make a bad line good
        with pytest.raises(kf.UnsupportedFileTypeError,
                           match=r"requests\.jsonl: line 7 is not a JSON object: Expecting "
                                 r"property name enclosed in double quotes at column 2"):
            client.upload(bad, purpose="batch", allow_any_type=allow_any_type)
    assert _posts(emulator) == 0
    good = write(tmp_path / "good.jsonl", "\n".join(rows) + "\n")
    up = client.upload(good, purpose="batch")
    assert up.purpose == "batch" and up.bytes == good.stat().st_size
    # the same bad content is fine for other purposes: the rule is batch's
    assert inspect_file(bad, purpose="file-extract", limits=Limits()).mime_type.startswith(
        ("text/", "application/json", "application/x-ndjson"))


def test_batch_check_streams_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    row = (json.dumps({"custom_id": "x", "body": {"text": "y" * 200}}) + "\n").encode()
    with path.open("wb") as fh:
        for _ in range(40_000):  # about 9 MB
            fh.write(row)
        fh.write(b"[]\n")
    tracemalloc.start()
    try:
        with pytest.raises(kf.UnsupportedFileTypeError, match="line 40001 is not a JSON object"):
            inspect_file(path, purpose="batch", limits=Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak  # a read of the whole file would take 9 MB


def test_purpose_rule_is_never_bypassed(tmp_path: Path) -> None:
    with pytest.raises(kf.LocalInvalidPurposeError, match="'vision' is not accepted"):
        inspect_file(write(tmp_path / "a.png", IMAGES["a.png"][0]), purpose="vision",
                     limits=Limits(), allow_any_type=True)


# --- PDFs with no text layer ------------------------------------------------------------------


def test_a_pdf_with_no_text_layer_is_warned_about(tmp_path: Path) -> None:
    scan = _blank_pdf(tmp_path / "scan.pdf")
    local = inspect_file(scan, purpose="file-extract", limits=Limits())
    assert local.mime_type == "application/pdf"
    assert local.warnings == (
        f"{scan}: no extractable text (no text layer: a scanned or image-only PDF): the service "
        "answers `text extract error`; OCR it first or upload the pages as images with "
        'purpose="image"',)


def test_a_pdf_with_text_gets_no_warning() -> None:
    assert pdf_text_warning(TEXT_PDF) is None
    assert inspect_file(TEXT_PDF, purpose="file-extract", limits=Limits()).warnings == ()


def test_only_the_first_pages_are_looked_at(tmp_path: Path) -> None:
    long_scan = _blank_pdf(tmp_path / "long.pdf", pages=PDF_TEXT_PAGES + 2)
    warning = pdf_text_warning(long_scan)
    assert warning is not None and f"no extractable text in its first {PDF_TEXT_PAGES} pages" \
        in warning


def test_a_broken_pdf_warns_and_never_raises(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog" + b"x" * 100)
    local = inspect_file(broken, purpose="file-extract", limits=Limits())
    assert local.mime_type == "application/pdf"
    assert len(local.warnings) == 1
    assert local.warnings[0].startswith(f"{broken}: could not check the PDF for a text layer (")
    assert local.warnings[0].endswith("); the service may refuse it")


def test_pypdfs_own_complaints_stay_quiet(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    broken = write(tmp_path / "broken.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog" + b"x" * 100)
    level = logging.getLogger("pypdf").level
    with caplog.at_level(logging.DEBUG):
        warning = pdf_text_warning(broken)
    assert warning is not None and "could not check the PDF" in warning
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pypdf")] == []
    assert logging.getLogger("pypdf").level == level  # put back once no check runs


def test_without_pypdf_the_warning_is_skipped(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    scan = _blank_pdf(tmp_path / "scan.pdf")
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf now raises ImportError
    assert pdf_text_warning(scan) is None
    assert inspect_file(scan, purpose="file-extract", limits=Limits()).warnings == ()


def test_preflight_warns_without_sending(emulator: Emulator, client: kf.KimiFiles,
                                         tmp_path: Path) -> None:
    scan = _blank_pdf(tmp_path / "scan.pdf")
    check = client.preflight(scan)
    assert len(check.file.warnings) == 1 and "no extractable text" in check.file.warnings[0]
    assert [r.method for r in emulator.requests] == ["GET"]


def test_pypdf_is_imported_only_when_a_pdf_is_checked(tmp_path: Path) -> None:
    text = write(tmp_path / "a.txt", "hello\n")
    code = (
        "import sys, kimi_files\n"
        "from kimi_files._preflight import inspect_file\n"
        "from kimi_files._config import Limits\n"
        "before = 'pypdf' in sys.modules\n"
        f"inspect_file({str(text)!r}, purpose='file-extract', limits=Limits())\n"
        "after_text = 'pypdf' in sys.modules\n"
        f"inspect_file({str(TEXT_PDF)!r}, purpose='file-extract', limits=Limits())\n"
        "print(before, after_text, 'pypdf' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "True"]


# --- binary formats libmagic names in ways a short denylist misses ----------------------------


def _sqlite_db(path: Path) -> bytes:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    return path.read_bytes()


#: name -> (first bytes, what libmagic calls it, the kind the refusal names)
BINARIES: dict[str, tuple[bytes, str, str]] = {
    "x.wasm": (b"\0asm\1\0\0\0" + bytes(range(256)) * 8, "application/wasm",
               "an executable or compiled code"),
    "x.lz4": (b"\x04\x22\x4d\x18" + bytes(range(256)) * 8, "application/x-lz4",
              "an archive or compressed data"),
    "x.zlib": (__import__("zlib").compress(b"a" * 5000), "application/zlib",
               "an archive or compressed data"),
    "x.deb": (b"!<arch>\ndebian-binary   1342208310  0     0     100644  4         `\n2.0\n",
              "application/vnd.debian.binary-package", "a software package"),
    "x.rpm": (b"\xed\xab\xee\xdb\x03\x00\x00\x00" + bytes(3000), "application/x-rpm",
              "a software package"),
    "x.h5": (b"\x89HDF\r\n\x1a\n" + bytes(2000), "application/x-hdf5", "binary data"),
    "x.nc": (b"CDF\x01" + bytes(100), "application/x-netcdf", "binary data"),
    "x.qcow2": (b"QFI\xfb" + bytes(100), "application/x-qemu-disk", "a disk image"),
    "x.torrent": (b"d8:announce35:http://x.example/announce4:infod4:name1:xee\n",
                  "application/x-bittorrent", "binary data"),
}


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_file_extract_refuses_binary_formats_libmagic_names_many_ways(tmp_path: Path,
                                                                      name: str) -> None:
    data, mime, kind = BINARIES[name]
    path = write(tmp_path / name, data)
    # what libmagic really says, not what the test assumes
    assert inspect_file(path, purpose="file-extract", limits=Limits(),
                        allow_any_type=True).mime_type == mime
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"{name}: the content is {mime.replace('.', '[.]')} \({kind}\), which purpose "
            r"'file-extract' cannot use \(executables, archives, packages, databases, disk "
            r"images, media and binary data are refused\); pass allow_any_type=True "
            r"\(--allow-any-type\) to send it anyway")) as info:
        _inspect(path)
    assert info.value.rule == "type" and info.value.path == str(path)
    assert inspect_file(path, purpose="file-extract", limits=Limits(),
                        allow_any_type=True).mime_type == mime


def test_a_sqlite_database_is_refused_as_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    _sqlite_db(path)
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            r"notes\.db: the content is application/(vnd|x-)[.-]?sqlite3 \(a SQLite database\), "
            r"which purpose 'file-extract' cannot use")) as info:
        _inspect(path)
    assert info.value.rule == "type"


@pytest.mark.parametrize("mime", [
    "application/x-sqlite3", "application/vnd.sqlite3", "application/x-debian-package",
    "application/x-compress-ttcomp", "application/x-ms-compress-szdd", "application/x-gameboy-rom",
    "application/x-ms-w4-executable", "application/x-raw-disk-image", "application/x-lzh-compressed",
    "application/x-vnd.future-archive", "application/X-RPM",
])
def test_type_refusal_catches_names_by_kind(mime: str) -> None:
    assert type_refusal(mime, ".txt", "file-extract") is not None


@pytest.mark.parametrize("mime", [
    "application/pdf", "application/msword", "application/vnd.ms-excel", "application/epub+zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.oasis.opendocument.text", "application/x-mobipocket-ebook",
    "application/x-ole-storage", "application/CDFV2", "application/rtf", "application/json",
    "text/plain", "text/html",
])
def test_documents_are_not_refused_by_the_kind_rules(mime: str) -> None:
    assert type_refusal(mime, ".txt", "file-extract") is None


def test_another_state_store_in_the_folder_is_never_uploaded(
        emulator: Emulator, client: kf.KimiFiles, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "a.txt", "a document\n")
    kf.StateStore(root / "old.sqlite3").close()  # an earlier run's state, inside the folder
    (root / "old.sqlite3.lock").write_text("4242\n")  # and the lock a killed run left
    _sqlite_db(root / "plain.sqlite3")  # someone else's database
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            r"old\.sqlite3: the content is \S+ \(a SQLite database\): a kimi-files state store, "
            r"which lists the paths of the files it uploaded; it is never uploaded, even with "
            r"allow_any_type: keep state stores outside the folders you upload \(--state PATH\)"
            )) as info:
        inspect_file(root / "old.sqlite3", purpose="file-extract", limits=Limits(),
                     allow_any_type=True)
    assert info.value.rule == "state_store"
    with pytest.raises(kf.UnsupportedFileTypeError, match=(
            rf"old\.sqlite3\.lock: a side file of the kimi-files state store "
            rf"{re.escape(str(root / 'old.sqlite3'))}; it is never uploaded, even with "
            r"allow_any_type")) as info:
        inspect_file(root / "old.sqlite3.lock", purpose="file-extract", limits=Limits(),
                     allow_any_type=True)
    assert info.value.rule == "state_store"
    report = ingest([root], client=client, state=tmp_path / "elsewhere.sqlite3")
    statuses = {Path(r.path).name: r.status for r in report.results}
    assert statuses["a.txt"] == "uploaded"
    assert statuses["old.sqlite3"] == statuses["plain.sqlite3"] == "rejected"
    assert statuses["old.sqlite3.lock"] == "rejected"
    assert emulator.filenames() == ["a.txt"]
    assert "a SQLite database" in report.summary()
