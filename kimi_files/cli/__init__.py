"""The command line: ``kimi-upload`` for uploads, ``kimi-files`` for the rest.

::

    kimi-upload [options] PATH...            upload files and folders (recursively)
    kimi-files upload [options] PATH...      the same
    kimi-files list [--json]                 the account's files
    kimi-files quota [--json]                files and bytes used of 1,000 and 10 GB
    kimi-files delete ID... | --match GLOB | --older-than DAYS | --all  [--dry-run] [--yes]
    kimi-files content ID... [-o DIR] | --all -o DIR   the extracted text
    kimi-files extract PATH... -o OUT        the text of a corpus of any size (upload, read,
                                             delete, within the quota)
    kimi-files tokens PATH... [--model M]    each document's tokens, and whether they fit
    kimi-files batch build|check|submit|wait|results|status|cancel|list   the Batch API
    kimi-files map [PATH...] [--json]        which stored file each document maps to
    kimi-files state [list] | clean          the state and cache files of this machine
    kimi-files emulator [--port N] ...       serve the local emulator

Exit codes: 0 success; 1 a file was rejected or failed, or an API call failed; 2 a usage or
configuration error (bad option, missing key, malformed base URL); 130 interrupted (Ctrl-C,
SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP); 141 the output was closed (a broken
pipe, as in ``kimi-files list | head -1``: what a standard tool killed by SIGPIPE reports).
No traceback for any failure a user can cause.

An upload stops on the first Ctrl-C, SIGTERM or SIGHUP: no new upload starts, those in flight
finish, every result is recorded in the state and the summary is printed. A second signal
stops at once: uploads in flight are abandoned (their intents stay in the state, so the next
run settles them), the summary of what ended is printed, and the process exits.

Human output shows control characters of names (ESC, BEL, CR, LF, the other C0 and C1
controls, DEL, bidirectional overrides) escaped, as ``\\x1b``, ``\\n``, ``\\u202e``, so no
name can forge a line or drive the terminal; ``--json`` output is exact (JSON escapes them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# httpx imports its own command line (click, pygments) whenever they are installed, as they
# are beside uvicorn. This process is kimi-files' command line and never uses httpx's: keep
# it out of start-up (about 20 ms). A None entry makes that one import fail, and httpx then
# defines a stub in its place.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .._progress import shown
from . import _batch, _cache, _content, _extract, _files, _map, _messages, _state, _tokens, _upload
from ._common import _connection_options, _run
from ._content import output_name

if TYPE_CHECKING:
    from .._config import Limits

__all__ = ["main", "output_name", "shown", "upload_main"]

#: The command modules, each with ``register(sub, parents)``; their order is --help's.
_COMMANDS = (_upload, _files, _content, _extract, _cache, _messages, _map, _state, _tokens, _batch)


def upload_main(argv: Sequence[str] | None = None, *, limits: Limits | None = None) -> int:
    """``kimi-upload``. ``limits``: the account's limits, if not the platform's (tests)."""
    parser = _upload._upload_parser()
    args = parser.parse_args(argv)
    args.limits = limits
    return _run(_upload._do_upload, args, "kimi-upload")


def _parser() -> argparse.ArgumentParser:
    """The parser of ``kimi-files``, every command registered."""
    parser = argparse.ArgumentParser(
        prog="kimi-files", description="Manage files of the Kimi Files API.",
        epilog="Exit codes: 0 success; 1 failure; 2 usage or configuration error; "
               "130/143/129 stopped by Ctrl-C/SIGTERM/SIGHUP; 141 output closed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [_connection_options()]
    for command in _COMMANDS:
        command.register(sub, parents)
    sub.add_parser("emulator", help="serve the local emulator (kimi-files emulator --help)")
    return parser


def _options_before_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The hint for options given before the command (``kimi-files --base-url URL list``):
    they go after it. None when the command comes first (or there is none)."""
    if not argv or not argv[0].startswith("-") or argv[0] in ("-h", "--help"):
        return None
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    at = next((i for i, a in enumerate(argv) if a in sub.choices), None)
    if at is None:
        return None
    return (f"options go after the command: kimi-files {argv[at]} "
            f"{' '.join([*argv[:at], *argv[at + 1:]])}")


def main(argv: Sequence[str] | None = None, *, limits: Limits | None = None) -> int:
    """``kimi-files``. ``limits``: the account's limits, if not the platform's (tests)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:  # its options are the emulator's own
        from ..emulator.__main__ import main as emulator_main

        return emulator_main(args_list[1:])
    parser = _parser()
    misplaced = _options_before_command(parser, args_list)
    if misplaced is not None:
        parser.error(misplaced)
    args = parser.parse_args(args_list)
    refused = getattr(args, "not_on_emulator", None)
    if refused and args.emulator:
        parser.error(refused)
    args.limits = limits
    prog = f"kimi-files {args.command}"
    return _run(args.func, args, prog)
