"""The upload options, declared once for every way in.

:class:`UploadKwargs` types the keyword arguments that ``kimi_files.upload``,
``KimiFiles.upload``, ``AsyncKimiFiles.upload``, ``extract``, ``ingest`` and their async twins
all take (``**options: Unpack[UploadKwargs]``); :class:`UploadOptions` is the same set as a
frozen value with its defaults, checked once when it is made (:meth:`UploadOptions.of`). A test
keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from ._config import DEFAULT_PURPOSE
from ._quota import FreeQuota, check_free_quota
from .errors import ConfigurationError

__all__ = ["Paths", "UploadKwargs", "UploadOptions", "path_list", "split_upload_options"]

#: One path, or any number of them (files and folders).
Paths = Iterable[str | os.PathLike[str]] | str | os.PathLike[str]


class UploadKwargs(TypedDict, total=False):
    """The keyword arguments of every upload call (all optional)."""

    #: ``"file-extract"`` (default), ``"image"``, ``"video"`` or ``"batch"``.
    purpose: str
    #: ``"never"`` (default), ``"oldest"``, a predicate, or a list of file ids: what may be
    #: deleted to make room, and only after every local check passed.
    free_quota: FreeQuota
    #: Progress bars: None (default) when stderr is a terminal; True or False to force.
    progress: bool | None
    #: Retries after the first attempt (None: the client's policy).
    max_retries: int | None
    #: Send files of types the service would refuse (archives, binaries, images for
    #: file-extract) anyway.
    allow_any_type: bool
    #: Hand back the file the account already holds with the same content and purpose
    #: (True, the default), instead of uploading it again.
    reuse: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class UploadOptions:
    """:class:`UploadKwargs` with its defaults, checked."""

    purpose: str = DEFAULT_PURPOSE
    free_quota: FreeQuota = "never"
    progress: bool | None = None
    max_retries: int | None = None
    allow_any_type: bool = False
    reuse: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.purpose, str) or not self.purpose:
            raise ConfigurationError(f"purpose must be a non-empty string, not {self.purpose!r}")
        check_free_quota(self.free_quota)
        if self.max_retries is not None and (
                isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int)
                or self.max_retries < 0):
            raise ConfigurationError(
                f"max_retries must be a whole number of at least 0, not {self.max_retries!r}")

    @classmethod
    def of(cls, options: UploadKwargs | dict[str, Any]) -> UploadOptions:
        """The options from keyword arguments.

        Raises:
            ConfigurationError: an unknown option or a value of the wrong kind.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown upload option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)


def split_upload_options(options: Mapping[str, object], known: Iterable[str],
                         what: str) -> tuple[UploadOptions, dict[str, Any]]:
    """A batch call's keyword arguments as its upload options and the rest, which must be
    among ``known`` (``what`` names the call in the error).

    Raises:
        ConfigurationError: an unknown option or a value of the wrong kind.
    """
    upload_keys = {f.name for f in fields(UploadOptions)}
    upload = {k: v for k, v in options.items() if k in upload_keys}
    rest = {k: v for k, v in options.items() if k not in upload_keys}
    unknown = sorted(set(rest) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown {what} option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(set(known) | upload_keys))}")
    return UploadOptions.of(upload), rest


def path_list(paths: Paths) -> list[str | os.PathLike[str]]:
    """``paths`` as a list: one path is one item, not its characters."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [paths]
    return list(paths)
