"""The HTTP client for the five Files endpoints.

One :class:`httpx.Client` (one connection pool) per :class:`KimiFiles`. Transport and
status errors become kimi-files errors in exactly one place, :meth:`KimiFiles._send`.
Read-only calls and deletes are retried by the platform's rules; the upload endpoint is a
single attempt here (:meth:`KimiFiles.create`) and gets its careful retries in
:mod:`kimi_files.upload`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

import httpx

from . import retry as _retry
from .adoption import ServerClock
from .config import (
    DEFAULT_BASE_URL,
    DEFAULT_PURPOSE,
    Limits,
    RetryPolicy,
    is_loopback_url,
    resolve_api_key,
    resolve_base_url,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ConnectionLostError,
    KimiError,
    MalformedResponseError,
    NotFoundError,
    error_from_response,
)
from .models import FileContent, FileDeleted, FileList, FileObject

if TYPE_CHECKING:
    from .models import UploadedFile
    from .pacing import Pacer
    from .quota import FreeQuota
    from .uploader import FileBody, Preflight

__all__ = ["DEFAULT_TIMEOUT", "KimiFiles"]

log = logging.getLogger("kimi_files")
T = TypeVar("T")

__version__ = "0.1.0"

#: Suits a 100 MB upload on a slow link: each write may take 2 minutes, and the answer
#: (after server-side extraction) may take 5. The read time-out is longer than the server's
#: own 5-minute limit, so its 504 is seen and handled rather than raced.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0, read=330.0, write=120.0, pool=600.0)


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class KimiFiles:
    """A client of the Kimi Files API.

    ``api_key`` defaults to ``MOONSHOT_API_KEY``; ``base_url`` to ``MOONSHOT_BASE_URL`` or the
    international platform; ``platform="china"`` picks ``https://api.moonshot.cn/v1``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        platform: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        limits: Limits | None = None,
        allow_http: bool = False,
        pacer: Pacer | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url, platform=platform, allow_http=allow_http)
        self._key = _Secret(resolve_api_key(api_key))
        self.retry_policy = (retry or RetryPolicy()).with_retries(max_retries)
        self.limits = limits or Limits()
        if pacer is None:
            from .pacing import Pacer

            pacer = Pacer()
        #: Paces every request of this client, for its lifetime (learns the account's limits).
        self.pacer = pacer
        #: The server's time, from the Date headers of its answers (see kimi_files.adoption).
        self.clock = ServerClock()
        self._owns_http = http_client is None
        loopback = is_loopback_url(self.base_url)
        self._http = http_client or httpx.Client(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            # TLS is verified for every https base URL. A plain-http base URL (the emulator on
            # loopback, or --allow-http) never reaches a TLS host, since no redirect is followed,
            # so it skips building a certificate store it cannot use (~70 ms of start-up).
            verify=not self.base_url.startswith("http://"),
            # Proxy settings from the environment (HTTP_PROXY, ...) never apply to a loopback
            # base URL: the key would travel in clear to the proxy.
            trust_env=not loopback,
        )
        self._user_agent = f"kimi-files/{__version__} httpx/{httpx.__version__}"

    # --- lifecycle ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"KimiFiles(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> KimiFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def state_path(self) -> Path:
        """Where batch state for this account (a hash of the key) and base URL lives."""
        from .state import default_state_path

        return default_state_path(self.base_url, self._key.get())

    # --- the one place errors are translated ----------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    @contextlib.contextmanager
    def _translate(self, method: str, url: str) -> Iterator[None]:
        where = f"{method} {url}"
        try:
            yield
        except KimiError:
            raise
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise APITimeoutError(f"{where}: timed out connecting ({exc})") from None
        except httpx.TimeoutException as exc:
            raise APITimeoutError(
                f"{where}: timed out waiting for the server ({type(exc).__name__})",
                request_sent=True,
            ) from None
        except httpx.ConnectError as exc:
            raise APIConnectionError(f"{where}: could not connect ({exc})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise ConnectionLostError(
                f"{where}: the connection was lost before a complete answer ({exc or type(exc).__name__})",
                request_sent=True,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        except httpx.HTTPError as exc:
            raise APIConnectionError(
                f"{where}: {type(exc).__name__}: {exc}", request_sent=True
            ) from None
        except OSError as exc:  # e.g. a socket error httpx did not map
            raise ConnectionLostError(f"{where}: {exc}", request_sent=True) from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises a kimi-files error for any failure."""
        url = self._url(path)
        # built per request so the key lives only in its _Secret holder
        headers = {"Authorization": f"Bearer {self._key.get()}", "User-Agent": self._user_agent}
        # the pacer learns from what happens inside its slot: a 429 raised here halves the
        # window before the slot is counted, and never counts as a success
        with self.pacer.slot():
            with self._translate(method, url):
                response = self._http.request(method, url, headers=headers, **kwargs)
                log.debug("%s %s -> %s", method, url, response.status_code)
            self.clock.observe_date(response.headers.get("date"))
            if response.is_success:
                return response
            if response.is_redirect:
                location = response.headers.get("location", "?")
                raise APIStatusError(
                    f"{method} {url} was redirected to {location}; kimi-files follows no redirect "
                    "so the API key never goes to another host: use the final base URL directly",
                    status_code=response.status_code,
                    base_url=self.base_url,
                )
            error = error_from_response(
                response.status_code, response.content, response.headers,
                base_url=self.base_url, secret=self._key.get(),
            )
            if response.status_code == 404 and path.strip("/") == "files":
                error.message = (
                    f"{method} {url} answered 404 ({error.message}): is the base URL right? It "
                    f"should end in /v1, for example {DEFAULT_BASE_URL}"
                )
            raise error

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        delete: bool = False,
        **kwargs: Any,
    ) -> T:
        """A request, its answer parsed by ``parse``, retried by the platform's rules (for
        idempotent calls; a malformed answer is retried too)."""
        policy = self.retry_policy
        started = time.monotonic()
        attempt = 0
        lost = False
        while True:
            attempt += 1
            try:
                return parse(self._send(method, path, **kwargs))
            except NotFoundError:
                if delete and lost:
                    # an earlier attempt's answer was lost, and the file is gone now: it worked
                    file_id = unquote(path.rsplit("/", 1)[-1])
                    gone = httpx.Response(200, json={"id": file_id, "deleted": True})
                    return parse(gone)
                raise
            except KimiError as exc:
                if not _retry.should_retry(exc):
                    raise
                lost = lost or _retry.may_have_stored(exc)
                wait = _retry.retry_wait(exc, attempt, policy)
                now = time.monotonic()
                if not _retry.attempts_left(attempt, started, wait, policy, now, error=exc):
                    raise
                log.info("%s %s failed (%s); retry %d in %.1fs", method, path, exc, attempt, wait)
                _retry.sleep(wait, error=exc, attempt=attempt, what=f"{method} {path}",
                             left=_retry.remaining(started, policy, now))

    # --- endpoints -------------------------------------------------------------------------

    def list(self) -> FileList:
        """All files of the account."""
        return self._call("GET", "files", lambda r: FileList.from_dict(_json(r)))

    def retrieve(self, file_id: str) -> FileObject:
        return self._call("GET", f"files/{_id(file_id)}", lambda r: FileObject.from_dict(_json(r)))

    def delete(self, file_id: str) -> FileDeleted:
        return FileDeleted.from_dict(
            self._call("DELETE", f"files/{_id(file_id)}", _json, delete=True)
        )

    def content(self, file_id: str) -> FileContent:
        """The extracted text of an uploaded file (and the platform's JSON document)."""
        return self._call("GET", f"files/{_id(file_id)}/content", _content)

    def create(
        self,
        file: IO[bytes] | FileBody,
        *,
        filename: str,
        purpose: str = DEFAULT_PURPOSE,
        content_type: str = "application/octet-stream",
    ) -> FileObject:
        """One upload request, streamed from ``file`` (a binary file object, read in chunks).

        No preflight and no retry: see :meth:`upload` for those.
        """
        response = self._send(
            "POST",
            "files",
            data={"purpose": purpose},
            files={"file": (filename, file, content_type)},
        )
        return FileObject.from_dict(_json(response))

    def upload(
        self,
        path: str | os.PathLike[str],
        *,
        purpose: str = DEFAULT_PURPOSE,
        free_quota: FreeQuota = "never",
        progress: bool | None = None,
        max_retries: int | None = None,
        allow_any_type: bool = False,
    ) -> UploadedFile:
        """Preflight, free quota if asked, stream with progress, retry safely: see
        :func:`kimi_files.upload`."""
        from .uploader import upload_path

        return upload_path(
            self,
            Path(path),
            purpose=purpose,
            free_quota=free_quota,
            progress=progress,
            max_retries=max_retries,
            allow_any_type=allow_any_type,
        )

    def preflight(
        self,
        path: str | os.PathLike[str],
        *,
        purpose: str = DEFAULT_PURPOSE,
        free_quota: FreeQuota = "never",
        allow_any_type: bool = False,
    ) -> Preflight:
        """Every check :meth:`upload` makes, and its room plan, without sending the file or
        deleting anything (one list call). Raises the error the upload would raise."""
        from .uploader import preflight

        return preflight(self, path, purpose=purpose, free_quota=free_quota,
                         allow_any_type=allow_any_type)

    def extract(self, path_or_file_id: str | os.PathLike[str], **upload_options: Any) -> str:
        """The extracted text of a local file (uploading it first) or of an uploaded file id."""
        from .uploader import extract_text

        return extract_text(self, path_or_file_id, **upload_options)


def _id(file_id: str) -> str:
    if not isinstance(file_id, str) or not file_id.strip():
        raise ConfigurationError(f"Invalid file id {file_id!r}")
    return quote(file_id.strip(), safe="")


def _content(response: httpx.Response) -> FileContent:
    return FileContent.from_body(response.text)


def _json(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        raise MalformedResponseError(
            f"{response.request.method} {response.request.url}: the server answered "
            f"{response.status_code} with a body that is not JSON",
            status_code=response.status_code,
            body=response.text[:500],
        ) from None
    if not isinstance(data, dict):
        raise MalformedResponseError(
            "the server answered with JSON that is not an object",
            status_code=response.status_code,
            body=data,
        )
    return data
