"""Every row of the platform's error table, from real HTTP responses of the emulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kimi_files as kf
from kimi_files._retry import should_retry
from kimi_files.emulator import ERROR_ROWS, Emulator
from kimi_files.errors import error_from_response

# (fault, expected class, expected status, expected type, parsed attributes, retryable)
ROWS = [
    ("content_filter", kf.ContentFilterError, 400, "content_filter", {}, False),
    ("invalid_request", kf.InvalidRequestError, 400, "invalid_request_error", {}, False),
    ("input_too_long", kf.InputTooLongError, 400, "invalid_request_error", {}, False),
    ("model_token_limit", kf.ModelTokenLimitError, 400, "invalid_request_error",
     {"max_model_length": 8192}, False),
    ("invalid_purpose", kf.ServerInvalidPurposeError, 400, "invalid_request_error", {}, False),
    ("file_too_large", kf.ServerFileTooLargeError, 400, "invalid_request_error", {}, False),
    ("file_empty", kf.ServerEmptyFileError, 400, "invalid_request_error", {}, False),
    ("too_many_files", kf.ServerTooManyFilesError, 400, "invalid_request_error",
     {"max_file_count": 8192}, False),
    ("invalid_authentication", kf.InvalidAuthenticationError, 401,
     "invalid_authentication_error", {}, False),
    ("incorrect_api_key", kf.IncorrectAPIKeyError, 401, "incorrect_api_key_error", {}, False),
    ("api_not_open", kf.APINotOpenError, 403, "permission_denied_error", {}, False),
    ("other_user_info", kf.OtherUserInfoError, 403, "permission_denied_error", {}, False),
    ("model_not_found", kf.ModelNotFoundError, 404, "resource_not_found_error", {}, False),
    ("engine_overloaded", kf.EngineOverloadedError, 429, "engine_overloaded_error", {}, True),
    ("account_suspended", kf.AccountSuspendedError, 429, "exceeded_current_quota_error", {},
     False),
    ("token_quota", kf.TokenQuotaExceededError, 429, "exceeded_current_quota_error", {}, False),
    ("max_concurrency", kf.ConcurrencyLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "retry_after": 7}, True),
    ("max_rpm", kf.RPMLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "retry_after": 7}, True),
    ("tpm", kf.TPMLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "current": 9001}, True),
    ("tpd", kf.TPDLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "current": 9001}, True),
    ("extraction_failed", kf.ExtractionFailedError, 500, "server_error", {}, True),
    ("invalid_state", kf.InvalidStateTransitionError, 500, "unexpected_output", {}, True),
    # captured from real accounts (the emulator's CAPTURED_ROWS)
    ("max_concurrency_short", kf.ConcurrencyLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "retry_after": 7}, True),
    ("max_request", kf.RPMLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "retry_after": 7}, True),
    ("org_rate_limit", kf.RateLimitReachedError, 429, "rate_limit_reached_error",
     {"limit": None, "retry_after": 7}, True),
    ("project_tpm", kf.TPMLimitError, 429, "rate_limit_reached_error",
     {"limit": 8192, "current": 9001}, True),
    ("no_text", kf.NoExtractableTextError, 400, "invalid_request_error", {}, False),
]


def test_every_row_of_the_table_is_covered() -> None:
    assert {r[0] for r in ROWS} == set(ERROR_ROWS)


@pytest.mark.parametrize(("fault", "cls", "status", "etype", "attrs", "retryable"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_row_maps_to_typed_error(emulator: Emulator, client: kf.KimiFiles, fault: str,
                                 cls: type[kf.APIStatusError], status: int, etype: str,
                                 attrs: dict[str, float], retryable: bool) -> None:
    emulator.fail_next(fault, endpoint="retrieve", limit=8192, after=7, current=9001)
    with pytest.raises(kf.APIStatusError) as info:
        client.request("GET", "files/some-id")
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.type == etype
    _, _, template = ERROR_ROWS[fault]
    assert err.message == template.format(limit=8192, after=7, current=9001,
                                          detail="emulated failure")
    for name, value in attrs.items():
        assert getattr(err, name) == value, name
    assert should_retry(err) is retryable
    assert err.retryable is retryable


def test_local_and_server_too_large_share_one_except_clause() -> None:
    server = error_from_response(
        400, b'{"error":{"type":"invalid_request_error","message":"File size is too large, '
        b'max file size is 100MB, please confirm and re-upload the file"}}')
    local = kf.LocalFileTooLargeError("x: too large", path="x")
    for err in (server, local):
        with pytest.raises(kf.FileTooLargeError):
            raise err
    assert isinstance(server, kf.APIStatusError) and not isinstance(local, kf.APIStatusError)
    assert isinstance(local, kf.PreflightError)


def test_401_names_base_url_and_platforms_never_the_key(emulator: Emulator) -> None:
    secret = "sk-wrong-key-ABCDEFGHIJKLMNOP"
    with kf.KimiFiles(api_key=secret, base_url=emulator.base_url) as c, \
            pytest.raises(kf.InvalidAuthenticationError) as info:
        c.list()
    text = str(info.value) + repr(info.value) + repr(c)
    assert emulator.base_url in str(info.value)
    assert "platform.kimi.ai" in str(info.value) and "platform.kimi.com" in str(info.value)
    assert secret not in text


@pytest.mark.parametrize(
    ("fault", "cls", "status"),
    [("html_502", kf.GatewayError, 502), ("html_503", kf.GatewayOverloadedError, 503),
     ("html_504", kf.GatewayError, 504), ("empty_500", kf.GatewayError, 500)],
)
def test_non_json_bodies_become_gateway_errors(emulator: Emulator, client: kf.KimiFiles,
                                               fault: str, cls: type[Exception],
                                               status: int) -> None:
    emulator.fail_next(fault, endpoint="retrieve")
    with pytest.raises(kf.APIStatusError) as info:
        client.request("GET", "files/x")
    assert type(info.value) is cls and info.value.status_code == status
    assert info.value.retryable
    if fault.startswith("html"):
        assert str(status) in info.value.message and "<" not in info.value.message


def test_garbage_and_truncated_success_bodies(emulator: Emulator, client: kf.KimiFiles,
                                              no_wait: list[float]) -> None:
    for fault in ("garbage", "truncated_json"):
        emulator.fail_next(fault, endpoint="list", times=client.retry_policy.max_attempts)
        with pytest.raises(kf.MalformedResponseError, match="not JSON"):
            client.list()
    assert len(no_wait) == 2 * (client.retry_policy.max_attempts - 1)
    emulator.fail_next("truncated_json", endpoint="list")
    assert len(client.list()) == 0  # retried once, then the real answer


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (429, b'{"error":{"type":"something_new","message":"slow down"}}', kf.RateLimitError),
        (400, b'{"error":{"type":"new_type","message":"odd"}}', kf.BadRequestError),
        (418, b"teapot", kf.APIStatusError),
        (500, b'{"error":{"type":"x","message":"boom"}}', kf.InternalServerError),
        (500, b'{"error": "plain string"}', kf.InternalServerError),
        (503, b"", kf.GatewayOverloadedError),
        (503, b'{"error":{"type":"server_error","message":"busy"}}', kf.GatewayOverloadedError),
        (413, b"<html>Request Entity Too Large</html>", kf.ServerFileTooLargeError),
        (429, b'{"error":{"type":"rate_limit_reached_error","message":"??"}}',
         kf.RateLimitReachedError),
    ],
)
def test_unknown_types_and_bodies_fall_back_by_status(status: int, body: bytes,
                                                      cls: type[Exception]) -> None:
    err = error_from_response(status, body)
    assert type(err) is cls
    assert err.status_code == status


def test_retry_after_header_is_read() -> None:
    err = error_from_response(429, b'{"error":{"type":"engine_overloaded_error","message":"x"}}',
                              {"Retry-After": "12"})
    assert err.retry_after == 12
    assert error_from_response(503, b"", {"retry-after": "soon"}).retry_after is None


@given(status=st.integers(100, 599), body=st.binary(max_size=300),
       headers=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3))
def test_parsing_arbitrary_bodies_never_raises(status: int, body: bytes,
                                               headers: dict[str, str]) -> None:
    err = error_from_response(status, body, headers)
    assert isinstance(err, kf.APIStatusError)
    assert isinstance(str(err), str) and isinstance(repr(err), str)


@given(message=st.text(max_size=200), etype=st.one_of(st.none(), st.text(max_size=30)),
       status=st.sampled_from([400, 401, 403, 404, 429, 500, 502]))
def test_parsing_arbitrary_json_errors_never_raises(message: str, etype: str | None,
                                                    status: int) -> None:
    import json

    body = json.dumps({"error": {"type": etype, "message": message}}).encode()
    err = error_from_response(status, body)
    assert err.message == message


def test_public_names_are_exported() -> None:
    for name in kf.__all__:
        assert getattr(kf, name) is not None, name
    for name in kf.errors.__all__:
        assert name in kf.__all__
