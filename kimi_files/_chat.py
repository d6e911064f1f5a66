"""From documents to a chat request: the system messages the model needs, and sessions that
clean up after themselves.

* :func:`messages_steps` (behind :func:`kimi_files.messages` and ``amessages``) uploads or
  reuses each document, takes its extracted text (from the reuse cache when this content was
  read before: no request at all), and returns one ``{"role": "system", "content": <the whole
  JSON text of files.content>}`` per document, in input order, as the platform's docs put it.
  With ``max_chars`` the total of the messages' contents, wrappers and markers included, is
  at most the budget: the largest documents are cut first (:func:`fit_budget`), with a visible
  marker in each text cut; a budget that cannot hold that is a ConfigurationError.
* :class:`Session` (``client.session()``) and :class:`AsyncSession` upload and extract
  through themselves and, with ``delete_on_exit``, delete exactly the files they stored
  (never one they reused) when the block ends, even when it raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ._models import FileContent, UploadedFile
from ._options import UploadOptions
from ._steps import Blocking, DeleteFile, Say, Steps
from ._uploader import content_steps_for, upload_steps
from .errors import KimiError, NotFoundError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._client import AsyncKimiFiles, KimiFiles
    from ._options import UploadKwargs
    from ._steps import ClientLike

__all__ = ["AsyncSession", "Messages", "Session", "cut_marker", "document_steps", "fit_budget",
           "left_out", "messages_steps"]

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


def fit_budget(lengths: Sequence[int], budget: int, *, mark: int = 0) -> list[int] | None:
    """How many characters of each text to keep so the total fits ``budget``, cutting the
    largest first: every text longer than a common cap is cut to it, the cap as high as the
    budget allows, when each text cut also costs ``mark`` (its marker). None when even
    cutting every text to nothing cannot fit. Pure.

    (``sum(min(n, cap)) + mark * (texts longer than cap)`` drops by ``mark`` wherever the cap
    reaches a text's length, so each stretch between two lengths is tried, highest first.)
    """
    if sum(lengths) <= budget:
        return list(lengths)
    order = sorted(set(lengths))
    for floor, ceiling in reversed(list(zip([0, *order], order, strict=False))):
        whole = sum(n for n in lengths if n <= floor)  # kept whole for a cap in this stretch
        cut = sum(1 for n in lengths if n >= ceiling)
        left = budget - whole - cut * mark
        if left >= 0 and (cap := min(ceiling - 1, left // cut)) >= floor:
            return [min(n, cap) for n in lengths]
    return None


def cut_marker(cut: int, total: int) -> str:
    """The note put where a text was cut."""
    return (f"\n[kimi-files: {cut:,} of {total:,} characters cut here to fit the message "
            "budget]")


def _escaped(ch: str) -> int:
    """How many characters ``ch`` takes inside a JSON string (``ensure_ascii=False``)."""
    if ch in '"\\\b\f\n\r\t':
        return 2
    return 6 if ord(ch) < 0x20 else 1


def _json_length(text: str) -> int:
    return sum(_escaped(ch) for ch in text)


def _cut(text: str, budget: int) -> str:
    """The longest start of ``text`` that takes at most ``budget`` characters in JSON."""
    used = 0
    for i, ch in enumerate(text):
        used += _escaped(ch)
        if used > budget:
            return text[:i]
    return text


def _document(content: FileContent) -> tuple[dict[str, object] | None, str]:
    """The JSON document (as the content call parsed it; None for a plain text body) and
    its text."""
    if content.document is not None:
        return dict(content.document), content.text
    return None, content.raw if content.raw is not None else content.text


def _message(doc: dict[str, object] | None, text: str) -> dict[str, str]:
    """The system message: the document re-written as compact JSON (non-ASCII kept as it is,
    so its length is what the budget counted), or the plain text."""
    content = text if doc is None else json.dumps({**doc, "content": text}, ensure_ascii=False,
                                                  separators=(",", ":"))
    return {"role": "system", "content": content}


def build_messages(found: Sequence[tuple[str, FileContent]], max_chars: int | None) -> Messages:
    """The messages for documents read; with ``max_chars``, the total of their contents is
    at most that many characters: the largest texts are cut first (see :func:`fit_budget`),
    each cut one marked. Pure.

    Raises:
        ConfigurationError: ``max_chars`` cannot hold the documents' wrappers and a marker in
            each text that must be cut.
    """
    if max_chars is None:
        return Messages(content.as_message() for _, content in found)
    out = Messages()
    docs = [(path, *_document(content)) for path, content in found]
    wrappers = [len(_message(doc, "")["content"]) for _, doc, _ in docs]
    lengths = [_json_length(text) if doc is not None else len(text) for _, doc, text in docs]
    # room for the marker of any text cut: its JSON length with the largest numbers it can show
    mark = max((_json_length(cut_marker(len(text), len(text))) for _, _, text in docs), default=0)
    keep = fit_budget(lengths, max_chars - sum(wrappers), mark=mark)
    if keep is None:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"max_chars={max_chars:,} cannot hold {len(docs)} document(s): their JSON "
            f"wrappers take {sum(wrappers):,} characters, and each text cut needs "
            f"{mark} more for its marker; give a larger budget or fewer documents")
    cut = {i for i, (k, n) in enumerate(zip(keep, lengths, strict=True)) if k < n}
    for i, ((path, doc, text), kept) in enumerate(zip(docs, keep, strict=True)):
        if i not in cut or kept >= lengths[i]:
            out.append(_message(doc, text))
            continue
        part = _cut(text, kept) if doc is not None else text[:kept]
        marked = part + cut_marker(len(text) - len(part), len(text))
        out.cut[path] = (len(text), len(part))
        out.append(_message(doc, marked))
    return out



def left_out(exc: KimiError) -> bool:
    """Is ``exc`` a failure of that one document, left out of the messages (and named in
    ``.failed``): no text in it, refused by preflight for that file (missing, unreadable,
    empty, too large, an unsupported type) or by the service for that file (its size, its
    content, its extraction)? Everything else (the key, a permission, the account's quota or
    room, the network, the service, a malformed answer, an option such as the purpose) is
    raised: a chat request must not go out without its documents for those. Pure."""
    from .errors import (
        ContentFilterError,
        EmptyFileError,
        ExtractionFailedError,
        FileTooLargeError,
        InvalidPurposeError,
        InvalidRequestError,
        NoExtractableTextError,
        NoRoomError,
        PreflightError,
        TooManyFilesError,
    )

    if isinstance(exc, (NoRoomError, InvalidPurposeError, TooManyFilesError)):
        return False  # the account's room or an option: the same for every document
    return (isinstance(exc, (PreflightError, NoExtractableTextError, ContentFilterError,
                             FileTooLargeError, EmptyFileError, ExtractionFailedError))
            or type(exc) is InvalidRequestError)  # the service refused this file's content


def document_steps(client: ClientLike, path: str, options: UploadOptions, *, strict: bool,
                   what: str) -> Steps[tuple[FileContent, UploadedFile | None] | KimiError]:
    """One document's content (and its upload, None from the cache), or its own failure
    (:func:`left_out`, said once: it is left out of ``what``); ``strict``, or a failure
    that is not the document's own, is raised."""
    try:
        return (yield from content_steps_for(client, path, options))
    except KimiError as exc:
        if strict and left_out(exc) and not exc.message.startswith(path):
            exc.message = f"{path}: {exc.message}"  # the document's own failure names it
        if strict or not left_out(exc):
            raise
        yield Say.warning("%s: left out of the %s: %s", path, what, exc)
        return exc


def messages_steps(client: ClientLike, paths: Sequence[str | os.PathLike[str]],
                   options: UploadOptions, *, max_chars: int | None = None,
                   strict: bool = False,
                   on_file: Callable[[str, UploadedFile], Say | None] | None = None,
                   max_tokens: int | None = None,
                   model: str | None = None) -> Steps[Messages]:
    """The system messages for ``paths`` (see the module docstring).

    A document the service cannot read (no text, a refused type...: :func:`left_out`) is left
    out and named in ``.failed`` with its error; ``strict=True`` raises that error instead.
    Every other failure (a wrong key, no room, the network...) is raised either way. ``on_file(path,
    uploaded)`` sees every file uploaded or reused (a session keeps what it created); a line it
    returns is said.

    Raises:
        KimiError: with ``strict``, the first document that failed; either way, a failure
            that is not the document's own (AuthenticationError, PermissionDeniedError,
            NoRoomError, ExceededQuotaError, APIConnectionError, ConfigurationError...).
    """
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int)
                                  or max_chars < 1):
        from .errors import ConfigurationError

        raise ConfigurationError(f"max_chars must be a whole number of at least 1, not "
                                 f"{max_chars!r}")
    if max_chars is not None and max_tokens is not None:
        from .errors import ConfigurationError

        raise ConfigurationError("give max_chars or max_tokens, not both")
    found: list[tuple[str, FileContent]] = []
    failed: dict[str, KimiError] = {}
    files: dict[str, UploadedFile | None] = {}
    for raw in paths:
        path = os.fsdecode(raw)
        got = yield from document_steps(client, path, options, strict=strict, what="messages")
        if isinstance(got, KimiError):
            failed[path] = got
            continue
        content, uploaded = got
        if on_file is not None and uploaded is not None:
            said = on_file(path, uploaded)
            if said is not None:
                yield said
        if files.get(path) is None:  # a path given twice keeps what its first time did
            files[path] = uploaded
        found.append((path, content))
    out = build_messages(found, max_chars)
    out.failed.update(failed)
    out.files.update(files)
    if max_tokens is not None:  # in tokens, as the platform estimates them: kimi_files._tokens
        from ._tokens import DEFAULT_MODEL, fit_tokens_steps

        out = yield from fit_tokens_steps(client, found, out, model=model or DEFAULT_MODEL,
                                          max_tokens=max_tokens)
    return out


def _cleanup_steps(created: dict[str, UploadedFile]) -> Steps[list[str]]:
    """Delete the files a session stored; returns their ids. A file already gone is fine. A
    deletion that fails does not stop the others; the first failure is raised at the end
    (the files not deleted stay in ``created``, and each is logged)."""
    deleted = []
    failure: KimiError | None = None
    for file_id, up in list(created.items()):
        try:
            with contextlib.suppress(NotFoundError):
                yield DeleteFile(file_id)
        except KimiError as exc:
            yield Say.error("could not delete %s (%s) at the end of the session: %s", file_id,
                            up.filename, exc)
            failure = failure or exc
            continue
        deleted.append(file_id)
        created.pop(file_id, None)
        yield Say.info("deleted %s (%s) at the end of the session", file_id, up.filename)
    if failure is not None:
        raise failure
    return deleted


#: Live sessions by id, and per client the files sessions reused: {file id: {session ids}}.
_sessions: weakref.WeakValueDictionary[int, _SessionBase] = weakref.WeakValueDictionary()
_client_leases: weakref.WeakKeyDictionary[ClientLike, dict[str, set[int]]] = (
    weakref.WeakKeyDictionary())


def _leases(client: ClientLike) -> dict[str, set[int]]:
    return _client_leases.setdefault(client, {})


class _SessionBase:
    def __init__(self, client: ClientLike, *, delete_on_exit: bool) -> None:
        self.client = client
        self.delete_on_exit = delete_on_exit
        _sessions[id(self)] = self
        #: the files this session stored (by id), deleted on exit with ``delete_on_exit``
        self.created: dict[str, UploadedFile] = {}
        #: the ids deleted when the session ended
        self.deleted: list[str] = []
        #: files this session reused (stored by someone else, perhaps another session)
        self.leased: set[str] = set()

    def _keep(self, path: str, up: UploadedFile) -> Say | None:
        """Remember a file the session uploaded or reused; the line to say, if any."""
        if up.reused:
            # another session of this client may have stored it: it must not delete it
            # under us; it hands it over instead (see _close)
            _leases(self.client).setdefault(up.id, set()).add(id(self))
            self.leased.add(up.id)
        elif up.adopted:
            return Say.warning("%s: %s was adopted after a lost answer; it cannot be proven "
                               "this session's, so the session will not delete it", path, up.id)
        else:
            self.created[up.id] = up
        return None

    def _upload(self, path: str | os.PathLike[str], options: UploadKwargs) -> Steps[UploadedFile]:
        up = yield from upload_steps(self.client, path, UploadOptions.of(options))
        if (said := self._keep(os.fsdecode(path), up)) is not None:
            yield said
        return up

    def _extract(self, path: str | os.PathLike[str], options: UploadKwargs) -> Steps[str]:
        content, up = yield from content_steps_for(self.client, path, UploadOptions.of(options))
        if up is not None and (said := self._keep(os.fsdecode(path), up)) is not None:
            yield said
        return content.text

    def _messages(self, paths: Sequence[str | os.PathLike[str]], max_chars: int | None,
                  strict: bool, options: UploadKwargs, max_tokens: int | None = None,
                  model: str | None = None) -> Steps[Messages]:
        return (yield from messages_steps(self.client, paths, UploadOptions.of(options),
                                          max_chars=max_chars, strict=strict,
                                          on_file=self._keep, max_tokens=max_tokens,
                                          model=model))

    def _close(self) -> Steps[None]:
        leases = _leases(self.client)
        for file_id in self.leased:  # this session no longer uses what it reused
            holders = leases.get(file_id, set())
            holders.discard(id(self))
            if not holders:
                leases.pop(file_id, None)
        if not self.delete_on_exit:
            return
        self._before = list(self.created)
        for file_id in list(self.created):
            if leases.get(file_id):  # another live session reuses it: it deletes it later
                holder = _sessions.get(next(iter(leases[file_id])))
                if holder is not None:
                    holder.created[file_id] = self.created.pop(file_id)
        try:
            gone = yield from _cleanup_steps(self.created)
        except KimiError:
            self.deleted.extend(i for i in self._before if i not in self.created)
            raise
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
                 strict: bool = False, max_tokens: int | None = None, model: str | None = None,
                 **options: Unpack[UploadKwargs]) -> Messages:
        """:func:`kimi_files.messages` through this session.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        return self.client.run(self._messages(paths, max_chars, strict, options, max_tokens,
                                              model))

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
        if exc is None:
            self.close()
            return
        try:  # the body's own error is the one that propagates
            self.close()
        except KimiError as cleanup:
            log.error("the session's clean-up failed too: %s", cleanup)


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
                       max_tokens: int | None = None, model: str | None = None,
                       **options: Unpack[UploadKwargs]) -> Messages:
        """:meth:`Session.messages`, awaited.

        Raises:
            KimiError: as :func:`kimi_files.messages`.
        """
        return await self.client.run(self._messages(paths, max_chars, strict, options,
                                                    max_tokens, model))

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
        if exc is None:
            await self.aclose()
            return
        try:  # the body's own error is the one that propagates
            await self.aclose()
        except KimiError as cleanup:
            log.error("the session's clean-up failed too: %s", cleanup)
