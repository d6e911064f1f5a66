"""Keeping the API key out of everything shown: text and parsed bodies. Pure."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "is_kimi_code_key", "is_kimi_code_url", "redact", "redact_value"]

_KIMI_CODE_KEY_PREFIX = "sk-kimi-"
# anything shaped like an API key: "sk-" and at least six more key characters (after anything
# but a letter: "%20sk-..." in a URL is one too)
_KEY_LIKE = re.compile(r"(?<![A-Za-z])sk-[A-Za-z0-9][A-Za-z0-9_-]{5,}")
# a bearer credential, whatever its shape, as written in a header, a log line or a URL
_BEARER = re.compile(r"\b(bearer)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]+", re.IGNORECASE)
REDACTED = "sk-***"


def is_kimi_code_key(key: str | None) -> bool:
    """True for a key shaped like a Kimi Code subscription key (``sk-kimi-...``)."""
    return bool(key) and str(key).startswith(_KIMI_CODE_KEY_PREFIX)


def is_kimi_code_url(base_url: str | None) -> bool:
    """True for Kimi Code's API (``https://api.kimi.com/coding/...``), not the platform's."""
    return bool(base_url) and "://api.kimi.com/coding" in str(base_url).lower()


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` (8 characters or more; as it is, in any case and
    percent-encoded) and every ``sk-...`` token replaced by ``sk-***``, and every
    ``Bearer <token>`` by ``Bearer ***``. Pure."""
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    if secret and len(secret) >= 8:
        for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            text = re.sub(re.escape(form), REDACTED, text, flags=re.IGNORECASE)
    return _KEY_LIKE.sub(REDACTED, text)


def redact_value(value: object, secret: str | None = None) -> object:
    """:func:`redact` applied to every string in ``value`` (a parsed JSON body: strings,
    lists, dicts; keys too). Pure."""
    if isinstance(value, str):
        return redact(value, secret)
    if isinstance(value, dict):
        return {redact_value(k, secret): redact_value(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secret) for v in value]
    return value
