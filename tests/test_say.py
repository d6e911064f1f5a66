"""Issue #18: the tool says what it decided and why, does the part that fits, and fails fast
on a wrong base URL (items 1, 2, 3, 4 and 6)."""

from __future__ import annotations

import socket
import time

import pytest

import kimi_files as kf
from kimi_files.emulator import Emulator
from kimi_files.retry import connect_failure, should_retry, unreachable_message


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# --- item 2: a wrong base URL fails fast ------------------------------------------------------


def test_first_contact_failures_are_classified_and_only_before_any_answer() -> None:
    import ssl

    refused = OSError("wrapped")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert connect_failure(refused, answered=False) == "refused"
    assert connect_failure(refused, answered=True) is None
    unknown = OSError("wrapped")
    unknown.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert connect_failure(unknown, answered=False) == "unknown host"
    assert connect_failure(ssl.SSLError(1, "WRONG_VERSION_NUMBER"), answered=False) == "tls"
    assert connect_failure(TimeoutError("slow"), answered=False) is None  # may be a slow network
    text = unreachable_message("GET", "https://h:1/v1/files", "https://h:1/v1", "tls", "x")
    assert "use http://h:1/v1" in text and "--base-url" in text


@pytest.mark.parametrize("kind", ["refused", "unknown host", "tls"])
def test_a_wrong_base_url_fails_at_once_naming_the_url_and_the_fix(
        kind: str, emulator: Emulator) -> None:
    if kind == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/v1"
        hint = "is the server (or the emulator) running?"
    elif kind == "unknown host":
        url = "https://kimi-files-test.invalid/v1"  # RFC 6761: never resolves
        hint = "'kimi-files-test.invalid' is unknown"
    else:
        url = emulator.base_url.replace("http://", "https://")  # TLS to a plain-http server
        hint = f"use {emulator.base_url}"
    started = time.monotonic()
    # waiting is on: a retry would sleep (the budget is 900 s)
    with kf.KimiFiles(api_key="k", base_url=url) as c, \
            pytest.raises(kf.ServerUnreachableError) as info:
        c.list()
    assert time.monotonic() - started < 3 * 5  # 3 s asked; generous for a loaded machine
    assert info.value.reason == kind and not should_retry(info.value)
    assert isinstance(info.value, kf.APIConnectionError)
    assert url in str(info.value) and hint in str(info.value)
    assert "Not retried" in str(info.value)


def test_after_one_answer_a_refused_connection_is_retried(no_wait: list[float]) -> None:
    with kf.KimiFiles(api_key="k", base_url=f"http://127.0.0.1:{_closed_port()}/v1",
                      max_retries=2) as c:
        c.answered = True  # the server answered before: the failure may be passing
        with pytest.raises(kf.APIConnectionError) as info:
            c.list()
    assert not isinstance(info.value, kf.ServerUnreachableError)
    assert len(no_wait) == 2


def test_the_first_answer_is_remembered(client: kf.KimiFiles) -> None:
    assert not client.answered
    client.list()
    assert client.answered
