"""From an HTTP answer of the platform to the error it means: the rows of the platform's
error table (and the wordings real accounts get) matched by status, ``error.type`` and message,
the numbers in the message parsed. Pure: :func:`error_from_response` never raises.
The error classes themselves, and the tree they form, are in :mod:`kimi_files.errors`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._redact import is_kimi_code_key, redact, redact_value
from .errors import (
    AccountSuspendedError,
    APINotOpenError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ContentFilterError,
    EngineOverloadedError,
    ExceededQuotaError,
    ExtractionFailedError,
    GatewayError,
    GatewayOverloadedError,
    IncorrectAPIKeyError,
    InputTooLongError,
    InternalServerError,
    InvalidAuthenticationError,
    InvalidRequestError,
    InvalidStateTransitionError,
    ModelNotFoundError,
    ModelTokenLimitError,
    NoExtractableTextError,
    NotFoundError,
    OtherUserInfoError,
    PermissionDeniedError,
    RateLimitError,
    RateLimitReachedError,
    RPMLimitError,
    ServerEmptyFileError,
    ServerFileTooLargeError,
    ServerInvalidPurposeError,
    ServerTooManyFilesError,
    TokenQuotaExceededError,
    TPDLimitError,
    TPMLimitError,
)

__all__ = ["error_from_response"]


# --- mapping responses to classes ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    status: int
    etype: str | None  # None: any type
    pattern: re.Pattern[str] | None  # None: any message
    cls: type[APIStatusError]


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(text, re.IGNORECASE | re.DOTALL)


# Rows of the platform's error table, most specific first. Named groups become attributes.
_RULES: tuple[_Rule, ...] = (
    _Rule(400, "content_filter", None, ContentFilterError),
    # captured from real accounts, answered to an upload: "text extract error: 没有解析出内容"
    _Rule(400, None, _rx(r"text extract error"), NoExtractableTextError),
    _Rule(400, "invalid_request_error", _rx(r"input token length too long"), InputTooLongError),
    _Rule(
        400,
        "invalid_request_error",
        _rx(r"exceeded model token limit\s*:?\s*(?P<max_model_length>\d+)"),
        ModelTokenLimitError,
    ),
    _Rule(400, "invalid_request_error", _rx(r"invalid purpose"), ServerInvalidPurposeError),
    _Rule(400, "invalid_request_error", _rx(r"file size is too large"), ServerFileTooLargeError),
    _Rule(400, "invalid_request_error", _rx(r"file size is zero"), ServerEmptyFileError),
    _Rule(
        400,
        "invalid_request_error",
        _rx(r"exceeded the max file count\s*(?P<max_file_count>\d+)?"),
        ServerTooManyFilesError,
    ),
    _Rule(400, "invalid_request_error", None, InvalidRequestError),
    _Rule(401, "invalid_authentication_error", None, InvalidAuthenticationError),
    _Rule(401, "incorrect_api_key_error", None, IncorrectAPIKeyError),
    _Rule(403, None, _rx(r"is not open"), APINotOpenError),
    _Rule(403, None, _rx(r"other user info"), OtherUserInfoError),
    _Rule(404, None, _rx(r"not found the model"), ModelNotFoundError),
    _Rule(429, "engine_overloaded_error", None, EngineOverloadedError),
    _Rule(429, "exceeded_current_quota_error", _rx(r"suspended"), AccountSuspendedError),
    _Rule(429, "exceeded_current_quota_error", _rx(r"token quota"), TokenQuotaExceededError),
    _Rule(429, "exceeded_current_quota_error", None, ExceededQuotaError),
    # "organization max concurrency: N" (the table), "max organization concurrency: N" (seen)
    _Rule(
        429,
        None,
        _rx(r"max\s+(?:organization\s+)?concurrency\s*:?\s*(?P<limit>\d+)"),
        ConcurrencyLimitError,
    ),
    # "organization max RPM: N" (the table), "max request: N" (seen)
    _Rule(
        429,
        None,
        _rx(r"max\s+(?:organization\s+)?(?:rpm|requests?)\s*:?\s*(?P<limit>\d+)"),
        RPMLimitError,
    ),
    _Rule(
        429,
        None,
        _rx(r"tpm rate limit.*?current\s*:?\s*(?P<current>\d+).*?limit\s*:?\s*(?P<limit>\d+)"),
        TPMLimitError,
    ),
    _Rule(
        429,
        None,
        _rx(r"tpd rate limit.*?current\s*:?\s*(?P<current>\d+).*?limit\s*:?\s*(?P<limit>\d+)"),
        TPDLimitError,
    ),
    # "Organization Rate limit exceeded, please try again after 1 seconds" (seen): no number
    _Rule(429, None, _rx(r"rate limit exceeded"), RateLimitReachedError),
    _Rule(429, "rate_limit_reached_error", None, RateLimitReachedError),
    _Rule(500, None, _rx(r"failed to extract file"), ExtractionFailedError),
    _Rule(500, "unexpected_output", None, InvalidStateTransitionError),
    _Rule(500, None, _rx(r"invalid state transition"), InvalidStateTransitionError),
)

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: ServerFileTooLargeError,
    429: RateLimitError,
    502: GatewayError,
    503: GatewayOverloadedError,
    504: GatewayError,
}

_AFTER = re.compile(r"(?:try again )?after\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def _decode_error_body(body: bytes) -> tuple[object, str | None, str | None]:
    """(parsed body or text, error.type, error.message); never raises."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return text, None, None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict):
            etype = err.get("type")
            msg = err.get("message")
            return (
                parsed,
                etype if isinstance(etype, str) else None,
                msg if isinstance(msg, str) else None,
            )
        if isinstance(err, str):
            return parsed, None, err
        msg = parsed.get("message") or parsed.get("detail")
        if isinstance(msg, str):
            return parsed, None, msg
    return parsed, None, None


def _summarise_text(text: str, limit: int = 200) -> str:
    """A short one-line summary of a non-JSON body (the <title> of an HTML page if any)."""
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        text = title.group(1)
    text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _row(status_code: int, etype: str | None, message: str | None
         ) -> tuple[type[APIStatusError] | None, dict[str, float]]:
    """The first row of the table that matches, and the numbers its message holds."""
    for rule in _RULES:
        if rule.status != status_code or (rule.etype and rule.etype != etype):
            continue
        if rule.pattern is None:
            return rule.cls, {}
        match = rule.pattern.search(message or "")
        if match:
            return rule.cls, {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return None, {}


def error_from_response(
    status_code: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    base_url: str | None = None,
    secret: str | None = None,
) -> APIStatusError:
    """Build the exception for an error response. Pure; never raises.

    ``secret`` is the API key the request carried: a server that echoes it in its message
    has it replaced by ``sk-***`` (as is any ``sk-...`` token) in ``message`` and ``body``. It
    is not kept; a 401 only notes whether it looked like a Kimi Code key.

    Raises:
        Nothing: any body, however malformed, gives an error object.
    """
    try:
        parsed, etype, message = _decode_error_body(body)
        parsed = redact_value(parsed, secret)
        if message is not None:
            message = redact(message, secret)
        json_error = etype is not None or message is not None
        cls, numbers = _row(status_code, etype, message) if json_error else (None, {})
        cls = cls or _BY_STATUS.get(status_code) or (
            (InternalServerError if json_error else GatewayError) if status_code >= 500
            else APIStatusError)
        if message is None:
            summary = _summarise_text(parsed) if isinstance(parsed, str) else ""
            message = (
                f"unexpected {'empty ' if not body.strip() else ''}response from the server"
                + (f": {summary}" if summary else "")
            )
        if "retry_after" not in numbers and issubclass(cls, RateLimitError):
            after = _AFTER.search(message)
            if after:
                numbers["retry_after"] = float(after.group(1))
        error = cls(
            message,
            status_code=status_code,
            type=etype,
            body=parsed,
            headers={k: redact(v, secret) for k, v in (headers or {}).items()},
            base_url=base_url,
            numbers=numbers,
        )
        if isinstance(error, AuthenticationError) and is_kimi_code_key(secret):
            error.kimi_code_key = True
        return error
    except Exception as exc:  # pragma: no cover - last resort: parsing must never raise
        return APIStatusError(
            f"unreadable error response ({type(exc).__name__})",
            status_code=status_code,
            base_url=base_url,
        )
