"""``kimi-files tokens``: each document's tokens, the total, and whether it fits."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._common import Subparsers

from .._config import DEFAULT_MODEL
from .._progress import shown
from ._common import EXIT_FAILED, EXIT_OK, _client
from ._output import _emit, _emit_json, _say


def _do_tokens(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.tokens(args.paths, model=args.model, reuse=not args.no_reuse)
    window = report.context_window
    if args.json:
        for path, count in report.documents.items():
            _emit_json({"path": path, "tokens": count})
        _emit_json({"total": report.total, "model": report.model,
                    "context_window": window, "fits": report.fits})
    else:
        for path, count in report.documents.items():
            _emit(sys.stdout, f"{count:>10,}  {shown(path)}")
        verdict = ("context window unknown" if window is None else
                   f"{'fits' if report.fits else 'does NOT fit'} {report.model}'s context "
                   f"window of {window:,}")
        _emit(sys.stdout, f"{report.total:>10,}  total ({verdict})")
    if report.failed:  # each was named as it was left out
        _say(f"kimi-files: {len(report.failed):,} document(s) left out (named above)")
    return EXIT_FAILED if report.failed or report.fits is False else EXIT_OK


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("tokens", parents=parents,
                       help="each document's tokens (the platform's estimate) and the total, "
                            "and whether they fit the model's context window")
    t.add_argument("paths", nargs="+", metavar="PATH", help="the documents to count")
    t.add_argument("--model", default=DEFAULT_MODEL, metavar="M",
                   help=f"the model to count for (default {DEFAULT_MODEL})")
    t.add_argument("--json", action="store_true", help="one JSON line per document, then the total")
    t.add_argument("--no-reuse", action="store_true",
                   help="upload even what the account already holds")
    t.set_defaults(func=_do_tokens)
