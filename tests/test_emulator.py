"""The emulator: limits with the table's exact bodies, auth, faults, concurrency, its CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kimi_files.emulator import CAPTURED_ROWS, ERROR_ROWS, Emulator, Fault

from .conftest import API_KEY


def _post(emu: Emulator, name: str, data: bytes, purpose: str = "file-extract",
          key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{emu.base_url}/files", headers=headers,
                      data={"purpose": purpose}, files={"file": (name, data, "text/plain")})


def _body(row: str, **fmt: object) -> dict[str, object]:
    _, etype, template = ERROR_ROWS[row]
    return {"error": {"type": etype, "message": template.format(**fmt)}}


def test_limits_answer_with_the_tables_exact_bodies(emulator: Emulator) -> None:
    r = _post(emulator, "e.txt", b"")
    assert (r.status_code, r.json()) == (400, _body("file_empty"))
    r = _post(emulator, "a.txt", b"x", purpose="fine-tune")
    assert (r.status_code, r.json()) == (400, _body("invalid_purpose"))
    emulator.state.max_file_bytes = 10
    r = _post(emulator, "big.txt", b"x" * 11)
    assert (r.status_code, r.json()) == (400, _body("file_too_large"))
    emulator.state.max_files = 2
    assert _post(emulator, "1.txt", b"1").status_code == 200
    assert _post(emulator, "2.txt", b"2").status_code == 200
    r = _post(emulator, "3.txt", b"3")
    assert (r.status_code, r.json()) == (400, _body("too_many_files", limit=2))
    assert emulator.filenames() == ["1.txt", "2.txt"]


def test_file_count_holds_under_concurrent_uploads(emulator: Emulator) -> None:
    """The count is checked and the file stored under one lock: 15 uploads at once (each
    held past the early check by the extraction delay) never leave more than --max-files."""
    emulator.state.max_files = 10
    emulator.state.extract_delay = 0.1
    with ThreadPoolExecutor(15) as pool:
        answers = list(pool.map(lambda i: _post(emulator, f"{i}.txt", f"doc {i}".encode()),
                                range(15)))
    assert len(emulator.filenames()) == 10
    assert sorted(r.status_code for r in answers) == [200] * 10 + [400] * 5
    refused = [r.json() for r in answers if r.status_code == 400]
    assert refused == [_body("too_many_files", limit=10)] * 5
    assert not list(emulator.state.storage.glob(".incoming-*"))  # the refused bytes are gone


def test_total_bytes_limit(emulator: Emulator) -> None:
    emulator.state.max_total_bytes = 5
    emulator.seed("old.bin", 4)
    r = _post(emulator, "a.txt", b"xx")
    assert r.status_code == 400 and "total size" in r.json()["error"]["message"]


def test_auth(emulator: Emulator) -> None:
    r = _post(emulator, "a.txt", b"x", key=None)
    assert (r.status_code, r.json()) == (401, _body("incorrect_api_key"))
    r = _post(emulator, "a.txt", b"x", key="wrong")
    assert (r.status_code, r.json()) == (401, _body("invalid_authentication"))
    assert emulator.filenames() == []


def test_any_key_accepted_without_api_key_option() -> None:
    with Emulator() as emu:
        r = httpx.get(f"{emu.base_url}/files", headers={"Authorization": "Bearer whatever"})
        assert r.json() == {"object": "list", "data": [], "has_more": False}
        assert httpx.get(f"{emu.base_url}/files").status_code == 401


def test_file_object_shape(emulator: Emulator) -> None:
    obj = _post(emulator, "x.txt", b"abc").json()
    assert set(obj) == {"id", "object", "bytes", "created_at", "filename", "purpose", "status",
                        "status_details"}
    assert obj["object"] == "file" and obj["bytes"] == 3 and obj["status"] == "ok"
    assert abs(obj["created_at"] - time.time()) < 60
    stored = emulator.state.files[obj["id"]]
    assert stored.path is not None and stored.path.read_bytes() == b"abc"


def test_faults_are_consumed_in_order(emulator: Emulator) -> None:
    emulator.fail_next("html_502", times=2)
    assert _post(emulator, "a.txt", b"x").status_code == 502
    assert _post(emulator, "a.txt", b"x").status_code == 502
    assert _post(emulator, "a.txt", b"x").status_code == 200


def test_store_then_drop_stores_and_answers_nothing(emulator: Emulator) -> None:
    emulator.fail_next("store_then_drop")
    with pytest.raises(httpx.RemoteProtocolError):
        _post(emulator, "a.txt", b"hello")
    assert emulator.filenames() == ["a.txt"]
    emulator.fail_next("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        _post(emulator, "b.txt", b"hello")
    assert emulator.filenames() == ["a.txt"]


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("meteor")
    with pytest.raises(ValueError, match="unknown endpoint"):
        Fault("drop", endpoint="nowhere")


def test_concurrent_clients_are_served_concurrently(emulator: Emulator) -> None:
    emulator.state.extract_delay = 0.3
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda i: _post(emulator, f"{i}.txt", b"x").status_code, range(4)))
    assert codes == [200] * 4
    assert emulator.state.peak_in_flight >= 4


def test_emulated_tier_limits(emulator: Emulator) -> None:
    emulator.state.rpm = 2
    assert _post(emulator, "1.txt", b"1").status_code == 200
    assert _post(emulator, "2.txt", b"2").status_code == 200
    r = _post(emulator, "3.txt", b"3")
    assert r.status_code == 429
    assert "max RPM: 2, please try again after" in r.json()["error"]["message"]


def test_extraction_of_pdf_docx_and_images(emulator: Emulator, client: object) -> None:
    from kimi_files import KimiFiles

    assert isinstance(client, KimiFiles)
    examples = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    pdf = examples / "kimi-files-intro.pdf"
    with pdf.open("rb") as fh:
        obj = client.create(fh, filename=pdf.name, content_type="application/pdf")
    doc = client.content(obj.id)
    assert "Kimi" in doc.text and doc.file_type == "application/pdf"
    png = examples.parent / "images" / "chart.png"
    emulator.state.extract_images = True  # the older behaviour: images under file-extract
    with png.open("rb") as fh:
        obj = client.create(fh, filename=png.name, content_type="image/png")
    text = client.content(obj.id).text
    assert "no text extraction for image/png" in text


def test_emulator_command_line(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kimi_files.emulator", "--port", str(port), "--api-key", "k",
         "--fail", "html_502:1:list", "--fail", "no_text:1", "--extract-images",
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/files"
        for _ in range(200):
            try:
                r = httpx.get(url, headers={"Authorization": "Bearer k"})
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        else:  # pragma: no cover
            pytest.fail("the emulator did not start")
        assert r.status_code == 502
        assert httpx.get(url, headers={"Authorization": "Bearer k"}).json()["data"] == []
        assert httpx.get(url, headers={"Authorization": "Bearer x"}).status_code == 401
        post = {"headers": {"Authorization": "Bearer k"}, "data": {"purpose": "file-extract"},
                "files": {"file": ("chart.png", PNG, "image/png")}}
        r = httpx.post(url, **post)  # type: ignore[arg-type]
        assert (r.status_code, r.json()) == (400, _body("no_text"))
        assert httpx.post(url, **post).status_code == 200  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(10)


def test_emulator_command_line_rejects_unknown_fault() -> None:
    r = subprocess.run([sys.executable, "-m", "kimi_files.emulator", "--fail", "meteor"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown fault 'meteor'" in r.stderr


def test_docx_text_and_delay_fault(emulator: Emulator, tmp_path: Path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml",
                    "<w:document><w:body><w:p><w:r><w:t>第一段</w:t></w:r></w:p>"
                    "<w:p><w:r><w:t>Second paragraph</w:t></w:r></w:p></w:body></w:document>")
    emulator.fail_next("delay", delay=0.2)
    r = _post(emulator, "report.docx", buf.getvalue())
    assert r.status_code == 200
    doc = httpx.get(f"{emulator.base_url}/files/{r.json()['id']}/content",
                    headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert doc["content"] == "第一段\nSecond paragraph"
    assert doc["filename"] == "report.docx" and doc["type"] == "file"


def test_kimi_files_emulator_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from kimi_files.cli import main

    with pytest.raises(SystemExit) as info:
        main(["emulator", "--fail", "meteor"])
    assert info.value.code == 2 and "unknown fault 'meteor'" in capsys.readouterr().err


# --- what the real service does that the table does not say ----------------------------------


def _get(emu: Emulator, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{emu.base_url}/{path}", params=params,  # type: ignore[arg-type]
                     headers={"Authorization": f"Bearer {API_KEY}"})


def _blank_pdf() -> bytes:
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)  # a page and no text layer, like a scan
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(CAPTURED_ROWS))
def test_captured_wordings_are_answered_like_the_service(emulator: Emulator, kind: str) -> None:
    emulator.fail_next(kind, limit=3, after=1, current=1410)
    r = _post(emulator, "a.txt", b"x")
    status, etype, template = ERROR_ROWS[kind]
    assert r.status_code == status
    assert r.json() == {"error": {"type": etype,
                                  "message": template.format(limit=3, after=1, current=1410)}}
    # like the service: a request id, and no Retry-After / X-RateLimit-* on a 429
    assert len(r.headers["msh-request-id"]) >= 16
    assert "retry-after" not in r.headers
    assert not [h for h in r.headers if h.lower().startswith("x-ratelimit")]
    assert emulator.filenames() == []


def test_every_answer_carries_its_own_request_id(emulator: Emulator) -> None:
    ok = _get(emulator, "files")
    missing = _get(emulator, "files/nope")
    emulator.state.max_concurrency = 0
    limited = _post(emulator, "a.txt", b"x")
    assert (ok.status_code, missing.status_code, limited.status_code) == (200, 404, 429)
    assert "retry-after" not in limited.headers
    ids = [r.headers["msh-request-id"] for r in (ok, missing, limited)]
    assert len(set(ids)) == 3
    assert [r.request_id for r in emulator.requests] == ids


@pytest.mark.parametrize(
    ("name", "data"),
    [("scan.pdf", "blank pdf"), ("zeros.txt", b"0" * 5120), ("dots.md", ("。" * 2000).encode()),
     ("spaced.txt", b"a \n" * 2000)],
    ids=["pdf-without-text", "one-char-5k", "one-cjk-char", "one-char-and-whitespace"],
)
def test_documents_without_text_are_refused_at_upload(emulator: Emulator, name: str,
                                                      data: bytes | str) -> None:
    body = _blank_pdf() if data == "blank pdf" else data
    assert isinstance(body, bytes)
    r = _post(emulator, name, body)
    assert (r.status_code, r.json()) == (400, _body("no_text"))
    assert emulator.filenames() == []


def test_text_that_is_short_or_varied_is_accepted(emulator: Emulator) -> None:
    assert _post(emulator, "short.txt", b"z" * 100).status_code == 200
    assert _post(emulator, "just-under.txt", b"z" * 5119).status_code == 200
    assert _post(emulator, "two-chars.txt", b"z" * 6000 + b"y").status_code == 200
    assert sorted(emulator.filenames()) == ["just-under.txt", "short.txt", "two-chars.txt"]


MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\x00" * 20
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'
PNG = (Path(__file__).resolve().parent.parent / "examples" / "images" / "chart.png").read_bytes()


@pytest.mark.parametrize(
    ("purpose", "name", "data", "refusal"),
    [
        ("file-extract", "chart.png", PNG, "are no longer extracted under purpose 'file-extract'"),
        ("image", "chart.png", PNG, None),
        ("image", "a.gif", GIF, None),
        ("image", "a.webp", WEBP, None),
        ("image", "a.svg", SVG, "purpose 'image' accepts png, jpeg, webp, gif only, not "
                                "image/svg+xml (a.svg)"),
        ("image", "a.txt", b"hello", "purpose 'image' accepts png, jpeg, webp, gif only"),
        ("video", "a.mp4", MP4, None),
        ("video", "a.gif", GIF, "purpose 'video' accepts mp4, mpeg, mov, avi, x-flv, mpg, webm, "
                                "wmv, 3gpp only, not image/gif"),
        ("batch", "jobs.jsonl", b'{"custom_id": "1"}\n\n{"custom_id": "2"}\n', None),
        ("batch", "jobs.json", b'{"custom_id": "1"}\n', "purpose 'batch' takes a .jsonl file"),
        ("batch", "jobs.jsonl", b'{"custom_id": "1"}\n[1, 2]\n',
         "purpose 'batch': line 2 of jobs.jsonl is not a JSON object"),
        ("batch", "jobs.jsonl", b'{"custom_id": "1"}\n{oops\n',
         "purpose 'batch': line 2 of jobs.jsonl is not a JSON object"),
    ],
)
def test_purpose_is_checked_against_the_content(emulator: Emulator, purpose: str, name: str,
                                                data: bytes, refusal: str | None) -> None:
    r = _post(emulator, name, data, purpose=purpose)
    if refusal is None:
        assert r.status_code == 200, r.text
        assert r.json()["purpose"] == purpose
    else:
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("Invalid request: ") and refusal in error["message"]
        assert emulator.filenames() == []


def test_images_under_file_extract_with_the_older_behaviour(tmp_path: Path) -> None:
    with Emulator(extract_images=True) as emu:
        r = _post(emu, "chart.png", PNG)
        assert r.status_code == 200 and r.json()["purpose"] == "file-extract"


def test_failed_extraction_has_the_documented_status(emulator: Emulator) -> None:
    from kimi_files import FileObject

    emulator.fail_next("status_failed")
    obj = _post(emulator, "a.txt", b"hello").json()
    assert obj["status"] == "error" and "Failed to extract file" in obj["status_details"]
    assert FileObject.from_dict(obj).failed
    assert FileObject.from_dict({**obj, "status": "failed"}).failed
    assert not FileObject.from_dict({**obj, "status": "ok"}).failed


def test_batch_content_is_the_raw_jsonl(emulator: Emulator) -> None:
    jsonl = '{"custom_id": "一", "body": {}}\n{"custom_id": "2", "body": {}}\n'.encode()
    obj = _post(emulator, "jobs.jsonl", jsonl, purpose="batch").json()
    r = _get(emulator, f"files/{obj['id']}/content")
    assert r.status_code == 200 and r.content == jsonl


def test_list_pages_with_after_and_limit(emulator: Emulator) -> None:
    ids = [_post(emulator, f"{i}.txt", str(i).encode()).json()["id"] for i in range(5)]
    everything = _get(emulator, "files").json()
    assert [f["id"] for f in everything["data"]] == ids and everything["has_more"] is False
    first = _get(emulator, "files", limit=2).json()
    assert [f["id"] for f in first["data"]] == ids[:2] and first["has_more"] is True
    rest = _get(emulator, "files", after=ids[1], limit=2).json()
    assert [f["id"] for f in rest["data"]] == ids[2:4] and rest["has_more"] is True
    last = _get(emulator, "files", after=ids[3], limit=2).json()
    assert [f["id"] for f in last["data"]] == ids[4:] and last["has_more"] is False
    emulator.state.delete(ids[2])  # a cursor that is gone still pages on
    after_gone = _get(emulator, "files", after=ids[2]).json()
    assert [f["id"] for f in after_gone["data"]] == ids[3:]
    bad = _get(emulator, "files", limit=0)
    assert bad.status_code == 400 and "limit must be 1 to 10000" in bad.json()["error"]["message"]


def test_store_late_stores_only_after_the_client_gave_up(emulator: Emulator,
                                                         tmp_path: Path) -> None:
    import io

    import kimi_files as kf

    fault = emulator.fail_next("store_late", delay=0.05)
    timeout = httpx.Timeout(10.0, read=0.3)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, timeout=timeout) as c, \
            pytest.raises(kf.APITimeoutError) as info:
        c.create(io.BytesIO(b"slow to extract"), filename="late.txt")
    assert info.value.request_sent
    # the emulator stores only once the client has gone: wait for that, boundedly
    assert fault.stored.wait(10)
    assert emulator.filenames() == ["late.txt"]
    (entry,) = emulator.uploads()
    assert entry.outcome.startswith("stored ") and entry.outcome.endswith(
        "late, after the client left")


def test_no_id_and_no_data_faults_are_malformed_successes(emulator: Emulator, client: object,
                                                          no_wait: list[float]) -> None:
    import io

    import kimi_files as kf

    assert isinstance(client, kf.KimiFiles)
    emulator.fail_next("no_id")
    with pytest.raises(kf.MalformedResponseError, match="no usable id"):
        client.create(io.BytesIO(b"hello"), filename="a.txt")
    assert emulator.filenames() == ["a.txt"]  # stored all the same
    emulator.fail_next("no_data", endpoint="list", times=client.retry_policy.max_attempts)
    with pytest.raises(kf.MalformedResponseError, match="without a 'data' array"):
        client.list()
    assert len(no_wait) == client.retry_policy.max_attempts - 1  # retried, then given up


def test_clocks_are_injectable() -> None:
    now = {"mono": 1000.0, "wall": 1_700_000_000.0}
    with Emulator(rpm=2, rate_window=60, clock=lambda: now["mono"],
                  wall=lambda: now["wall"]) as emu:
        assert _post(emu, "1.txt", b"1").json()["created_at"] == 1_700_000_000
        assert _post(emu, "2.txt", b"2").status_code == 200
        r = _post(emu, "3.txt", b"3")
        assert r.status_code == 429
        assert r.json()["error"]["message"].endswith(
            "max RPM: 2, please try again after 60 seconds")
        now["mono"] += 30
        assert "after 30 seconds" in _post(emu, "3.txt", b"3").json()["error"]["message"]
        now["mono"] += 30
        now["wall"] += 60
        assert _post(emu, "3.txt", b"3").json()["created_at"] == 1_700_000_060
        assert [r.at for r in emu.requests] == [1_700_000_000.0] * 4 + [1_700_000_060.0]
