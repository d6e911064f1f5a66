"""Reading an answer's headers: a header by name in any case, and ``Retry-After``. Pure but
for the clock an HTTP date is compared with."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["parse_retry_after"]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent/bad.

    Raises:
        Nothing.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import time
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None  # since 3.10 a date it cannot read raises: never None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or inf
        return None
    return max(0.0, seconds)
