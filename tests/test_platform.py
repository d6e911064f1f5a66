"""The platform as real accounts see it: captured wordings, request ids, redaction, pickling,
Kimi Code keys, hosts and time-outs, the retry budget, strict parsing (issue 9, parts of 8)."""

from __future__ import annotations

import json
import logging
import pickle
import re
import socket
from pathlib import Path

import httpx
import pytest

import kimi_files as kf
from kimi_files import errors
from kimi_files._config import RetryPolicy, resolve_api_key, resolve_base_url
from kimi_files.emulator import Emulator
from kimi_files.errors import error_from_response

from .conftest import API_KEY


def _body(message: str, etype: str = "rate_limit_reached_error") -> bytes:
    return json.dumps({"error": {"type": etype, "message": message}}).encode()


PREFIX = "Your account org-abc<ak-def> "

# (message as captured, class, attributes)
CAPTURED = [
    ("request reached max organization concurrency: 1, please try again after 1 seconds",
     kf.ConcurrencyLimitError, {"limit": 1, "retry_after": 1}),
    ("request reached max request: 3, please try again after 1 seconds",
     kf.RPMLimitError, {"limit": 3, "retry_after": 1}),
    ("Organization Rate limit exceeded, please try again after 1 seconds",
     kf.RateLimitReachedError, {"limit": None, "retry_after": 1}),
    ("request reached project TPM rate limit, current: 1410, limit: 100, see "
     "https://platform.moonshot.cn/docs/pricing/limits",
     kf.TPMLimitError, {"current": 1410, "limit": 100, "retry_after": None}),
    # the documented forms keep working
    ("request reached organization max concurrency: 50, please try again after 3 seconds",
     kf.ConcurrencyLimitError, {"limit": 50, "retry_after": 3}),
    ("request reached organization max RPM: 200, please try again after 2 seconds",
     kf.RPMLimitError, {"limit": 200, "retry_after": 2}),
]


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "with-account"])
@pytest.mark.parametrize(("message", "cls", "attrs"), CAPTURED,
                         ids=["concurrency", "request", "org", "project-tpm", "doc-concurrency",
                              "doc-rpm"])
def test_captured_429_wordings_are_typed_and_parsed(prefix: str, message: str,
                                                    cls: type[kf.RateLimitError],
                                                    attrs: dict[str, float | None]) -> None:
    for etype in ("rate_limit_reached_error", "something_else"):
        err = error_from_response(429, _body(prefix + message, etype))
        assert type(err) is cls, etype
        assert err.message == prefix + message
        for name, value in attrs.items():
            assert getattr(err, name) == value, name
        assert err.retryable and err.slow_down


def test_the_pacer_learns_the_tier_from_the_captured_wordings() -> None:
    from kimi_files._pacing import Pacer

    pacer = Pacer(8, None)
    pacer.learn(error_from_response(429, _body(CAPTURED[0][0])))
    pacer.learn(error_from_response(429, _body(CAPTURED[1][0])))
    assert (pacer.concurrency, pacer.rpm) == (1, 3)


def test_no_extractable_text_says_what_it_means_and_the_way_out() -> None:
    for etype in ("invalid_request_error", "bad_request", None):
        err = error_from_response(400, json.dumps(
            {"error": {"type": etype, "message": "text extract error: 没有解析出内容"}}).encode())
        assert type(err) is kf.NoExtractableTextError
        assert isinstance(err, kf.BadRequestError) and not err.retryable
        text = str(err)
        assert text.startswith("text extract error: 没有解析出内容 (HTTP 400")
        assert "no extractable text" in text and "scanned, image-only PDF" in text
        assert "OCR" in text and 'purpose="image"' in text
    assert not kf._retry.should_retry(err)


def test_no_extractable_text_from_an_upload_is_not_retried(emulator: Emulator,
                                                           client: kf.KimiFiles,
                                                           tmp_path: Path,
                                                           no_wait: list[float]) -> None:
    p = tmp_path / "scan.txt"
    p.write_bytes(b"." * 6000)
    with pytest.raises(kf.NoExtractableTextError, match="OCR"):
        client.upload(p)
    assert len(emulator.uploads()) == 1 and no_wait == [] and emulator.filenames() == []


def test_request_id_is_kept_and_shown() -> None:
    body = _body("The engine is currently overloaded, please try again later",
                 "engine_overloaded_error")
    err = error_from_response(429, body, {"Msh-Request-Id": "req-1", "X-Msh-Trace-Id": "tr-1"})
    assert err.request_id == "req-1"
    assert str(err) == ("The engine is currently overloaded, please try again later "
                        "(HTTP 429 engine_overloaded_error, request id req-1)")
    assert error_from_response(429, body, {"x-msh-trace-id": "tr-2"}).request_id == "tr-2"
    assert error_from_response(429, body).request_id is None
    assert "request id" not in str(error_from_response(429, body))


def test_request_id_from_the_emulator(emulator: Emulator, client: kf.KimiFiles) -> None:
    emulator.fail_next("invalid_authentication", endpoint="retrieve")
    with pytest.raises(kf.AuthenticationError) as info:
        client.retrieve("x")
    rid = emulator.requests[-1].request_id
    assert rid and info.value.request_id == rid and f"request id {rid}" in str(info.value)


def test_a_key_echoed_by_the_server_is_redacted() -> None:
    secret = "sk-live-ABCDEFGHIJKLMNOP"
    body = _body(f"Incorrect API key provided: {secret}; also saw sk-other-123456789",
                 "incorrect_api_key_error")
    err = error_from_response(401, body, secret=secret)
    everything = str(err) + repr(err) + json.dumps(err.body) + err.message
    assert secret not in everything and "sk-other-123456789" not in everything
    assert err.message == "Incorrect API key provided: sk-***; also saw sk-***"
    assert err.body == {"error": {"type": "incorrect_api_key_error", "message": err.message}}
    # a key that does not look like sk-... is redacted when it is the secret given
    plain = "0123456789abcdefXYZ"
    err = error_from_response(400, _body(f"bad key {plain}", "invalid_request_error"),
                              secret=plain)
    assert plain not in err.message and err.message == "bad key sk-***"
    # an HTML page too
    err = error_from_response(502, f"<html><title>key {secret}</title></html>".encode(),
                              secret=secret)
    assert secret not in err.message + str(err.body)
    # short secrets are not real keys: the message is left alone
    assert error_from_response(400, _body("a bad request", "x"), secret="a").message == \
        "a bad request"


@pytest.mark.parametrize("key", ["sk-kimi-0123456789abcdef0123456789", "sk-0123456789abcdef"])
def test_401_explains_kimi_code_keys(key: str) -> None:
    body = _body("Invalid Authentication", "invalid_authentication_error")
    err = error_from_response(401, body, base_url="https://api.moonshot.ai/v1", secret=key)
    text = str(err) + repr(err)
    assert key not in text and key not in pickle.dumps(err).decode("latin-1")
    kimi_code = key.startswith("sk-kimi-")
    assert err.kimi_code_key is kimi_code
    assert ("looks like a Kimi Code subscription key" in text) is kimi_code
    assert ("not with the platform's Files API" in text) is kimi_code
    # the base URL of Kimi Code explains it whatever the key
    err = error_from_response(401, body, base_url="https://api.kimi.com/coding/v1", secret=key)
    assert "This base URL is Kimi Code's (api.kimi.com/coding)" in str(err)
    assert "https://api.moonshot.ai/v1" in str(err)


def _instance(cls: type[kf.KimiError]) -> kf.KimiError:
    if issubclass(cls, kf.APIStatusError):
        err = cls("boom", status_code=429, type="t", body={"error": {"message": "boom"}},
                  headers={"Msh-Request-Id": "rid", "Retry-After": "3"},
                  base_url="http://h/v1", numbers={"limit": 5, "current": 7})
        if isinstance(err, kf.AuthenticationError):
            err.kimi_code_key = True
        return err
    if issubclass(cls, kf.NoRoomError):
        return cls("no room", path="p", files_to_free=2, bytes_to_free=9)
    if issubclass(cls, kf.PreflightError):
        return cls("refused", path="p", rule="r")
    if issubclass(cls, kf.APIConnectionError):
        return cls("lost", request_sent=True)
    return cls("plain")


ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__
                 if isinstance(getattr(errors, name), type)
                 and issubclass(getattr(errors, name), kf.KimiError)]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[c.__name__ for c in ERROR_CLASSES])
def test_every_error_pickles(cls: type[kf.KimiError]) -> None:
    err = _instance(cls)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert vars(back) == vars(err) and back.args == err.args
    assert str(back) == str(err) and repr(back) == repr(err)
    if isinstance(err, kf.APIStatusError):
        assert isinstance(back, kf.APIStatusError)
        assert (back.status_code, back.type, back.limit, back.current, back.retry_after,
                back.request_id) == (429, "t", 5, 7, 3, "rid")


def test_all_error_classes_are_covered_by_the_pickle_test() -> None:
    assert len(ERROR_CLASSES) > 50
    assert kf.NoExtractableTextError in ERROR_CLASSES
    assert kf.GatewayOverloadedError in ERROR_CLASSES


# --- hosts, keys, time-outs ---------------------------------------------------------------------

def test_kimi_env_names_are_read_when_moonshot_ones_are_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIMI_API_KEY", "sk-from-kimi")
    monkeypatch.setenv("KIMI_BASE_URL", "https://api.moonshot.cn/v1/")
    assert resolve_api_key(None) == "sk-from-kimi"
    assert resolve_base_url() == "https://api.moonshot.cn/v1"
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-from-moonshot")
    monkeypatch.setenv("MOONSHOT_BASE_URL", "https://api.moonshot.ai/v1")
    assert resolve_api_key(None) == "sk-from-moonshot"
    assert resolve_base_url() == "https://api.moonshot.ai/v1"
    assert resolve_api_key("sk-arg") == "sk-arg"
    monkeypatch.delenv("MOONSHOT_API_KEY")
    monkeypatch.setenv("KIMI_API_KEY", "sk bad")
    with pytest.raises(kf.ConfigurationError, match=r"The API key \(from KIMI_API_KEY\) is "
                                                    "malformed"):
        resolve_api_key(None)
    monkeypatch.delenv("KIMI_API_KEY")
    with pytest.raises(kf.ConfigurationError, match="MOONSHOT_API_KEY environment variable "
                                                    r"\(or KIMI_API_KEY"):
        resolve_api_key(None)


def test_the_read_time_out_outlasts_the_servers_five_minutes() -> None:
    from kimi_files._transport import DEFAULT_TIMEOUT

    assert DEFAULT_TIMEOUT.read is not None and DEFAULT_TIMEOUT.read > 300
    with kf.KimiFiles(api_key="k") as c:
        assert c._http.timeout.read == DEFAULT_TIMEOUT.read


def test_a_base_url_without_v1_says_so(emulator: Emulator, tmp_path: Path,
                                       no_wait: list[float]) -> None:
    import io

    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.url) as c:
        for call in (c.list, lambda: c.create(io.BytesIO(b"x"), filename="a.txt")):
            with pytest.raises(kf.NotFoundError) as info:
                call()
            text = str(info.value)
            assert f"{emulator.url}/files answered 404" in text
            assert "should end in /v1" in text
    # a missing file is a plain 404, with no advice about the base URL
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url) as c, \
            pytest.raises(kf.NotFoundError) as info:
        c.retrieve("nope")
    assert "/v1" not in info.value.message


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_a_connection_that_cannot_be_made_is_said_at_once(
        caplog: pytest.LogCaptureFixture, no_wait: list[float]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    policy = RetryPolicy(max_attempts=3)
    with caplog.at_level(logging.WARNING, logger="kimi_files"), \
            kf.KimiFiles(api_key="k", base_url=url, retry=policy) as c, \
            pytest.raises(kf.APIConnectionError):
        c.answered = True  # the server answered before (else it fails at once: test_say.py)
        c.list()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(no_wait) == 2 and len(warnings) == 1
    assert warnings[0].startswith(f"GET {url}/files: could not connect")
    assert "will retry for up to 900s more" in warnings[0]


# --- the retry budget, against the emulator ----------------------------------------------------

def test_a_long_overload_outlasts_the_attempt_cap(emulator: Emulator, client: kf.KimiFiles,
                                                  no_wait: list[float]) -> None:
    emulator.fail_next("engine_overloaded", endpoint="list", times=10)
    emulator.fail_next("html_503", endpoint="list", times=3)
    assert len(client.list()) == 0
    assert len(no_wait) == 13 > client.retry_policy.max_attempts


def test_other_errors_keep_the_attempt_cap(emulator: Emulator, client: kf.KimiFiles,
                                           no_wait: list[float]) -> None:
    emulator.fail_next("html_502", endpoint="list", times=10)
    with pytest.raises(kf.GatewayError):
        client.list()
    assert len(no_wait) == client.retry_policy.max_attempts - 1


def test_a_server_wait_beyond_the_budget_ends_at_once(emulator: Emulator,
                                                      no_wait: list[float]) -> None:
    emulator.fail_next("max_request", endpoint="list", limit=3, after=600)
    with kf.KimiFiles(api_key=API_KEY, base_url=emulator.base_url,
                      retry=RetryPolicy(timeout=300)) as c, \
            pytest.raises(kf.RPMLimitError) as info:
        c.list()
    assert info.value.retry_after == 600 and no_wait == []
    assert len(emulator.requests) == 1


def test_server_waits_are_jittered_and_long_waits_are_said(
        emulator: Emulator, client: kf.KimiFiles, no_wait: list[float],
        caplog: pytest.LogCaptureFixture) -> None:
    emulator.fail_next("max_concurrency_short", endpoint="list", after=1, times=8)
    emulator.fail_next("org_rate_limit", endpoint="list", after=7)
    with caplog.at_level(logging.WARNING, logger="kimi_files"):
        client.list()
    assert len(no_wait) == 9
    assert all(1 <= w <= 2 for w in no_wait[:8]) and 7 <= no_wait[8] <= 8
    assert len(set(no_wait[:8])) > 1  # not everyone wakes at the same instant
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the ceiling learned (issue #18), then the long wait
    assert "from now on at most 1 request at once" in warnings[0]
    assert re.fullmatch(r"GET files: waiting [78]s before retrying \(HTTP 429 "
                        r"rate_limit_reached_error\); giving up after 9\d\ds more", warnings[1])


def test_a_server_that_keeps_saying_after_0_seconds_is_not_hammered(
        emulator: Emulator, client: kf.KimiFiles, no_wait: list[float]) -> None:
    emulator.fail_next("org_rate_limit", endpoint="list", after=0, times=5)
    client.list()
    assert len(no_wait) == 5
    # the growing backoff (1, 2, 4, 8, 16 s plus jitter), not five retries at once
    assert [int(w) for w in no_wait] == [1, 2, 4, 8, 16]


# --- strict parsing -----------------------------------------------------------------------------

def test_a_list_without_data_is_never_an_empty_account() -> None:
    for answer in ({"object": "list"}, {"object": "list", "data": None},
                   {"object": "list", "data": {"a": 1}}):
        with pytest.raises(kf.MalformedResponseError, match="without a 'data' array"):
            kf.FileList.from_dict(answer)
    assert len(kf.FileList.from_dict({"object": "list", "data": []})) == 0


def test_a_file_object_without_an_id_is_malformed() -> None:
    for answer in ({"object": "file", "bytes": 3}, {"id": ""}, {"id": "  "}, {"id": None},
                   {"id": 12}):
        with pytest.raises(kf.MalformedResponseError, match="no usable id"):
            kf.FileObject.from_dict(answer)
    assert kf.FileObject.from_dict({"id": "cl1"}).id == "cl1"


@pytest.mark.parametrize("size", [-1, -10**12, 1.5, True, None, "12x", "-3", 10**30, [3]])
def test_a_file_object_whose_size_is_no_size_is_malformed(size: object) -> None:
    with pytest.raises(kf.MalformedResponseError, match=(
            r"the server answered with a file object \('cl1'\) whose size is not a whole number "
            r"of bytes from 0 to 2\*\*53 \(bytes=")) as info:
        kf.FileObject.from_dict({"id": "cl1", "bytes": size})
    assert info.value.status_code == 200


@pytest.mark.parametrize(("size", "expected"), [(0, 0), (12, 12), ("12", 12), (12.0, 12),
                                                (2**53, 2**53)])
def test_a_file_object_size_in_any_whole_form_is_taken(size: object, expected: int) -> None:
    assert kf.FileObject.from_dict({"id": "cl1", "bytes": size}).bytes == expected


def test_a_listing_with_a_negative_size_is_retried_then_fails_clearly(
        no_wait: list[float]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"object": "list", "data": [
            {"id": "ok", "bytes": 10, "filename": "a.txt"},
            {"id": "evil", "bytes": -10**12, "filename": "b.txt"}]})

    with kf.KimiFiles(api_key=API_KEY, base_url="http://127.0.0.1:9/v1", max_retries=2,
                      http_client=httpx.Client(transport=httpx.MockTransport(handler))) as c, \
            pytest.raises(kf.MalformedResponseError, match=(
                r"file object \('evil'\) whose size is not a whole number of bytes .*"
                r"\(bytes=-1000000000000\)")):
        c.list()
    assert len(calls) == 3  # retried like any garbled answer, then given up


def test_content_as_a_system_message_like_the_docs(emulator: Emulator, client: kf.KimiFiles,
                                                   tmp_path: Path) -> None:
    p = tmp_path / "季度报告.txt"
    p.write_text("收入增长 12%\n", encoding="utf-8")
    up = client.upload(p)
    content = client.content(up.id)
    raw = httpx.get(f"{emulator.base_url}/files/{up.id}/content",
                    headers={"Authorization": f"Bearer {API_KEY}"}).text
    assert content.as_message() == {"role": "system", "content": raw}
    assert json.loads(content.as_message()["content"])["content"] == content.text
    assert kf.FileContent.from_body("plain").as_message() == {"role": "system",
                                                              "content": "plain"}
    built = kf.FileContent(text="x", document={"content": "x", "filename": "a"})
    assert json.loads(built.as_message()["content"]) == {"content": "x", "filename": "a"}


def test_an_upload_answered_without_an_id_is_reconciled(emulator: Emulator, client: kf.KimiFiles,
                                                        tmp_path: Path,
                                                        no_wait: list[float]) -> None:
    emulator.fail_next("no_id")
    p = tmp_path / "a.txt"
    p.write_text("hello")
    up = client.upload(p)
    assert up.id and up.id == next(iter(emulator.state.files))
    assert up.adopted and emulator.filenames() == ["a.txt"]
