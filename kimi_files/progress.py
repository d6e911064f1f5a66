"""Progress bars: one tqdm wrapper for the whole package.

A bar is shown only when asked (``progress=True``) or, by default, when stderr is a
terminal. ``KIMI_FILES_NO_PROGRESS=1`` (or :func:`disable_progress_bars`) turns every bar off.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["ProgressBar", "disable_progress_bars", "enable_progress_bars", "progress_enabled"]

ENV_VAR = "KIMI_FILES_NO_PROGRESS"
_switch: dict[str, bool] = {"off": False}


def disable_progress_bars() -> None:
    _switch["off"] = True


def enable_progress_bars() -> None:
    _switch["off"] = False


def progress_enabled(requested: bool | None) -> bool:
    """Whether to draw a bar: never when switched off; else as requested; else on a TTY."""
    if _switch["off"] or os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if requested is not None:
        return requested
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def short_label(name: str, width: int = 30) -> str:
    """A bar's label: the name, cut to ``width`` characters."""
    return name if len(name) <= width else name[: width - 1] + "…"


class ProgressBar(tqdm):  # type: ignore[type-arg]
    """A byte-counting bar on stderr that never passes its total and can rewind."""

    def __init__(self, *, total: int | None, desc: str = "", enabled: bool | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("unit", "B")
        kwargs.setdefault("unit_scale", True)
        kwargs.setdefault("unit_divisor", 1024)
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("leave", True)
        super().__init__(total=total, desc=desc, disable=not progress_enabled(enabled), **kwargs)

    def advance(self, n: int) -> None:
        """Move forward by ``n``, clamped to the total."""
        if self.total is not None:
            n = max(0, min(n, int(self.total) - int(self.n)))
        if n:
            self.update(n)

    def rewind(self, note: str = "") -> None:
        """Go back to 0 (a retry starts the bytes again), visibly."""
        if self.disable:
            return
        self.n = 0
        self.last_print_n = 0
        if note:
            self.set_postfix_str(note, refresh=False)
        self.refresh()
