"""The client for the five endpoints, against the running emulator."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import kimi_files as kf
from kimi_files._config import CHINA_BASE_URL, DEFAULT_BASE_URL, resolve_base_url
from kimi_files.emulator import Emulator

from .conftest import API_KEY, write


def test_missing_key_is_a_clear_error_before_any_request(emulator: Emulator) -> None:
    with pytest.raises(kf.ConfigurationError, match="MOONSHOT_API_KEY"):
        kf.KimiFiles(base_url=emulator.base_url)
    assert emulator.requests == []


def test_key_and_base_url_from_environment(monkeypatch: pytest.MonkeyPatch,
                                           emulator: Emulator) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", API_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", emulator.base_url)
    with kf.KimiFiles() as c:
        assert c.base_url == emulator.base_url
        assert len(c.list()) == 0


def test_platform_shortcuts() -> None:
    assert kf.KimiFiles(api_key="k", platform="china").base_url == CHINA_BASE_URL
    assert kf.KimiFiles(api_key="k").base_url == DEFAULT_BASE_URL
    with pytest.raises(kf.ConfigurationError, match="Unknown platform"):
        kf.KimiFiles(api_key="k", platform="mars")


@pytest.mark.parametrize(
    ("url", "pattern"),
    [("ftp://example.com/v1", "Malformed base URL"), ("not a url", "Malformed base URL"),
     ("http://example.com/v1", "Refusing plain http"), ("https://:99999/v1", "Malformed"),
     ("https://user:pw@api.moonshot.ai/v1", "credentials")],
)
def test_bad_base_urls(url: str, pattern: str) -> None:
    with pytest.raises(kf.ConfigurationError, match=pattern):
        kf.KimiFiles(api_key="k", base_url=url)


def test_plain_http_only_to_loopback_unless_allowed() -> None:
    assert resolve_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert resolve_base_url("http://localhost:1/v1").startswith("http://localhost")
    assert resolve_base_url("http://[::1]:1/v1").startswith("http://[::1]")
    assert resolve_base_url("http://example.com/v1", allow_http=True) == "http://example.com/v1"


@pytest.mark.parametrize("key", ["has space", "tab\tkey", "ключ", "  "])
def test_malformed_keys(key: str) -> None:
    with pytest.raises(kf.ConfigurationError, match="API key"):
        kf.KimiFiles(api_key=key)


def test_key_never_in_repr_or_logs(emulator: Emulator, caplog: pytest.LogCaptureFixture,
                                   no_wait: list[float]) -> None:
    caplog.set_level(logging.DEBUG)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c:
        emulator.fail_next("html_502", endpoint="list")
        c.list()
        assert API_KEY not in repr(c) and API_KEY not in repr(vars(c))
    assert caplog.records, "expected debug logging"
    assert API_KEY not in caplog.text


def test_round_trip_of_all_endpoints(client: kf.KimiFiles, tmp_path: Path) -> None:
    p = write(tmp_path / "notes.md", "# Title\n\nhello world\n")
    with p.open("rb") as fh:
        created = client.create(fh, filename="notes.md", content_type="text/markdown")
    assert created.bytes == p.stat().st_size and created.status == "ok"
    assert created.filename == "notes.md" and created.purpose == "file-extract"
    listed = client.list()
    assert [f.id for f in listed] == [created.id] and listed.total_bytes == created.bytes
    assert client.retrieve(created.id) == created
    content = client.content(created.id)
    assert content.text == "# Title\n\nhello world\n"
    assert content.filename == "notes.md" and content.document is not None
    assert content.document["type"] == "file"
    deleted = client.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(kf.NotFoundError):
        client.retrieve(created.id)


@pytest.mark.parametrize("name", ["报告 2024年第一季度.txt", "Ünïcödé — ñ.md", "a\"quote'.txt",
                                  "emoji 📄.txt"])
def test_filenames_round_trip_byte_for_byte(client: kf.KimiFiles, tmp_path: Path,
                                            emulator: Emulator, name: str) -> None:
    p = write(tmp_path / name, "內容\n")
    with p.open("rb") as fh:
        created = client.create(fh, filename=name, content_type="text/plain")
    assert created.filename == name
    assert emulator.filenames() == [name]
    assert client.list().data[0].filename.encode() == name.encode()


def test_unknown_id_is_not_found(client: kf.KimiFiles) -> None:
    with pytest.raises(kf.NotFoundError, match="nope"):
        client.content("nope")
    with pytest.raises(kf.ConfigurationError, match="Invalid file id"):
        client.retrieve("  ")


def test_ids_are_quoted_into_the_path() -> None:
    import httpx

    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json={"id": "x"})

    with kf.KimiFiles(api_key="k", base_url="https://api.moonshot.ai/v1",
                      http_client=httpx.Client(transport=httpx.MockTransport(handler))) as c:
        c.retrieve("../../etc/passwd")
    assert seen == [b"/v1/files/..%2F..%2Fetc%2Fpasswd"]


def test_get_calls_retry_transient_failures(client: kf.KimiFiles, emulator: Emulator,
                                            no_wait: list[float]) -> None:
    emulator.fail_next("html_504", endpoint="list")
    emulator.fail_next("engine_overloaded", endpoint="list")
    assert len(client.list()) == 0
    assert len(no_wait) == 2
    assert [r.status for r in emulator.requests] == [504, 429, 200]


def test_non_retryable_is_sent_once(client: kf.KimiFiles, emulator: Emulator,
                                    no_wait: list[float]) -> None:
    emulator.fail_next("account_suspended", endpoint="list", times=3)
    with pytest.raises(kf.AccountSuspendedError, match="suspended"):
        client.list()
    assert len(emulator.requests) == 1 and no_wait == []


def test_delete_whose_answer_was_lost_counts_as_done(client: kf.KimiFiles, emulator: Emulator,
                                                     tmp_path: Path, no_wait: list[float]) -> None:
    f = emulator.seed("old.txt", 10)
    emulator.fail_next("store_then_drop", endpoint="delete")  # deletes, then drops the line
    assert client.delete(f.id).deleted
    assert emulator.filenames() == []


def test_connection_refused_is_a_connection_error(no_wait: list[float]) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with kf.KimiFiles(api_key="k", base_url=f"http://127.0.0.1:{port}/v1",
                      max_retries=1) as c, pytest.raises(kf.APIConnectionError) as info:
        c.list()
    assert not info.value.request_sent
    assert f"127.0.0.1:{port}" in str(info.value)


def test_server_that_never_answers_times_out(emulator: Emulator, no_wait: list[float]) -> None:
    emulator.fail_next("hang", endpoint="list", delay=3)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url, timeout=0.3,
                      max_retries=0) as c, pytest.raises(kf.APITimeoutError, match="timed out"):
        c.list()


def test_redirects_are_not_followed(emulator: Emulator) -> None:
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1"
        return httpx.Response(302, headers={"location": "https://evil.example/v1/files"})

    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                      http_client=httpx.Client(transport=httpx.MockTransport(handler))) as c, \
            pytest.raises(kf.APIStatusError, match=r"redirected to https://evil\.example"):
        c.list()


def test_content_plain_text_body_is_kept() -> None:
    assert kf.FileContent.from_body("just text").text == "just text"
    assert kf.FileContent.from_body('{"not": "doc"}').document is None
    doc = kf.FileContent.from_body('{"content": "x", "file_type": "application/pdf"}')
    assert doc.text == "x" and doc.file_type == "application/pdf"


def test_file_object_tolerates_extra_and_missing_fields() -> None:
    obj = kf.FileObject.from_dict({"id": "a", "bytes": "12", "new_field": 1})
    assert obj.bytes == 12 and obj.extra == {"new_field": 1} and obj.created_at == 0
    assert obj.to_dict()["new_field"] == 1
    assert kf.FileObject.from_dict({"id": "b", "status": "error"}).failed


def test_tls_verification_stays_on_for_https() -> None:
    import ssl

    with kf.KimiFiles(api_key="k") as c:
        context = c._http._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_preflight_method_sends_nothing(client: kf.KimiFiles, emulator: Emulator,
                                        tmp_path: Path) -> None:
    check = client.preflight(write(tmp_path / "a.md", "# A\n"))
    assert check.file.size == 4 and check.plan.deletions == ()
    assert [r.method for r in emulator.requests] == ["GET"]


def test_ids_that_are_dots_stay_one_path_segment(emulator: Emulator, client: kf.KimiFiles,
                                                 no_wait: list[float]) -> None:
    emulator.state.seed_file("keep.txt", 3)
    for fid in (".", ".."):
        with pytest.raises(kf.NotFoundError):
            client.delete(fid)
        with pytest.raises(kf.NotFoundError):
            client.content(fid)
    paths = [r.path for r in emulator.requests]
    assert all(p.startswith("/v1/files/%2E") or p.startswith("/v1/files/.") for p in paths), paths
    assert len(emulator.state.listing()) == 1
