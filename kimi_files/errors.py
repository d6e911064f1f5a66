"""Every failure kimi-files can raise, under one root.

::

    KimiError
    ├── ConfigurationError               missing/malformed key or base URL, bad option
    │   ├── StateError                   the state store failed (.path); names the way out
    │   │   └── StateLockedError         another run holds the state (.pid, .path)
    │   └── CacheError                   the reuse cache cannot be used (.path)
    ├── UploadCancelledError             stopped (Ctrl-C) before the upload could finish
    ├── PreflightError                   refused locally, before any byte is sent (.path)
    │   ├── LocalFileError               missing, unreadable, not a regular file, changed mid-upload
    │   ├── LocalInvalidPurposeError     (+ InvalidPurposeError)
    │   ├── LocalEmptyFileError          (+ EmptyFileError)
    │   ├── LocalFileTooLargeError       (+ FileTooLargeError)
    │   ├── UnsupportedFileTypeError
    │   ├── NoRoomError                  the account has no room (.files_to_free, .bytes_to_free)
    │   │   ├── NotEnoughFileSlotsError  (+ TooManyFilesError)
    │   │   └── NotEnoughStorageError
    │   └── BatchInputError              a Batch API input file breaks its rules (.violations)
    ├── BatchError                       a Batch API batch did not complete (.batch_id, .status,
    │   │                                .errors: the platform's own list)
    │   ├── BatchFailedError             failed (its input was refused while validating)
    │   ├── BatchExpiredError            not done within its completion window (partial results)
    │   ├── BatchCancelledError          cancelled (partial results)
    │   └── BatchNotFinishedError        still running: its results cannot be read yet
    ├── BatchAlreadySubmittedError       submit again of an input its manifest lists batches of
    │                                    (.batches: id -> status); --force sends it again
    ├── APIConnectionError               no HTTP answer at all
    │   ├── APITimeoutError
    │   ├── ConnectionLostError          the connection dropped mid-request or mid-response
    │   └── ServerUnreachableError       the first request of a client found no server there
    │                                    (refused, unknown host, TLS mismatch): never retried
    └── APIStatusError                   the server answered with an error (.status_code, .type)
        ├── BadRequestError                          400
        │   ├── ContentFilterError
        │   ├── NoExtractableTextError               "text extract error": scanned PDF, no text
        │   └── InvalidRequestError
        │       ├── InputTooLongError
        │       ├── ModelTokenLimitError             .max_model_length
        │       ├── ServerInvalidPurposeError        (+ InvalidPurposeError)
        │       ├── ServerFileTooLargeError          (+ FileTooLargeError)
        │       ├── ServerEmptyFileError             (+ EmptyFileError)
        │       └── ServerTooManyFilesError          (+ TooManyFilesError) .max_file_count
        ├── AuthenticationError                      401, names the base URL, never the key;
        │   │                                        explains Kimi Code keys (.kimi_code_key)
        │   ├── InvalidAuthenticationError
        │   └── IncorrectAPIKeyError
        ├── PermissionDeniedError                    403
        │   ├── APINotOpenError
        │   └── OtherUserInfoError
        ├── NotFoundError                            404
        │   └── ModelNotFoundError
        ├── RateLimitError                           429
        │   ├── EngineOverloadedError                retryable
        │   ├── RateLimitReachedError                retryable, .retry_after
        │   │   ├── ConcurrencyLimitError            .limit
        │   │   ├── RPMLimitError                    .limit
        │   │   ├── TPMLimitError                    .current, .limit
        │   │   └── TPDLimitError                    .current, .limit
        │   └── ExceededQuotaError                   never retried
        │       ├── AccountSuspendedError
        │       └── TokenQuotaExceededError
        └── InternalServerError                      5xx
            ├── ExtractionFailedError                retryable
            ├── InvalidStateTransitionError          retryable
            └── GatewayError                         502/503/504 or a non-JSON 5xx, retryable
                └── GatewayOverloadedError           503: retryable and a signal to slow down
        MalformedResponseError (under APIStatusError)  a success status with a body that is not
                                                       the expected JSON, retryable
            └── BatchContentError                    a batch file's JSONL asked as text: no retry

The condition classes ``FileTooLargeError``, ``EmptyFileError``, ``InvalidPurposeError`` and
``TooManyFilesError`` are shared by the local and the server variant, so one ``except`` clause
catches a file refused by preflight and the same file refused by the server.

Every :class:`APIStatusError` keeps the server's request id (``Msh-Request-Id``, else
``X-Msh-Trace-Id``) as ``.request_id`` and shows it in ``str()``. ``slow_down`` is true for the
errors that say the account or the service is overloaded (the retryable 429s and a 503):
:func:`kimi_files._retry.is_slow_down` reads it for the pacer. Every error pickles, so it can
cross a process pool.

This module holds the tree and is pure. :func:`error_from_response` (in ``_answers.py``, the one
place answers are mapped to classes, in the documented wordings and those real accounts get)
turns a status code, headers and body bytes into the right exception and never raises itself;
key redaction is in ``_redact.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ._batch_input import Violation

from ._headers import _header, parse_retry_after
from ._redact import is_kimi_code_url

__all__ = [
    "APIConnectionError", "APINotOpenError", "APIStatusError", "APITimeoutError",
    "AccountSuspendedError", "AuthenticationError", "BadRequestError",
    "BatchAlreadySubmittedError", "BatchCancelledError", "BatchContentError", "BatchError",
    "BatchExpiredError", "BatchFailedError", "BatchInputError", "BatchNotFinishedError",
    "CacheError", "ConcurrencyLimitError", "ConfigurationError",
    "ConnectionLostError", "ContentFilterError", "EmptyFileError", "EngineOverloadedError",
    "ExceededQuotaError", "ExtractionFailedError", "FileTooLargeError", "GatewayError",
    "GatewayOverloadedError", "IncorrectAPIKeyError", "InputTooLongError", "InternalServerError",
    "InvalidAuthenticationError", "InvalidPurposeError", "InvalidRequestError",
    "InvalidStateTransitionError", "KimiError", "LocalEmptyFileError", "LocalFileError",
    "LocalFileTooLargeError", "LocalInvalidPurposeError", "MalformedResponseError",
    "ModelNotFoundError", "ModelTokenLimitError", "NoExtractableTextError", "NoRoomError",
    "NotEnoughFileSlotsError", "NotEnoughStorageError", "NotFoundError", "OtherUserInfoError",
    "PermissionDeniedError", "PreflightError", "RPMLimitError", "RateLimitError",
    "RateLimitReachedError", "ServerEmptyFileError", "ServerFileTooLargeError",
    "ServerInvalidPurposeError", "ServerTooManyFilesError", "ServerUnreachableError", "StateError",
    "StateLockedError", "TPDLimitError", "TPMLimitError", "TokenQuotaExceededError",
    "TooManyFilesError", "UnsupportedFileTypeError", "UploadCancelledError", "error_from_response",
    "parse_retry_after",
]


class KimiError(Exception):
    """The root of every error kimi-files raises."""

    #: Whether sending the same request again can succeed. See also ``kimi_files._retry``.
    retryable: ClassVar[bool] = False
    #: Whether the error says the account or the service is overloaded, so requests should
    #: come slower (the pacer reads it through :func:`kimi_files._retry.is_slow_down`).
    slow_down: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only constructor arguments defeat Exception's default pickling: rebuild from
        # the instance's attributes instead of calling __init__ again
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --- conditions shared by a local and a server variant ---------------------------------------


class FileTooLargeError(KimiError):
    """The file is over the per-file size cap (locally or as the server says)."""


class EmptyFileError(KimiError):
    """The file has zero bytes."""


class InvalidPurposeError(KimiError):
    """The purpose is not one the platform accepts."""


class TooManyFilesError(KimiError):
    """The account has no free file slot."""


# --- configuration ------------------------------------------------------------------------------


class ConfigurationError(KimiError):
    """A missing or malformed API key, base URL or option; raised before any request."""


class StateError(ConfigurationError):
    """The state store cannot be used (damaged, read-only, not ours, removed mid-run...).

    The message names the file (``.path``) and the way out: another state file or none.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StateLockedError(StateError):
    """Another run (``.pid``, None if unknown) is using the state file ``.path``."""

    def __init__(self, message: str, *, path: str | None = None, pid: int | None = None) -> None:
        super().__init__(message, path=path)
        self.pid = pid


class CacheError(ConfigurationError):
    """The reuse cache cannot be used (damaged, not ours, unwritable); ``.path`` names it, and
    the message says the way out (empty it, or do without it)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UploadCancelledError(KimiError):
    """The upload was stopped (Ctrl-C) before it could finish."""


# --- local refusals -----------------------------------------------------------------------------


class PreflightError(KimiError):
    """A file refused locally, before any byte of it is sent."""

    def __init__(self, message: str, *, path: str | None = None, rule: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.rule = rule


class LocalFileError(PreflightError):
    """The path is missing, unreadable, not a regular file, or changed during the upload."""


class LocalInvalidPurposeError(PreflightError, InvalidPurposeError):
    """The purpose is not in the known set."""


class LocalEmptyFileError(PreflightError, EmptyFileError):
    """The file is empty."""


class LocalFileTooLargeError(PreflightError, FileTooLargeError):
    """The file is over the per-file cap."""


class UnsupportedFileTypeError(PreflightError):
    """The detected content type is one the extractor cannot handle."""


class NoRoomError(PreflightError):
    """The account has no room for the upload and freeing quota is off or cannot help."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        rule: str = "quota",
        files_to_free: int = 0,
        bytes_to_free: int = 0,
    ) -> None:
        super().__init__(message, path=path, rule=rule)
        self.files_to_free = files_to_free
        self.bytes_to_free = bytes_to_free


class NotEnoughFileSlotsError(NoRoomError, TooManyFilesError):
    """Not enough free file slots (1,000 files per account)."""


class NotEnoughStorageError(NoRoomError):
    """Not enough free storage (10 GB per account)."""


class BatchInputError(PreflightError):
    """A Batch API input file breaks the platform's rules; nothing was sent.

    ``.violations`` lists every refusal found, each naming its line (0: the whole file) and
    its rule (see :mod:`kimi_files._batch_input`); the message shows the first of them."""

    def __init__(self, message: str, *, path: str | None = None, rule: str = "",
                 violations: tuple[Violation, ...] = ()) -> None:
        super().__init__(message, path=path, rule=rule)
        self.violations = violations


# --- batches that did not complete --------------------------------------------------------------


class BatchError(KimiError):
    """A Batch API batch ended (or stands) without completing.

    ``.batch_id`` and ``.status`` name it; ``.errors`` is the platform's own list of what went
    wrong (``{"code", "message", "line", "param"}`` each), shown in the message."""

    def __init__(self, message: str, *, batch_id: str = "", status: str = "",
                 errors: tuple[Mapping[str, object], ...] = ()) -> None:
        super().__init__(message)
        self.batch_id = batch_id
        self.status = status
        self.errors = errors


class BatchFailedError(BatchError):
    """The batch failed: the platform refused its input while validating (see ``.errors``)."""


class BatchExpiredError(BatchError):
    """The batch was not done within its completion window; the requests done have results."""


class BatchCancelledError(BatchError):
    """The batch was cancelled; the requests done before have results."""


class BatchNotFinishedError(BatchError):
    """The batch is still running: wait for it before reading its results."""


class BatchAlreadySubmittedError(KimiError):
    """``submit`` of an input whose manifest lists batches already: sending it again would
    run (and bill) every request again. ``.batches`` maps each batch id to its status;
    ``force=True`` (``--force``) sends it all the same."""

    def __init__(self, message: str, *, batches: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.batches = dict(batches or {})


# --- transport ----------------------------------------------------------------------------------


class APIConnectionError(KimiError):
    """No HTTP answer: the connection could not be made or was lost."""

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = False) -> None:
        super().__init__(message)
        #: True when (part of) the request may have reached the server.
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """The request timed out."""


class ConnectionLostError(APIConnectionError):
    """The connection dropped before a complete answer arrived."""


class ServerUnreachableError(APIConnectionError):
    """The first request of a client found no server at its base URL: the connection was
    refused, the host name is unknown, or the TLS handshake failed (an https URL to a plain
    http server, say). Said at once, never retried: a wrong base URL is the likely cause, and
    the message names the URL and the fix. (Once the server has answered, the same failures
    are retried within the budget.) ``.reason`` is "refused", "unknown host" or "tls"."""

    retryable = False

    def __init__(self, message: str, *, reason: str = "", request_sent: bool = False) -> None:
        super().__init__(message, request_sent=request_sent)
        self.reason = reason


# --- server answers -----------------------------------------------------------------------------


class APIStatusError(KimiError):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
        numbers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.body = body
        self.base_url = base_url
        self.request_id: str | None = None
        self.headers = dict(headers or {})
        #: Wait the server asked for, in seconds (message text or Retry-After header).
        self.retry_after: float | None = None
        self.limit: float | None = None
        self.current: float | None = None
        self.max_file_count: int | None = None
        self.max_model_length: int | None = None
        for name, value in (numbers or {}).items():
            setattr(self, name, int(value) if name.startswith("max_") else value)
        if headers:
            self.request_id = (_header(headers, "msh-request-id")
                               or _header(headers, "x-msh-trace-id")
                               or _header(headers, "x-request-id"))
            if self.retry_after is None:
                self.retry_after = parse_retry_after(_header(headers, "retry-after"))

    def __str__(self) -> str:
        kind = f" {self.type}" if self.type else ""
        rid = f", request id {self.request_id}" if self.request_id else ""
        return f"{self.message} (HTTP {self.status_code}{kind}{rid})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, type={self.type!r}, "
            f"message={self.message!r})"
        )


class BadRequestError(APIStatusError):
    """HTTP 400."""


class ContentFilterError(BadRequestError):
    """The request was rejected by content moderation."""


class NoExtractableTextError(BadRequestError):
    """`text extract error`: the file has no text to extract (scanned PDF, repetitive text)."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}. The file has no extractable text: a scanned, image-only PDF "
            "(no text layer) or near-empty, repetitive text. Retrying cannot help: run OCR on "
            'it first, or upload its pages as images with purpose="image".'
        )


class InvalidRequestError(BadRequestError):
    """`invalid_request_error`: malformed request or missing parameter."""


class InputTooLongError(InvalidRequestError):
    """The input is longer than the model's context."""


class ModelTokenLimitError(InvalidRequestError):
    """Input plus max_tokens exceed the model's length (`.max_model_length`)."""


class ServerInvalidPurposeError(InvalidRequestError, InvalidPurposeError):
    """The server refused the purpose."""


class ServerFileTooLargeError(InvalidRequestError, FileTooLargeError):
    """The server refused the file as too large."""


class ServerEmptyFileError(InvalidRequestError, EmptyFileError):
    """The server refused the file as empty."""


class ServerTooManyFilesError(InvalidRequestError, TooManyFilesError):
    """The account is at its file count limit (`.max_file_count`)."""


class AuthenticationError(APIStatusError):
    """HTTP 401: the key is wrong, missing, or belongs to the other platform or to Kimi Code.

    ``kimi_code_key`` is true when the refused key looks like a Kimi Code subscription key
    (``sk-kimi-...``); the key itself is never kept.
    """

    kimi_code_key: bool = False

    def __str__(self) -> str:
        where = self.base_url or "the configured base URL"
        text = (
            f"{super().__str__()}. The key was refused by {where}. Keys of platform.kimi.ai"
            " (api.moonshot.ai) and"
            " platform.kimi.com (api.moonshot.cn) are not interchangeable: check that"
            " MOONSHOT_API_KEY (or KIMI_API_KEY) belongs to the platform of this base URL."
        )
        if self.kimi_code_key or is_kimi_code_url(self.base_url):
            what = ("This base URL is Kimi Code's (api.kimi.com/coding)"
                    if is_kimi_code_url(self.base_url)
                    else "The key looks like a Kimi Code subscription key (sk-kimi-...)")
            text += (
                f" {what}: Kimi Code keys work only with Kimi Code (https://api.kimi.com/coding/v1),"
                " not with the platform's Files API. Create a platform key at platform.kimi.ai"
                " (or platform.kimi.com) and use https://api.moonshot.ai/v1 (or"
                " https://api.moonshot.cn/v1)."
            )
        return text


class InvalidAuthenticationError(AuthenticationError):
    """`invalid_authentication_error`: the key is not valid here."""


class IncorrectAPIKeyError(AuthenticationError):
    """`incorrect_api_key_error`: the key is missing or incorrect."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""


class APINotOpenError(PermissionDeniedError):
    """The API is not yet available to this account."""


class OtherUserInfoError(PermissionDeniedError):
    """Accessing another user's information is not allowed."""


class NotFoundError(APIStatusError):
    """HTTP 404: no such file (or model) for this account."""


class ModelNotFoundError(NotFoundError):
    """The model does not exist or this account has no access to it."""


class RateLimitError(APIStatusError):
    """HTTP 429."""

    retryable = True
    slow_down = True


class EngineOverloadedError(RateLimitError):
    """The engine is overloaded; try again later."""


class RateLimitReachedError(RateLimitError):
    """A rate limit of the account was reached; wait `.retry_after` seconds."""


class ConcurrencyLimitError(RateLimitReachedError):
    """Too many requests at once (`.limit` is the account's max concurrency)."""


class RPMLimitError(RateLimitReachedError):
    """Too many requests this minute (`.limit` is the account's max RPM)."""


class TPMLimitError(RateLimitReachedError):
    """Token per minute limit (`.current`, `.limit`)."""


class TPDLimitError(RateLimitReachedError):
    """Token per day limit (`.current`, `.limit`)."""


class ExceededQuotaError(RateLimitError):
    """`exceeded_current_quota_error`: retrying cannot help."""

    retryable = False
    slow_down = False


class AccountSuspendedError(ExceededQuotaError):
    """The account is suspended; check plan and billing."""


class TokenQuotaExceededError(ExceededQuotaError):
    """The token quota is spent; check the account balance."""


class InternalServerError(APIStatusError):
    """HTTP 5xx."""

    retryable = True


class ExtractionFailedError(InternalServerError):
    """`Failed to extract file`: extraction failed server-side; retry."""


class InvalidStateTransitionError(InternalServerError):
    """`unexpected_output`: invalid state transition."""


class GatewayError(InternalServerError):
    """A gateway in front of the API answered 502/503/504 or a non-JSON error page."""


class GatewayOverloadedError(GatewayError):
    """HTTP 503 (an HTML page or JSON): the service is under load; retry, and slow down."""

    slow_down = True


class MalformedResponseError(APIStatusError):
    """A success status whose body is not the JSON object expected (garbage or truncated)."""

    retryable = True


class BatchContentError(MalformedResponseError):
    """A batch file's JSON Lines (it has no text) asked for as text: not retried; ask raw."""
    retryable = False


def _rebuild(cls: type[KimiError], args: tuple[object, ...], state: dict[str, object]) -> KimiError:
    """Unpickle an error without calling its ``__init__`` (see :meth:`KimiError.__reduce__`)."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


# the mapping of answers to these classes, public here for compatibility
from ._answers import error_from_response  # noqa: E402
