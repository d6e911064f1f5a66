"""Configuration: platform constants, limits and retry settings, and key/base-URL resolution.

Everything here is a documented constant or a frozen, keyword-only dataclass.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = [
    "CHINA_BASE_URL",
    "DEFAULT_BASE_URL",
    "KNOWN_PURPOSES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "Limits",
    "RetryPolicy",
    "resolve_api_key",
    "resolve_base_url",
]

#: ``PRAGMA application_id`` of a kimi-files state store (ASCII "KiFi"), set from version 1 on.
STATE_APPLICATION_ID = 0x4B694669
#: ``PRAGMA application_id`` of a kimi-files reuse cache (ASCII "KiFc").
CACHE_APPLICATION_ID = 0x4B694663

#: The international platform (platform.kimi.ai).
DEFAULT_BASE_URL = "https://api.moonshot.ai/v1"
#: The China platform (platform.kimi.com).
CHINA_BASE_URL = "https://api.moonshot.cn/v1"
PLATFORMS = {
    "international": DEFAULT_BASE_URL,
    "global": DEFAULT_BASE_URL,
    "ai": DEFAULT_BASE_URL,
    "china": CHINA_BASE_URL,
    "cn": CHINA_BASE_URL,
}

API_KEY_ENV = "MOONSHOT_API_KEY"
BASE_URL_ENV = "MOONSHOT_BASE_URL"
#: Read when the MOONSHOT_* variables are absent (Moonshot's own CLI uses these names).
FALLBACK_API_KEY_ENV = "KIMI_API_KEY"
FALLBACK_BASE_URL_ENV = "KIMI_BASE_URL"

#: The platform's "100MB" per-file cap, enforced as 100 MiB = 104,857,600 bytes.
MAX_FILE_BYTES = 100 * 1024 * 1024
#: Files per account.
MAX_FILES = 1000
#: Bytes per account: "10 GB", enforced as 10 GiB = 10,737,418,240 bytes.
MAX_TOTAL_BYTES = 10 * 1024**3

#: The header the bundled emulator sends on every answer: ``ephemeral`` when what it stores
#: goes when it stops (no ``--storage-dir``), ``persistent`` when it survives a restart. A
#: client seeing ``ephemeral`` from a loopback server leaves no state or cache behind it
#: (see ``KimiFiles.ephemeral_server`` and ``_state_files.sweep_ephemeral``).
EMULATOR_HEADER = "X-Kimi-Files-Emulator"

#: Default time-outs of a request, in seconds: to connect, to wait for the answer (longer
#: than the server's own 5-minute limit, so its 504 is seen and handled), per write, and for
#: a free connection of the pool.
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 330.0
WRITE_TIMEOUT = 120.0
POOL_TIMEOUT = 600.0

DEFAULT_PURPOSE = "file-extract"
#: The model token estimates and budgets ask about when none is named (the guides' model).
DEFAULT_MODEL = "kimi-k2.5"
KNOWN_PURPOSES = frozenset({"file-extract", "image", "video", "batch"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Account limits the preflight enforces (the platform's by default)."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_files: int = MAX_FILES
    max_total_bytes: int = MAX_TOTAL_BYTES


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How retries are made.

    Attempt ``n`` (1-based) that fails with a retryable error waits, before attempt ``n+1``:

    * the seconds the server named ("please try again after N seconds", or ``Retry-After``)
      plus ``uniform(0, jitter)``, so workers told "after 1 seconds" do not wake together; a
      server-named wait longer than ``max_server_wait``, or than what is left of ``timeout``,
      is not waited: the error is raised at once, with its ``retry_after``; otherwise
    * ``min(max_wait, initial_wait * 2 ** (n - 1)) + uniform(0, jitter)``.

    ``timeout`` (15 minutes) is the total budget: no attempt starts once it has passed since
    the first, or when its wait would cross that line. Within it:

    * errors that say the account or the service is overloaded (``engine_overloaded_error``
      and the other retryable 429s, a gateway's 503: :func:`kimi_files._retry.is_slow_down`)
      are bounded by the budget alone, since overload episodes last minutes, unless
      ``max_overload_attempts`` is set;
    * every other retryable error (5xx, time-outs, lost connections, malformed answers) is
      bounded by ``max_attempts`` as well: attempt ``max_attempts`` is the last.

    :meth:`with_retries` (``max_retries=``, ``--retries``) sets both counts: an explicit
    number of retries is honoured whatever the error.
    """

    max_attempts: int = 6
    max_overload_attempts: int | None = None
    initial_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    max_server_wait: float = 900.0
    timeout: float = 900.0

    def with_retries(self, max_retries: int | None) -> RetryPolicy:
        """This policy with ``max_retries`` retries after the first attempt (None: as is)."""
        if max_retries is None:
            return self
        if max_retries < 0:
            raise ConfigurationError("max_retries cannot be negative")
        from dataclasses import replace

        return replace(self, max_attempts=max_retries + 1, max_overload_attempts=max_retries + 1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.max_overload_attempts is not None and self.max_overload_attempts < 1:
            raise ConfigurationError("max_overload_attempts must be at least 1 (or None)")
        if min(self.initial_wait, self.max_wait, self.jitter, self.max_server_wait,
               self.timeout) < 0:
            raise ConfigurationError("retry waits cannot be negative")


def _env(primary: str, fallback: str) -> tuple[str | None, str]:
    """The value of ``primary``, else of ``fallback`` (when ``primary`` is unset or empty),
    and the name it came from."""
    value = os.environ.get(primary)
    if value is None or not value.strip():
        other = os.environ.get(fallback)
        if other is not None and other.strip():
            return other, fallback
    return value, primary


def resolve_api_key(api_key: str | None) -> str:
    """The key from the argument, MOONSHOT_API_KEY or KIMI_API_KEY; a clear error when none
    is set."""
    source = "the argument"
    key = api_key
    if key is None:
        key, source = _env(API_KEY_ENV, FALLBACK_API_KEY_ENV)
    if key is None or not key.strip():
        raise ConfigurationError(
            f"No API key: pass api_key=... or set the {API_KEY_ENV} environment variable "
            f"(or {FALLBACK_API_KEY_ENV}; create a key at platform.kimi.ai, or "
            "platform.kimi.com for the China platform)."
        )
    key = key.strip()
    if any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise ConfigurationError(
            f"The API key (from {source}) is malformed: it contains "
            "spaces, control or non-ASCII characters. Copy it again from the console."
        )
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Does ``url`` point at this machine (localhost, 127.0.0.0/8, ::1)?"""
    try:
        return _is_loopback(urlsplit(url).hostname or "")
    except ValueError:
        return False


def resolve_base_url(
    base_url: str | None = None, *, platform: str | None = None, allow_http: bool = False
) -> str:
    """The base URL from the argument, the platform name, MOONSHOT_BASE_URL, KIMI_BASE_URL or
    the default.

    Plain ``http://`` is accepted only for loopback hosts (the emulator) unless
    ``allow_http`` is true.
    """
    if base_url is None and platform is not None:
        try:
            base_url = PLATFORMS[platform.lower()]
        except KeyError:
            names = ", ".join(sorted(PLATFORMS))
            raise ConfigurationError(
                f"Unknown platform {platform!r}: use one of {names}"
            ) from None
    if base_url is None:
        base_url = _env(BASE_URL_ENV, FALLBACK_BASE_URL_ENV)[0] or DEFAULT_BASE_URL
    url = base_url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"Malformed base URL {base_url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError(
            f"Malformed base URL {base_url!r}: expected http(s)://host[:port]/v1, "
            f"for example {DEFAULT_BASE_URL}"
        )
    if parts.username or parts.password:
        raise ConfigurationError("The base URL must not contain credentials; use the API key.")
    if parts.scheme == "http" and not allow_http and not _is_loopback(host):
        raise ConfigurationError(
            f"Refusing plain http to {host}: the API key would travel unencrypted. Use "
            "https, or allow it explicitly (allow_http=True, --allow-http)."
        )
    return url
