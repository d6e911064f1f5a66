"""The command line: ``kimi-upload`` for uploads, ``kimi-files`` for the rest.

::

    kimi-upload [options] PATH...            upload files and folders (recursively)
    kimi-files upload [options] PATH...      the same
    kimi-files list [--json]                 the account's files
    kimi-files quota [--json]                files and bytes used of 1,000 and 10 GB
    kimi-files delete ID... | --match GLOB | --older-than DAYS | --all  [--dry-run] [--yes]
    kimi-files content ID... [-o DIR] | --all -o DIR   the extracted text
    kimi-files emulator [--port N] ...       serve the local emulator

Exit codes: 0 success; 1 a file was rejected or failed, or an API call failed; 2 a usage or
configuration error (bad option, missing key, malformed base URL); 130 interrupted.
No traceback for any failure a user can cause.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# httpx imports its own command line (click, pygments) whenever they are installed, as they
# are beside uvicorn. This process is kimi-files' command line and never uses httpx's: keep
# it out of start-up (about 20 ms). A None entry makes that one import fail, and httpx then
# defines a stub in its place.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .errors import ConfigurationError, KimiError
from .quota import fmt_bytes

if TYPE_CHECKING:
    from .batch import FileResult
    from .client import KimiFiles
    from .models import FileObject

__all__ = ["main", "upload_main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Usage(Exception):
    """A usage error found after parsing."""


# --- shared options ---------------------------------------------------------------------------


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a number of at least {minimum}, got {value}")
        return value

    return parse


_positive = _at_least(1)
_non_negative = _at_least(0)


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--base-url", metavar="URL",
                   help="API base URL (default: $MOONSHOT_BASE_URL or https://api.moonshot.ai/v1);"
                        " the key comes from $MOONSHOT_API_KEY")
    g.add_argument("--platform", choices=["international", "china"],
                   help="shortcut for the base URL of platform.kimi.ai or platform.kimi.com")
    g.add_argument("--allow-http", action="store_true",
                   help="allow plain http to a non-loopback host (the key travels unencrypted)")
    g.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up on a request with no progress for this long (default: 15 s to "
                        "connect, 120 s per write, 300 s for an answer)")
    g.add_argument("--emulator", action="store_true",
                   help="start the bundled emulator in-process and use it (no key, no network)")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more to stderr (-v: info, -vv: debug)")
    return p


def _upload_parser(prog: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, parents=parents,
        description="Upload files and folders to the Kimi Files API: every file is checked "
                    "first, the whole batch is planned against the account's quota, uploads "
                    "are paced, retried safely and recorded so a re-run resumes.",
        epilog="Exit codes: 0 all uploaded or skipped; 1 any rejected or failed; 2 usage.")
    _add_upload_options(p)
    return p


def _add_upload_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (walked recursively)")
    p.add_argument("--purpose", default="file-extract",
                   help="file-extract (default), image, video or batch")
    p.add_argument("--free-quota", choices=["never", "oldest"], default="never",
                   help="make room by deleting the oldest files, only as many as needed "
                        "(default: never delete)")
    p.add_argument("--dry-run", action="store_true",
                   help="check and plan only: no upload, no deletion")
    p.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                   help="uploads at once (default 4); lowered if the account says so")
    p.add_argument("--rpm", type=_positive, metavar="N",
                   help="at most N requests a minute (learned from 429s if not given)")
    p.add_argument("--retries", type=_non_negative, metavar="N",
                   help="retries per request (default 5)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="only files whose name or relative path matches (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip files whose name or relative path matches (repeatable)")
    p.add_argument("--allow-any-type", action="store_true",
                   help="send files of types the extractor cannot read (archives, binaries)")
    p.add_argument("--state", metavar="FILE",
                   help="the state file that makes re-runs resume (default: per account, in "
                        "$XDG_STATE_HOME/kimi-files)")
    p.add_argument("--no-state", action="store_true", help="keep no state (no resume)")
    p.add_argument("--json", action="store_true",
                   help="stdout: one JSON object per input file and nothing else")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- running --------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """Text safe to print: the surrogates of a non-UTF-8 file name become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


@contextlib.contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the length of a command, then put the loggers back as they were."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("kimi-files: %(levelname)s: %(message)s"))
    saved = []
    for name in ("kimi_files", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
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


@contextlib.contextmanager
def _client(args: argparse.Namespace, retries: int | None = None) -> Iterator[KimiFiles]:
    from .client import KimiFiles

    if args.timeout is not None and not args.timeout > 0:
        raise _Usage("--timeout must be a positive number of seconds")

    if args.emulator:
        try:
            from .emulator import Emulator
        except ImportError:
            raise ConfigurationError(
                "--emulator needs the emulator extra: pip install 'kimi-files[emulator]'"
            ) from None
        with Emulator() as emu:
            key = os.environ.get("MOONSHOT_API_KEY") or "emulator"
            print(f"kimi-files: using the bundled emulator at {emu.base_url}", file=sys.stderr)
            with KimiFiles(api_key=key, base_url=emu.base_url, max_retries=retries,
                           timeout=args.timeout) as c:
                yield c
        return
    with KimiFiles(base_url=args.base_url, platform=args.platform, allow_http=args.allow_http,
                   max_retries=retries, timeout=args.timeout) as c:
        yield c


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    try:
        with _logging_to_stderr(args.verbose):
            return func(args)
    except ConfigurationError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Usage as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KimiError as exc:
        print(printable(f"{prog}: error: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return EXIT_FAILED


def _emit(stream: TextIO, text: str) -> None:
    from .progress import write_line

    write_line(printable(text), stream)


def _human(r: FileResult) -> str:
    tail = f" -> {r.file_id}" if r.file_id else ""
    note = f" ({r.note})" if r.note else ""
    if r.error is not None:
        return f"{r.status:9} {r.path}: {r.error}"
    return f"{r.status:9} {r.path}{tail}{note}"


def _do_upload(args: argparse.Namespace) -> int:
    from .batch import ingest

    if args.no_state and args.state:
        raise _Usage("--state and --no-state cannot be used together")
    if args.no_progress:
        from .progress import disable_progress_bars

        disable_progress_bars()
    out_lock = threading.Lock()

    def on_result(result: FileResult) -> None:
        with out_lock:
            if args.json:
                _emit(sys.stdout, json.dumps(result.to_json(), ensure_ascii=False))
            else:
                _emit(sys.stdout, _human(result))

    stop = threading.Event()
    with _client(args, retries=args.retries) as client, contextlib.ExitStack() as stack:
        state: Any = None
        if args.no_state:
            state = False
        elif args.state:
            state = args.state
        elif args.emulator:
            # the emulator is new each run: keep its state with it, not in the user's store
            import tempfile

            state = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "state.sqlite3"
        report = ingest(
            args.paths, client=client, purpose=args.purpose, free_quota=args.free_quota,
            dry_run=args.dry_run, concurrency=args.concurrency, rpm=args.rpm,
            include=args.include, exclude=args.exclude, state=state,
            progress=None if not args.no_progress else False,
            allow_any_type=args.allow_any_type, on_result=on_result, stop=stop)
    print(printable(f"kimi-upload: {report.summary()}"), file=sys.stderr)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok and report.results else EXIT_FAILED


# --- management commands ----------------------------------------------------------------------


def _when(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _do_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        files = client.list()
    if args.json:
        _emit(sys.stdout, json.dumps({"object": "list", "data": [f.to_dict() for f in files]},
                                     ensure_ascii=False))
        return EXIT_OK
    if not files.data:
        print("no files", file=sys.stderr)
        return EXIT_OK
    rows = [(f.id, fmt_bytes(f.bytes), _when(f.created_at), f.status, f.filename)
            for f in files]
    head = ("ID", "SIZE", "CREATED", "STATUS", "FILENAME")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    for r in [head, *rows]:
        _emit(sys.stdout, "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return EXIT_OK


def _do_quota(args: argparse.Namespace) -> int:
    from .quota import Usage

    with _client(args) as client:
        usage = Usage.of(client.list(), client.limits)
    if args.json:
        _emit(sys.stdout, json.dumps({
            "files": usage.files, "max_files": usage.max_files, "free_files": usage.free_files,
            "bytes": usage.bytes, "max_bytes": usage.max_bytes, "free_bytes": usage.free_bytes}))
        return EXIT_OK
    _emit(sys.stdout, f"files: {usage.files:,} of {usage.max_files:,} ({usage.free_files:,} free)")
    _emit(sys.stdout, f"bytes: {fmt_bytes(usage.bytes)} of {fmt_bytes(usage.max_bytes)} "
                      f"({fmt_bytes(usage.free_bytes)} free)")
    return EXIT_OK


def select_for_deletion(files: Sequence[FileObject], *, ids: Sequence[str], match: str | None,
                        older_than_days: float | None, everything: bool,
                        now: float) -> list[FileObject]:
    """The files a delete command names. Pure."""
    import fnmatch

    if ids:
        wanted = set(ids)
        return [f for f in files if f.id in wanted]
    chosen = list(files)
    if match is not None:
        chosen = [f for f in chosen if fnmatch.fnmatchcase(f.filename, match)]
    if older_than_days is not None:
        cutoff = now - older_than_days * 86400
        chosen = [f for f in chosen if f.created_at < cutoff]
    if not (everything or match is not None or older_than_days is not None):
        return []
    return sorted(chosen, key=lambda f: (f.created_at, f.id))


def _do_delete(args: argparse.Namespace) -> int:
    import time

    from .errors import NotFoundError

    if not (args.ids or args.match or args.older_than is not None or args.all):
        raise _Usage("say what to delete: file ids, --match GLOB, --older-than DAYS or --all")
    if args.ids and (args.match or args.older_than is not None or args.all):
        raise _Usage("give file ids or filters, not both")
    with _client(args) as client:
        files = client.list().data
        chosen = select_for_deletion(files, ids=args.ids, match=args.match,
                                     older_than_days=args.older_than, everything=args.all,
                                     now=time.time())
        missing = sorted(set(args.ids) - {f.id for f in chosen})
        for fid in missing:
            print(f"kimi-files: no file {fid} in this account", file=sys.stderr)
        if args.dry_run or (not args.ids and not args.yes):
            for f in chosen:
                _emit(sys.stdout, f"would delete {f.id}  {f.filename}  ({f.bytes:,} bytes)")
            if not args.dry_run:
                print(f"kimi-files: {len(chosen)} file(s) match; pass --yes to delete them",
                      file=sys.stderr)
                return EXIT_FAILED
            return EXIT_OK if not missing else EXIT_FAILED
        failed = bool(missing)
        for f in chosen:
            try:
                client.delete(f.id)
            except NotFoundError:
                pass
            except KimiError as exc:
                print(f"kimi-files: could not delete {f.id}: {exc}", file=sys.stderr)
                failed = True
                continue
            _emit(sys.stdout, f"deleted {f.id}  {f.filename}")
    return EXIT_FAILED if failed else EXIT_OK


def _safe_name(name: str) -> str:
    cleaned = "".join("_" if c in '/\\\0' or ord(c) < 32 else c for c in name).strip(". ")
    return cleaned[:200] or "file"


def _do_content(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise _Usage("give file ids, or --all with --output DIR")
    if args.all and not args.output:
        raise _Usage("--all needs --output DIR")
    with _client(args) as client:
        ids = list(args.ids) if args.ids else [f.id for f in client.list()]
        failed = False
        out_dir = Path(args.output) if args.output else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        for fid in ids:
            try:
                content = client.content(fid)
            except KimiError as exc:
                print(f"kimi-files: {fid}: {exc}", file=sys.stderr)
                failed = True
                continue
            if out_dir is None:
                _emit(sys.stdout, content.text)
            else:
                target = out_dir / f"{fid}-{_safe_name(content.filename or fid)}.txt"
                target.write_text(content.text, encoding="utf-8")
                print(f"kimi-files: wrote {target}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# --- entry points -----------------------------------------------------------------------------


def upload_main(argv: Sequence[str] | None = None) -> int:
    """``kimi-upload``."""
    parser = _upload_parser("kimi-upload", [_connection_options()])
    args = parser.parse_args(argv)
    return _run(_do_upload, args, "kimi-upload")


def main(argv: Sequence[str] | None = None) -> int:
    """``kimi-files``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:  # its options are the emulator's own
        from .emulator.__main__ import main as emulator_main

        return emulator_main(args_list[1:])
    conn = _connection_options()
    parser = argparse.ArgumentParser(
        prog="kimi-files", description="Manage files of the Kimi Files API.",
        epilog="Exit codes: 0 success; 1 failure; 2 usage or configuration error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("upload", parents=[conn], help="upload files and folders (= kimi-upload)")
    _add_upload_options(up)
    up.set_defaults(func=_do_upload)
    ls = sub.add_parser("list", parents=[conn], help="list the account's files")
    ls.add_argument("--json", action="store_true", help="the API's list object as JSON")
    ls.set_defaults(func=_do_list)
    qu = sub.add_parser("quota", parents=[conn], help="files and bytes used and free")
    qu.add_argument("--json", action="store_true")
    qu.set_defaults(func=_do_quota)
    de = sub.add_parser("delete", parents=[conn], help="delete files by id or by filter")
    de.add_argument("ids", nargs="*", metavar="ID")
    de.add_argument("--match", metavar="GLOB", help="files whose name matches")
    de.add_argument("--older-than", type=float, metavar="DAYS", help="files older than DAYS")
    de.add_argument("--all", action="store_true", help="every file (with --yes)")
    de.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    de.add_argument("--yes", action="store_true", help="delete what the filters match")
    de.set_defaults(func=_do_delete)
    co = sub.add_parser("content", parents=[conn], help="print or save extracted text")
    co.add_argument("ids", nargs="*", metavar="ID")
    co.add_argument("--all", action="store_true", help="every file (needs --output)")
    co.add_argument("-o", "--output", metavar="DIR", help="write ID-NAME.txt files into DIR")
    co.set_defaults(func=_do_content)
    sub.add_parser("emulator", help="serve the local emulator (kimi-files emulator --help)")
    args = parser.parse_args(args_list)
    prog = f"kimi-files {args.command}"
    return _run(args.func, args, prog)
