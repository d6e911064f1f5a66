"""What the command line prints: text that is safe to show, JSON lines, logs without the key."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .._config import API_KEY_ENV, FALLBACK_API_KEY_ENV
from .._progress import shown
from .._redact import redact

# --- text that is safe to show ----------------------------------------------------------------

#: What JSON leaves raw and a terminal may act on: DEL, C1 controls, bidirectional marks, the
#: line and paragraph separators, lone surrogates (JSON escapes C0 controls by itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")


def json_line(obj: object) -> str:
    """``obj`` as one line of JSON that no terminal acts on: JSON escapes C0 controls itself;
    DEL, C1 controls, bidirectional marks and lone surrogates are escaped as ``\\uXXXX`` too.
    The value is exactly the same."""
    text = json.dumps(obj, ensure_ascii=False)
    # outside strings JSON is ASCII, so every match is inside a string: escaping it is exact
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _raw(text: str) -> str:
    """Text shown as it is (extracted content): only what cannot be encoded is replaced."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class _ShownFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # the whole line, a traceback included, is redacted once more
        return _redact(super().format(record))


def _keys() -> list[str]:
    """The API keys this process may send (the environment's), to keep out of any output."""
    return [key for name in (API_KEY_ENV, FALLBACK_API_KEY_ENV)
            if (key := os.environ.get(name, "").strip())]


def _redact(text: str) -> str:
    """``text`` without the API key, ``Bearer <token>`` values or ``sk-...`` tokens."""
    keys: list[str | None] = [*_keys()] or [None]
    for key in keys:
        text = redact(text, key)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites each record's message, its arguments merged, with the key, bearer tokens and
    ``sk-...`` tokens replaced (httpx's and httpcore's records carry URLs and headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: shown as written, arguments dropped
            message = str(record.msg)
        record.msg, record.args = _redact(message), None
        return True


#: Loggers that dump request or response headers at DEBUG: never enabled, whatever -v says.
_HEADER_LOGGERS = ("httpcore.http11", "httpcore.http2", "httpcore.proxy", "httpcore.socks")


@contextlib.contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the length of a command, then put the loggers back as they were."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShownFormatter("kimi-files: %(levelname)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    saved = []
    for name in ("kimi_files", "httpx", "httpcore", *_HEADER_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        if name in _HEADER_LOGGERS:
            logger.setLevel(logging.WARNING)
            continue
        logger.handlers[:] = [handler]
        logger.setLevel(level if name == "kimi_files" or verbosity >= 2 else logging.WARNING)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, old_level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(old_level)
            logger.propagate = propagate



def _stdout_to_devnull() -> None:
    """The reader of stdout went away: send what is left to /dev/null, so neither a later
    write nor the flush at exit fails (the Python documentation's advice for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)



def write_whole(path: Path, text: str, *, prefix: str = ".kimi-") -> None:
    """Write ``text`` to ``path`` whole or not at all (written beside it, then renamed over:
    a link of that name is replaced, never followed). Whatever text the server sent is written,
    a lone surrogate (which JSON may hold) too, as the bytes Python's ``surrogatepass`` gives.

    Raises:
        OSError: the folder cannot be written; nothing is left behind.
    """
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _emit(stream: TextIO, text: str) -> None:
    """One line of human output, escaped (see :func:`shown`)."""
    from .._progress import write_line

    write_line(shown(text), stream)


def _emit_json(obj: object) -> None:
    """One JSON line on stdout."""
    from .._progress import write_line

    write_line(json_line(obj), sys.stdout)


def _say(text: str) -> None:
    """One line on stderr, escaped: a line break inside ``text`` is shown as ``\\n``; never
    the API key (see :func:`_redact`)."""
    _emit(sys.stderr, _redact(text))

