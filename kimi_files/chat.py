"""From documents to a chat request: the system messages the model needs, and sessions that
clean up after themselves.

* :func:`messages_steps` (behind :func:`kimi_files.messages` and ``amessages``) uploads or
  reuses each document, takes its extracted text (from the reuse cache when this content was
  read before: no request at all), and returns one ``{"role": "system", "content": <the whole
  JSON text of files.content>}`` per document, in input order, as the platform's docs put it.
  With ``max_chars`` the total is kept under the budget by cutting the largest documents first
  (:func:`fit_budget`), with a visible marker in each text cut.
* :class:`Session` (``client.session()``) and :class:`AsyncSession` upload and extract
  through themselves and, with ``delete_on_exit``, delete exactly the files they stored
  (never one they reused) when the block ends, even when it raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._steps import Blocking, Call, Steps
from .errors import KimiError, NotFoundError
from .models import FileContent, UploadedFile
from .options import UploadOptions
from .uploader import content_steps_for, upload_steps

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._steps import ClientLike
    from .client import AsyncKimiFiles, KimiFiles
    from .options import UploadKwargs

__all__ = ["AsyncSession", "Messages", "Session", "cut_marker", "fit_budget", "messages_steps"]

log = logging.getLogger("kimi_files")


class Messages(list[dict[str, str]]):
    """The system messages, in input order (a list, ready for ``messages=[*m, ...]``), and
    what happened on the way: ``cut`` ({path: (characters, characters kept)}), ``failed``
    ({path: the error}: documents the service cannot read are left out) and ``files``
    ({path: the uploaded or reused file, or None when the text came from the cache})."""

    def __init__(self, items: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(items)
        self.cut: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, KimiError] = {}
        self.files: dict[str, UploadedFile | None] = {}


def fit_budget(lengths: Sequence[int], budget: int) -> list[int]:
    """How many characters of each text to keep so the total fits ``budget``, cutting the
    largest first: every text longer than a common cap is cut to it, the cap as high as the
    budget allows. Pure."""
    budget = max(0, budget)
    if sum(lengths) <= budget:
        return list(lengths)
    order = sorted(lengths)
    left, count = budget, len(order)
    cap = 0
    for i, n in enumerate(order):
        share = left // (count - i)
        if n > share:
            cap = share
            break
        left -= n
    else:  # pragma: no cover - the sum exceeds the budget, so some text exceeds its share
        cap = order[-1]
    return [min(n, cap) for n in lengths]


def cut_marker(cut: int, total: int) -> str:
    """The note put where a text was cut."""
    return (f"\n[kimi-files: {cut:,} of {total:,} characters cut here to fit the message "
            "budget]")


#: Room reserved for the marker in each text that may be cut.
_MARKER_ROOM = len(cut_marker(10**9, 10**9))


def _document(content: FileContent) -> tuple[dict[str, Any] | None, str]:
    """The JSON document (or None for a plain text body) and its text."""
    body = content.raw if content.raw is not None else content.text
    try:
        doc = json.loads(body)
    except ValueError:
        return None, body
    if isinstance(doc, dict) and isinstance(doc.get("content"), str):
        return doc, doc["content"]
    return None, body


def _message(doc: dict[str, Any] | None, text: str) -> dict[str, str]:
    content = text if doc is None else json.dumps({**doc, "content": text}, ensure_ascii=False)
    return {"role": "system", "content": content}


def build_messages(found: Sequence[tuple[str, FileContent]], max_chars: int | None) -> Messages:
    """The messages for documents read, cut to ``max_chars`` in all (see :func:`fit_budget`).
    Pure."""
    docs = [(path, *_document(content), content) for path, content in found]
    out = Messages()
    if max_chars is None:
        for _path, doc, text, content in docs:
            if doc is None:
                out.append({"role": "system", "content": text})
            else:  # the whole JSON text, as the service gave it
                out.append(content.as_message())
        return out
    overheads = [len(_message(doc, "")["content"]) + _MARKER_ROOM for _, doc, _, _ in docs]
    keep = fit_budget([len(text) for _, _, text, _ in docs], max_chars - sum(overheads))
    for (path, doc, text, content), kept in zip(docs, keep, strict=True):
        if kept >= len(text):
            out.append(content.as_message() if doc is not None else
                       {"role": "system", "content": text})
            continue
        out.cut[path] = (len(text), kept)
        out.append(_message(doc, text[:kept] + cut_marker(len(text) - kept, len(text))))
    return out


def messages_steps(client: ClientLike, paths: Sequence[str | os.PathLike[str]],
                   options: UploadOptions, *, max_chars: int | None = None,
                   strict: bool = False,
                   on_file: Any = None) -> Steps[Messages]:
    """The system messages for ``paths`` (see the module docstring).

    A document the service cannot read (no text, a refused type...) is left out and named in
    ``.failed`` with its error; ``strict=True`` raises that error instead. ``on_file(path,
    uploaded)`` sees every file uploaded or reused (a session keeps what it created).

    Raises:
        KimiError: with ``strict``, the first document that failed; a ConfigurationError
            for a bad option either way.
    """
    if max_chars is not None and (isinstance(max_chars, bool) or max_chars < 1):
        from .errors import ConfigurationError

        raise ConfigurationError(f"max_chars must be a positive number, not {max_chars!r}")
    found: list[tuple[str, FileContent]] = []
    failed: dict[str, KimiError] = {}
    files: dict[str, UploadedFile | None] = {}
    for raw in paths:
        path = os.fsdecode(raw)
        try:
            content, uploaded = yield from content_steps_for(client, path, options)
        except KimiError as exc:
            if strict:
                raise
            log.warning("%s: left out of the messages: %s", path, exc)
            failed[path] = exc
            continue
        if on_file is not None and uploaded is not None:
            on_file(path, uploaded)
        files[path] = uploaded
        found.append((path, content))
    out = build_messages(found, max_chars)
    out.failed.update(failed)
    out.files.update(files)
    return out


def _cleanup_steps(created: dict[str, UploadedFile]) -> Steps[list[str]]:
    """Delete the files a session stored; returns their ids. A file already gone is fine."""
    deleted = []
    for file_id, up in list(created.items()):
        with contextlib.suppress(NotFoundError):
            yield Call("delete", (file_id,))
        deleted.append(file_id)
        created.pop(file_id, None)
        log.info("deleted %s (%s) at the end of the session", file_id, up.filename)
    return deleted


class _SessionBase:
    def __init__(self, client: Any, *, delete_on_exit: bool) -> None:
        self.client = client
        self.delete_on_exit = delete_on_exit
        #: the files this session stored (by id), deleted on exit with ``delete_on_exit``
        self.created: dict[str, UploadedFile] = {}
        #: the ids deleted when the session ended
        self.deleted: list[str] = []

    def _keep(self, path: str, up: UploadedFile) -> None:
        if not up.reused:
            self.created[up.id] = up

    def _upload(self, path: str | os.PathLike[str], options: UploadKwargs) -> Steps[UploadedFile]:
        up = yield from upload_steps(self.client, path, UploadOptions.of(options))
        self._keep(os.fsdecode(path), up)
        return up

    def _extract(self, path: str | os.PathLike[str], options: UploadKwargs) -> Steps[str]:
        content, up = yield from content_steps_for(self.client, path, UploadOptions.of(options))
        if up is not None:
            self._keep(os.fsdecode(path), up)
        return content.text

    def _messages(self, paths: Sequence[str | os.PathLike[str]], max_chars: int | None,
                  strict: bool, options: UploadKwargs) -> Steps[Messages]:
        return (yield from messages_steps(self.client, paths, UploadOptions.of(options),
                                          max_chars=max_chars, strict=strict,
                                          on_file=self._keep))

    def _close(self) -> Steps[None]:
        if self.delete_on_exit:
            gone = yield from _cleanup_steps(self.created)
            self.deleted.extend(gone)
            cache = yield Blocking(self.client.reuse_cache)
            if cache is not None and gone:
                yield Blocking(cache.forget, (gone,))


class Session(_SessionBase):
    """Uploads and extractions that are cleaned up: ``with client.session() as s:``.

    With ``delete_on_exit`` (the default) the files this session stored are deleted when the
    block ends, even when it raises; a file it reused (uploaded before, by anyone) is kept.
    """

    client: KimiFiles

    def upload(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> UploadedFile:
        """:meth:`KimiFiles.upload`, remembered for the clean-up.

        Raises:
            KimiError: as :func:`kimi_files.upload`.
        """
        return self.client.run(self._upload(path, options))

    def extract(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> str:
        """The extracted text of a local file (cached by content), remembered for the clean-up.

        Raises:
            KimiError: as :func:`kimi_files.extract`.
        """
        return self.client.run(self._extract(path, options))

    def messages(self, paths: Sequence[str | os.PathLike[str]], *, max_chars: int | None = None,
                 strict: bool = False, **options: Unpack[UploadKwargs]) -> Messages:
        """:func:`kimi_files.messages` through this session.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        return self.client.run(self._messages(paths, max_chars, strict, options))

    def close(self) -> None:
        """Delete the files this session stored (with ``delete_on_exit``).

        Raises:
            KimiError: a deletion failed (the files not deleted stay in ``created``).
        """
        self.client.run(self._close())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncSession(_SessionBase):
    """:class:`Session` for asyncio: ``async with client.session() as s:``."""

    client: AsyncKimiFiles

    async def upload(self, path: str | os.PathLike[str],
                     **options: Unpack[UploadKwargs]) -> UploadedFile:
        """:meth:`Session.upload`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.upload`.
        """
        return await self.client.run(self._upload(path, options))

    async def extract(self, path: str | os.PathLike[str], **options: Unpack[UploadKwargs]) -> str:
        """:meth:`Session.extract`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.extract`.
        """
        return await self.client.run(self._extract(path, options))

    async def messages(self, paths: Sequence[str | os.PathLike[str]], *,
                       max_chars: int | None = None, strict: bool = False,
                       **options: Unpack[UploadKwargs]) -> Messages:
        """:meth:`Session.messages`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        return await self.client.run(self._messages(paths, max_chars, strict, options))

    async def aclose(self) -> None:
        """:meth:`Session.close`, awaited.

        Raises:
            KimiError: a deletion failed.
        """
        await self.client.run(self._close())

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
