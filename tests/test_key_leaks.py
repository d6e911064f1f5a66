"""The API key never leaks, whatever a server echoes: not through a redirect's Location, not
in an error's attributes, not in a log line under ``-vv``. A server that echoes the key back
in every place it can (the emulator never does) is served by ``httpx.MockTransport`` for the
library and by a small stdlib server on loopback for the command line."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import httpx
import pytest

import kimi_files as kf
from kimi_files._redact import redact, redact_value
from kimi_files.cli import main, upload_main
from kimi_files.cli._output import _RedactingFilter

#: A key with no "sk-" prefix: only the exact-key redaction (and Bearer rule) can catch it.
PLAIN_KEY = "PlainKey0123456789abcdefXYZ"
SK_KEY = "sk-LEAKME0123456789abcdefXYZ"


def _forms(key: str) -> list[str]:
    """Every form of the key a leak could take."""
    return [key, key.lower(), quote(key, safe=""), quote(f"Bearer {key}", safe="")]


def _assert_clean(text: str, key: str) -> None:
    for form in _forms(key):
        assert form.lower() not in text.lower(), f"{form!r} leaked in {text!r}"


def _everything(exc: BaseException) -> str:
    """All an exception shows or keeps: str, repr, args and every attribute."""
    return " ".join([str(exc), repr(exc), repr(exc.args), repr(vars(exc))])


def _client(key: str, handler: Callable[[httpx.Request], httpx.Response]) -> kf.KimiFiles:
    return kf.KimiFiles(api_key=key, base_url="http://127.0.0.1:9/v1", max_retries=0,
                        http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def _echo_location(request: httpx.Request) -> httpx.Response:
    auth = request.headers["authorization"]
    key = auth.split()[1]
    return httpx.Response(302, headers={"Location": (
        f"http://evil.example/?a={quote(auth, safe='')}&k={key}&l={key.lower()}&raw={auth}")})


# --- pure redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [PLAIN_KEY, SK_KEY])
def test_redact_catches_every_form_of_the_key(key: str) -> None:
    text = " | ".join([*_forms(key), f"Authorization: Bearer {key}", f"?k=Bearer%20{key}"])
    out = redact(text, key)
    _assert_clean(out, key)
    assert "Authorization: Bearer ***" in out


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abc.def-ghi_jkl", "bearer%20tok3n", "x=Bearer+tok3n",
    "?k=%20sk-abcdefgh1234", "(sk-abcdefgh1234)",
])
def test_redact_without_the_key_still_hides_bearer_and_sk_tokens(text: str) -> None:
    out = redact(text)
    assert "tok3n" not in out and "abc.def" not in out and "abcdefgh1234" not in out


def test_redact_leaves_ordinary_words_alone() -> None:
    assert redact("task-abcdefgh and desk-12345678 bearers") == (
        "task-abcdefgh and desk-12345678 bearers")


def test_redact_value_walks_json() -> None:
    assert redact_value({"a": [f"x {SK_KEY}", 3, {SK_KEY: None}]}) == {
        "a": ["x sk-***", 3, {"sk-***": None}]}


# --- library: exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [PLAIN_KEY, SK_KEY])
def test_a_redirect_location_that_carries_the_key_is_redacted(key: str) -> None:
    with _client(key, _echo_location) as client, pytest.raises(kf.APIStatusError, match=(
            r"GET http://127\.0\.0\.1:9/v1/files was redirected to http://evil\.example/\?a=.*; "
            r"kimi-files follows no redirect")) as info:
        client.list()
    assert info.value.status_code == 302
    _assert_clean(_everything(info.value), key)


def test_an_error_answer_echoing_the_key_in_headers_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        return httpx.Response(400, headers={"X-Echo": auth, "X-Key": auth.split()[1]},
                              json={"error": {"type": "invalid_request_error",
                                              "message": f"bad: {auth}"}})

    with _client(PLAIN_KEY, handler) as client, pytest.raises(kf.BadRequestError) as info:
        client.list()
    _assert_clean(_everything(info.value), PLAIN_KEY)
    assert info.value.headers["x-echo"] == "Bearer ***"


@pytest.mark.parametrize("body", [
    f"not json: Authorization: Bearer {SK_KEY}".encode(),
    json.dumps([f"Bearer {SK_KEY}", SK_KEY]).encode(),
])
def test_a_malformed_success_body_is_kept_redacted(body: bytes, no_wait: None) -> None:
    with _client(SK_KEY, lambda r: httpx.Response(200, content=body)) as client, \
            pytest.raises(kf.MalformedResponseError, match="not JSON|not an object") as info:
        client.list()
    assert info.value.body  # kept, but without the key
    _assert_clean(_everything(info.value), SK_KEY)


def test_a_list_answer_without_data_is_kept_redacted(no_wait: None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "echo": request.headers["authorization"]})

    with _client(SK_KEY, handler) as client, pytest.raises(kf.MalformedResponseError) as info:
        client.list()
    assert info.value.body == {"object": "list", "echo": "Bearer ***"}
    _assert_clean(_everything(info.value), SK_KEY)


# --- command line: stderr under -vv ----------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[str]:
    """Real HTTP on loopback: every request is redirected to a Location holding the key."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            self.send_response(302)
            self.send_header("Location", f"http://evil.example/?k={quote(auth, safe='')}"
                                         f"&raw={auth.split()[-1]}")
            self.send_header("X-Echo", auth)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("key", [PLAIN_KEY, SK_KEY])
@pytest.mark.parametrize("json_out", [False, True])
def test_cli_never_prints_the_key_even_at_debug(
        echo_server: str, key: str, json_out: bool, tmp_path: object,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", key)
    monkeypatch.setenv("MOONSHOT_BASE_URL", echo_server)
    code = main(["list", "-vv", *(["--json"] if json_out else [])])
    out, err = capsys.readouterr()
    assert code == 1
    assert "was redirected to http://evil.example/" in err
    assert "kimi-files: DEBUG:" in err  # debug logging really was on
    _assert_clean(out + err, key)


def test_cli_upload_never_prints_the_key_even_at_debug(
        echo_server: str, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a document\n")
    monkeypatch.setenv("MOONSHOT_API_KEY", PLAIN_KEY)
    monkeypatch.setenv("MOONSHOT_BASE_URL", echo_server)
    upload_main(["-vv", "--no-state", "--no-progress", str(folder)])
    out, err = capsys.readouterr()
    assert "kimi-files: DEBUG:" in err
    _assert_clean(out + err, PLAIN_KEY)


@pytest.mark.parametrize("message", [
    "headers [(b'Authorization', b'Bearer {key}')]", "GET /?k={key}", "{lower}", "%s",
])
def test_the_cli_log_filter_redacts_any_record(message: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", PLAIN_KEY)
    args = (f"Bearer {PLAIN_KEY}",) if message == "%s" else None
    record = logging.LogRecord("httpcore.http11", logging.DEBUG, __file__, 1,
                               message.format(key=PLAIN_KEY, lower=PLAIN_KEY.lower()), args, None)
    assert _RedactingFilter().filter(record)
    _assert_clean(record.getMessage(), PLAIN_KEY)
