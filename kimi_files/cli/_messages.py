"""``kimi-files messages``: the system messages of a chat request for documents."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .._config import DEFAULT_MODEL, KNOWN_PURPOSES

if TYPE_CHECKING:
    from ._common import Subparsers

from ._common import EXIT_FAILED, EXIT_OK, _client, _settling, _whole
from ._output import _emit_json, _say


def _do_messages(args: argparse.Namespace) -> int:
    if args.model is not None and args.max_tokens is None:
        _say(f"kimi-files: --model {args.model} is ignored: it names the model --max-tokens "
             "counts for, and no --max-tokens was given")
    with _client(args) as client:
        found = _settling("kimi-files messages", lambda: client.messages(
            args.paths, max_chars=args.max_chars, strict=args.strict,
            max_tokens=args.max_tokens, model=args.model, purpose=args.purpose,
            reuse=not args.no_reuse))
    _emit_json(list(found))
    for path, (total, kept) in found.cut.items():
        _say(f"kimi-files: {path}: cut to {kept:,} of {total:,} characters "
             f"({'--max-tokens' if args.max_tokens else '--max-chars'})")
    if found.failed:  # each was named as it was left out
        _say(f"kimi-files: {len(found.failed):,} document(s) left out (named above)")
    return EXIT_FAILED if found.failed else EXIT_OK



def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    me = sub.add_parser("messages", parents=parents,
                        help="print the system messages of a chat request for documents, as "
                             "JSON")
    me.add_argument("paths", nargs="+", metavar="PATH",
                    help="the documents, in the order of the messages (uploaded or reused)")
    me.add_argument("--max-chars", type=_whole(1), metavar="N",
                    help="keep the total under N characters, cutting the largest first")
    me.add_argument("--max-tokens", type=_whole(1), metavar="N",
                    help="keep the request's estimated tokens under N (the platform's "
                         "estimate), cutting the largest first")
    me.add_argument("--model", metavar="M",
                    help=f"the model --max-tokens counts for (default {DEFAULT_MODEL})")
    me.add_argument("--strict", action="store_true",
                    help="fail on a document the service cannot read (default: leave it out)")
    me.add_argument("--purpose", choices=sorted(KNOWN_PURPOSES), default="file-extract",
                    help="the purpose to upload under (default file-extract: messages hold "
                         "the extracted text)")
    me.add_argument("--no-reuse", action="store_true",
                    help="upload even what the account already holds")
    me.set_defaults(func=_do_messages)
