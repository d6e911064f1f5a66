"""The benchmarks' own server answers like the Files API, and the runner starts (no timing)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from kimi_files import KimiFiles

from .conftest import write

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _fastserver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastserver", BENCH / "fastserver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastserver"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server() -> Iterator[Any]:
    with _fastserver().FastServer() as srv:
        yield srv


def test_an_upload_is_answered_with_its_size_name_and_purpose(server: Any) -> None:
    body = b"\r\n--not-the-boundary\r\n" + os.urandom(200_000)  # crosses both 64 KiB edges
    with httpx.Client(headers={"Authorization": "Bearer k"}) as http:
        r = http.post(f"{server.base_url}/files", data={"purpose": "image"},
                      files={"file": ("季度 \"报告\".bin", body, "application/octet-stream")})
        assert r.status_code == 200
        obj = r.json()
        assert obj["bytes"] == len(body)
        assert obj["filename"] == '季度 "报告".bin'
        assert obj["purpose"] == "image"
        assert obj["id"] and obj["object"] == "file" and obj["status"] == "ok"
        assert r.headers["date"].endswith("GMT")
        # stored: listed, retrieved, its content answered, then deleted
        assert [f["id"] for f in http.get(f"{server.base_url}/files").json()["data"]] == [obj["id"]]
        assert http.get(f"{server.base_url}/files/{obj['id']}").json() == obj
        assert http.get(f"{server.base_url}/files/{obj['id']}/content").json()["type"] == "file"
        assert http.delete(f"{server.base_url}/files/{obj['id']}").json()["deleted"] is True
        assert http.get(f"{server.base_url}/files/{obj['id']}").status_code == 404
        assert http.get(f"{server.base_url}/files").json() == {"object": "list", "data": [],
                                                               "has_more": False}


def test_a_chunked_upload_and_a_file_part_before_the_purpose(server: Any) -> None:
    boundary = b"b0undary"
    data = os.urandom(150_000)
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="x.txt"\r\nContent-Type: text/plain\r\n\r\n' + data + b"\r\n--" + boundary
            + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--' + boundary
            + b"--\r\n")

    def pieces() -> Iterator[bytes]:  # no length known: httpx sends it chunked
        for i in range(0, len(body), 7000):
            yield body[i:i + 7000]

    with httpx.Client(headers={"Authorization": "Bearer k"}) as http:
        r = http.post(f"{server.base_url}/files", content=pieces(),
                      headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
        assert r.request.headers.get("transfer-encoding") == "chunked"
        assert (r.json()["bytes"], r.json()["filename"], r.json()["purpose"]) == (len(data), "x.txt",
                                                                                 "batch")
        # the kept-alive connection still serves the next request
        assert http.get(f"{server.base_url}/files").json()["data"][0]["bytes"] == len(data)


def test_kimi_files_uploads_to_it_and_the_counts_see_it(server: Any, tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", "hello fast server\n" * 5000)
    with KimiFiles(api_key="k", base_url=server.base_url) as client:
        uploaded = client.upload(path, progress=False)
    assert uploaded.bytes == path.stat().st_size and uploaded.id
    with httpx.Client() as http:
        counts = http.get(f"{server.base_url.removesuffix('/v1')}/bench/stats").json()["requests"]
        assert counts["POST /v1/files"] == 1 and counts["GET /v1/files"] >= 1
        http.post(f"{server.base_url.removesuffix('/v1')}/bench/reset")
        assert http.get(f"{server.base_url}/files", headers={"Authorization": "Bearer k"}).json()[
            "data"] == []


def test_a_request_without_a_key_is_refused(server: Any) -> None:
    r = httpx.get(f"{server.base_url}/files")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "incorrect_api_key_error"


def test_the_runner_explains_itself() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "fastserver" in out.stdout
