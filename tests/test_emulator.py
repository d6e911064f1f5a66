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

from kimi_files.emulator import ERROR_ROWS, Emulator, Fault

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
        assert r.json() == {"object": "list", "data": []}
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
         "--fail", "html_502:1:list", "--log-level", "warning"],
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
