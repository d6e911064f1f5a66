"""The Files endpoints' steps, shared by both clients: list (following pages), retrieve,
delete, content and create, each with the platform's retry rules for what it may retry."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, TypeVar
from urllib.parse import quote, unquote

import httpx

from . import _retry as _retry
from ._config import (
    RetryPolicy,
)
from ._models import FileContent, FileDeleted, FileList, FileObject
from ._steps import Now, Request, Say, Steps, Wait
from ._transport import detached
from .errors import (
    BatchContentError,
    ConfigurationError,
    KimiError,
    MalformedResponseError,
    NotFoundError,
)

if TYPE_CHECKING:
    from ._body import FileBody

T = TypeVar("T")



# --- the endpoints' steps, shared by both clients ---------------------------------------------------


def call_steps(method: str, path: str, parse: Callable[[httpx.Response], T], policy: RetryPolicy,
               *, delete: bool = False, once_sent: bool = False, started: float | None = None,
               **kwargs: object) -> Steps[T]:
    """A request, its answer parsed by ``parse``, retried by the platform's rules (for
    idempotent calls; a malformed answer is retried too). ``once_sent``: a call that must
    not run twice (it creates something) is retried only when it surely did nothing.
    ``started``: the clock's reading just before (the time budget counts from it), when
    the caller has one."""
    if started is None:
        started = yield Now()
    attempt = 0
    lost = False
    while True:
        attempt += 1
        try:
            response = yield Request(method, path, kwargs)
            return parse(response)
        except NotFoundError:
            if delete and lost:
                # an earlier attempt's answer was lost, and the file is gone now: it worked
                file_id = unquote(path.rsplit("/", 1)[-1])
                return parse(httpx.Response(200, json={"id": file_id, "deleted": True}))
            raise
        except KimiError as exc:
            if not _retry.should_retry(exc) or (once_sent and _retry.may_have_stored(exc)):
                raise
            lost = lost or _retry.may_have_stored(exc)
            wait = _retry.retry_wait(exc, attempt, policy)
            now = yield Now()
            if not _retry.attempts_left(attempt, started, wait, policy, now, error=exc):
                raise
            yield Say.info("%s %s failed (%s); retry %d in %.1fs", method, path, exc, attempt,
                           wait)
            yield Wait(wait, error=exc, attempt=attempt, what=f"{method} {path}",
                       left=_retry.remaining(started, policy, now))


#: The most pages one listing follows (1,000 files a page for 10,000 pages is far beyond any
#: account): a server that keeps saying ``has_more`` with new ids cannot loop forever.
MAX_LIST_PAGES = 10_000


def list_steps(policy: RetryPolicy) -> Steps[FileList]:
    """Every file of the account, each id once. The platform documents no paging; a server
    that pages (``has_more``, as openai-style servers and the emulator do) is followed with
    ``after`` the last id of each page, each page retried on its own.

    Raises:
        MalformedResponseError: a page says there is more but gives no way on (no files, or
            a last id already gone on from: the same page again), or the pages never end.
    """
    from ._progress import ANNOUNCE_PAGES, listing_status, status_due

    files: list[FileObject] = []
    after: set[str] = set()
    query: dict[str, str] = {}  # from the second page: {"after": the last id}
    url = "files"
    started = said = now = yield Now()
    for pages in range(1, MAX_LIST_PAGES + 1):
        page, more, url = yield from call_steps("GET", "files", _page, policy, started=now,
                                                params=query)
        files.extend(page.data)
        if not more:
            return FileList.of(files, page.object)
        now = yield Now()
        if pages == ANNOUNCE_PAGES:  # said once: a large account takes a while to list
            yield Say.warning("the account's files come in pages: %d so far (%d files); "
                              "listing on until the last", pages, len(files))
            said = now
        elif status_due(now, said):  # and, while it goes on, every 30 s
            yield Say.warning("%s", listing_status(pages, len(files), now - started))
            said = now
        last = page.data[-1].id if page.data else None
        if last is None or last in after:
            way = "no files on the page" if last is None else f"the page ends at {last!r:.80} again"
            raise MalformedResponseError(
                f"GET {url}: the listing says it has more files (has_more) but gives no way on "
                f"({way}); the account's files cannot be listed whole from this server",
                status_code=200)
        after.add(last)
        query = {"after": last}
    raise MalformedResponseError(
        f"GET {url.split('?')[0]}: the listing still says it has more files after "
        f"{MAX_LIST_PAGES:,} pages "
        f"({len(files):,} files); the account's files cannot be listed whole from this server",
        status_code=200)


def _page(response: httpx.Response) -> tuple[FileList, bool, str]:
    """One page of the listing, whether it says there is more, and its URL."""
    data = json_of(response)
    return FileList.from_dict(data), has_more(data, response), str(response.request.url)


def has_more(data: Mapping[str, object], response: httpx.Response) -> bool:
    """A page's ``has_more``: true, or false (or missing); anything else is malformed.

    Raises:
        MalformedResponseError: ``"true"``, ``1``...: a listing cut short silently would
            hide files (from quotas, from adoption) or batches, and one that pages on a
            ``"false"`` would never end.
    """
    more = data.get("has_more")
    if more is not None and not isinstance(more, bool):
        raise MalformedResponseError(
            f"GET {response.request.url}: the listing's has_more is {more!r:.40}, not true or "
            "false; whether more follow cannot be told", status_code=response.status_code)
    return more is True


def retrieve_steps(policy: RetryPolicy, file_id: str) -> Steps[FileObject]:
    return call_steps("GET", f"files/{quoted_id(file_id)}", lambda r: FileObject.from_dict(json_of(r)),
                      policy)


def delete_file_steps(policy: RetryPolicy, file_id: str) -> Steps[FileDeleted]:
    return call_steps("DELETE", f"files/{quoted_id(file_id)}",
                      lambda r: FileDeleted.from_dict(json_of(r)), policy, delete=True)


def content_steps(policy: RetryPolicy, file_id: str, *, raw: bool = False,
                  name: str | None = None) -> Steps[FileContent]:
    """The content of a file: the platform's JSON document, or with ``raw`` any body but an
    empty one or an HTML page (a batch file's JSONL). Anything else is a malformed success,
    retried like one. ``name``: the stored file's name; a document naming another file is
    malformed too."""
    parse: Callable[[httpx.Response], FileContent] = _raw_content if raw else _content
    if name is not None and not raw:
        parse = functools.partial(_named_content, name=name)
    return call_steps("GET", f"files/{quoted_id(file_id)}/content", parse, policy)


def _named_content(response: httpx.Response, *, name: str) -> FileContent:
    from ._adoption import same_stored_name

    content = _content(response)
    if not same_stored_name(content.filename, name):
        raise _not_content(response, f"the document of another file (its filename is "
                                     f"{content.filename!r}, the file's is {name!r})")
    return content


def create_steps(file: IO[bytes] | FileBody, filename: str, purpose: str,
                 content_type: str) -> Steps[FileObject]:
    multipart = getattr(file, "multipart", None)
    if multipart is not None:  # a FileBody: the framing built once, the file in large pieces
        body = multipart(filename=filename, purpose=purpose, content_type=content_type)
        response = yield Request("POST", "files", {"content": body, "headers": body.headers})
    else:
        response = yield Request("POST", "files", {
            "data": {"purpose": purpose}, "files": {"file": (filename, file, content_type)}})
    return FileObject.from_dict(json_of(response))


def quoted_id(file_id: str) -> str:
    """A file id as one path segment: every character that could leave it is encoded, and
    ``.`` and ``..`` (which an HTTP client would resolve away) are encoded whole."""
    if not isinstance(file_id, str) or not file_id.strip():
        raise ConfigurationError(f"Invalid file id {file_id!r}")
    segment = quote(file_id.strip(), safe="")
    return segment.replace(".", "%2E") if set(segment) == {"."} else segment


def _content(response: httpx.Response) -> FileContent:
    content = FileContent.from_document(response.text)
    if content is None:
        if _batch_lines(response.text):  # whole, and never text: asking again cannot help
            raise _not_content(response, "a batch file's JSON Lines, which has no extracted "
                                         "text: ask for it raw (content(id, raw=True); "
                                         "kimi-files content --raw)", BatchContentError)
        raise _not_content(response, "not the content document (a JSON object with a string "
                                     "'content'; a batch file's JSONL is asked for raw)")
    return content


def _batch_lines(text: str) -> bool:
    """Is ``text`` whole JSON Lines of batch requests or results (each line an object, each
    with a ``custom_id``)? A body cut off in transit is not: its last line does not parse."""
    import json

    lines = [line for line in text.splitlines() if line.strip()]
    try:
        rows = [json.loads(line) for line in lines]
    except ValueError:
        return False
    return bool(rows) and all(isinstance(r, dict) and "custom_id" in r for r in rows)


def _raw_content(response: httpx.Response) -> FileContent:
    if not response.content or "html" in response.headers.get("content-type", "").lower():
        raise _not_content(response, "empty" if not response.content else "an HTML page")
    return FileContent.from_body(response.text)


def _not_content(response: httpx.Response, what: str,
                 kind: type[MalformedResponseError] = MalformedResponseError,
                 ) -> MalformedResponseError:
    from ._answers import _summarise_text
    from ._redact import redact

    text = response.text
    seen = f": {_summarise_text(redact(text), 80)!r}" if text.strip() else " (empty)"
    return kind(
        f"{response.request.method} {response.request.url}: the server answered "
        f"{response.status_code} with a body that is {what}{seen}",
        status_code=response.status_code, body=redact(text[:500]))


def json_of(response: httpx.Response) -> dict[str, object]:
    from ._redact import redact, redact_value

    try:
        data = response.json()
    except ValueError:
        detached(MalformedResponseError(
            f"{response.request.method} {response.request.url}: the server answered "
            f"{response.status_code} with a body that is not JSON",
            status_code=response.status_code,
            body=redact(response.text[:500]),  # a body may echo the key
        ))
    if not isinstance(data, dict):
        raise MalformedResponseError(
            "the server answered with JSON that is not an object",
            status_code=response.status_code,
            body=redact_value(data),
        )
    return data
