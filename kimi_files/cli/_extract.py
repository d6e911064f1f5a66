"""``kimi-files extract``: the text of a corpus of any size, as JSON Lines or a folder of .txt.

``OUT`` ending in ``.jsonl``: one line per document; ``-``: the same lines on stdout (and
nothing else there); any other ``OUT``: a folder with one ``.txt`` per document (mirroring the
relative paths) and an ``index.jsonl`` of the same lines without the text. A re-run into the
same ``OUT`` skips the documents it holds (a line torn by a kill is dropped and redone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .._config import KNOWN_PURPOSES

if TYPE_CHECKING:
    from .._extract_models import StateArg
    from .._extraction import ExtractResult, ExtractSummary
    from ._common import Subparsers

from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MAX_CONCURRENCY,
    _client,
    _Signalled,
    _Usage,
    _whole,
    add_walk_options,
    exclude_patterns,
)
from ._output import _say, json_line, write_whole

PROG = "kimi-files extract"


# --- resuming: what an OUT holds already ------------------------------------------------------


def read_lines(fh: IO[bytes]) -> tuple[set[str], int]:
    """The paths of the complete lines of a JSON Lines output, and the length of the part to
    keep: up to the first line that is torn (no end of line: a kill mid-write) or is not a
    document's line; what follows is dropped and redone."""
    done: set[str] = set()
    keep = 0
    fh.seek(0)
    for raw in fh:
        if not raw.endswith(b"\n"):
            break
        try:
            line = json.loads(raw)
        except ValueError:
            break
        if not isinstance(line, dict) or not isinstance(line.get("path"), str):
            break
        done.add(line["path"])
        keep += len(raw)
    return done, keep


class _Lines:
    """A JSON Lines file opened to append, its torn end repaired; the paths it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fh: IO[bytes] = open(path, "a+b")  # noqa: SIM115  (closed by close())
        except OSError as exc:
            raise _Usage(f"cannot write {path}: {exc.strerror or exc}") from None
        self.done, keep = read_lines(self.fh)
        self.repaired = keep != self.fh.seek(0, os.SEEK_END)
        if self.repaired:
            self.fh.truncate(keep)
            _say(f"{PROG}: {path}: its last line was incomplete (an interrupted run); "
                 "dropped, that document is done again")

    def write(self, obj: dict[str, object]) -> None:
        self.fh.write(json_line(obj).encode("utf-8", "surrogatepass") + b"\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class _Output:
    """Where the lines go: stdout, a ``.jsonl`` file, or a folder of ``.txt`` files."""

    def __init__(self, out: str, roots: Sequence[str]) -> None:
        self.stdout = out == "-"
        self.folder: Path | None = None
        self.lines: _Lines | None = None
        self.roots = [os.fsdecode(r) for r in roots]
        if self.stdout:
            self.done: set[str] = set()
            return
        target = Path(out)
        if out.endswith(".jsonl"):
            if target.is_dir():
                raise _Usage(f"{out} is a folder; an output ending in .jsonl is a file")
            self.lines = _Lines(target)
        else:
            if target.exists() and not target.is_dir():
                raise _Usage(f"{out} is a file; give a folder, a name ending in .jsonl, or -")
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _Usage(f"cannot create the folder {out}: {exc.strerror or exc}") from None
            self.folder = target
            self.lines = _Lines(target / "index.jsonl")
        self.done = self.lines.done

    def txt_name(self, shown: str) -> str:
        """The .txt of a document, relative to the folder: its path under the folder given
        (prefixed by that folder's name when several were given), or its name."""
        for root in self.roots:
            base = root.rstrip("/") or root
            if shown.startswith(base + "/"):
                rel = shown[len(base) + 1:]
                if len(self.roots) > 1:
                    rel = f"{Path(base).name or 'root'}/{rel}"
                break
        else:
            rel = Path(shown).name
        parts = [p for p in rel.split("/") if p not in ("", ".", "..")]
        return "/".join(parts or ["document"]) + ".txt"

    def write(self, result: ExtractResult) -> None:
        line = result.to_json(text=self.folder is None)
        if self.stdout:
            sys.stdout.write(json_line(line) + "\n")
            sys.stdout.flush()
            return
        assert self.lines is not None
        if self.folder is not None and result.text is not None:
            name = self.txt_name(result.path)
            _write_text(self.folder / name, result.text)
            line["txt"] = name
        self.lines.write(line)

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()


def _write_text(path: Path, text: str) -> None:
    """The text, whole or not at all (written beside, then renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, text)


# --- the command ------------------------------------------------------------------------------


def _summary(summary: ExtractSummary | None, written: int, left: int) -> list[str]:
    if summary is None:
        return [f"{PROG}: {written} document(s) written before it stopped"]
    first, *rest = summary.lines()
    skipped = f"; {left} already in the output" if left else ""
    return [f"{PROG}: {first}{skipped}", *rest]


def _do_extract(args: argparse.Namespace) -> int:
    if args.no_state and args.state:
        raise _Usage("--state and --no-state cannot be used together")
    if args.no_progress:
        from .._progress import disable_progress_bars

        disable_progress_bars()
    output = _Output(args.output, args.paths)
    statuses: dict[str, int] = {}
    written = 0
    stopped: int | None = None
    with contextlib.ExitStack() as stack:
        stack.callback(output.close)
        client = stack.enter_context(_client(args, retries=args.retries))
        state: StateArg = None
        if args.no_state:
            state = False
        elif args.state:
            state = args.state
        elif args.emulator:  # the emulator is new each run: its state goes with it
            state = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "extract.sqlite3"
        results = client.extract_many(
            args.paths, keep=args.keep, window=args.window, concurrency=args.concurrency,
            include=args.include, exclude=exclude_patterns(args), follow_links=args.follow_links,
            state=state, wait=args.wait, skip=output.done, purpose=args.purpose,
            reuse=not args.no_reuse, allow_any_type=args.allow_any_type,
            progress=None if not args.no_progress else False)
        try:
            for result in results:
                output.write(result)
                written += 1
                statuses[result.status] = statuses.get(result.status, 0) + 1
        except (KeyboardInterrupt, _Signalled) as exc:
            stopped = exc.signum + 128 if isinstance(exc, _Signalled) else EXIT_INTERRUPTED
            _say(f"{PROG}: stopping: nothing new starts; deleting what this run stored "
                 "(again to stop at once)")
        finally:
            results.close()
    for line in _summary(results.summary, written, len(output.done)):
        _say(line)
    if stopped is not None:
        return stopped
    if results.summary is not None and results.summary.interrupted:
        return EXIT_INTERRUPTED
    bad = statuses.get("refused", 0) + statuses.get("failed", 0)
    return EXIT_FAILED if bad else EXIT_OK


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser(
        "extract", parents=parents,
        help="the text of files and folders, any number, within the quota (JSON Lines or .txt)",
        description="Upload each document, read its text, delete the file: at most --window of "
                    "this run's files on the server at once (by default what the account's free "
                    "slots allow). A re-run into the same OUT skips what it holds.",
        epilog="Exit codes: 0 every document ok or no_text; 1 some refused or failed (their "
               "lines are written); 2 usage or an unwritable OUT; 130/143 stopped.")
    ex.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (walked "
                                                             "recursively)")
    ex.add_argument("-o", "--output", required=True, metavar="OUT",
                    help="FILE.jsonl (one line per document), - (the lines on stdout), or a "
                         "folder (one .txt per document and an index.jsonl)")
    ex.add_argument("--keep", action="store_true",
                    help="keep the uploaded files (default: each is deleted once its text is "
                         "saved); a later kimi-upload of the same files then sends nothing")
    ex.add_argument("--window", type=_whole(1, 1_000_000), metavar="N",
                    help="at most N of this run's files on the server at once (default, and at "
                         "most: the account's free slots)")
    ex.add_argument("--concurrency", type=_whole(1, MAX_CONCURRENCY), default=4, metavar="N",
                    help="documents at once (default 4)")
    ex.add_argument("--retries", type=_whole(0, 100), metavar="N",
                    help="retries per request (default 5)")
    add_walk_options(ex)
    ex.add_argument("--no-reuse", action="store_true",
                    help="neither read texts from the local cache nor use files the account "
                         "holds with the same content")
    ex.add_argument("--allow-any-type", action="store_true",
                    help="send files of types the extractor cannot read")
    ex.add_argument("--purpose", choices=sorted(KNOWN_PURPOSES), default="file-extract",
                    help="the purpose to upload under (default file-extract: the extracted "
                         "text; batch: the JSONL as uploaded)")
    ex.add_argument("--state", metavar="FILE",
                    help="the run's state, which finds what a killed run left (default: per "
                         "account, in $XDG_STATE_HOME/kimi-files)")
    ex.add_argument("--no-state", action="store_true",
                    help="keep no state (a killed run's files are not found again)")
    ex.add_argument("--wait", action="store_true",
                    help="wait for another extract run on the same account instead of exiting")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=_do_extract)
