"""``kimi-files list``, ``quota``, ``delete`` and ``prune``: the account's files."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._config import KNOWN_PURPOSES
from .._progress import shown
from .._quota import fmt_bytes, plausibly_dated, select_for_deletion
from ..errors import KimiError

if TYPE_CHECKING:
    from .._client import KimiFiles
    from .._models import FileObject
    from ._common import Subparsers

from ._common import EXIT_FAILED, EXIT_OK, _client, _days, _Usage, _when, _whole
from ._output import _emit, _emit_json, _say


def _do_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        files = client.list()
    if args.json:
        _emit_json({"object": "list", "data": [f.to_dict() for f in files]})
        return EXIT_OK
    if not files.data:
        print("no files", file=sys.stderr)
        return EXIT_OK
    rows = [(shown(f.id), fmt_bytes(f.bytes), _when(f.created_at), shown(f.purpose),
             shown(f.status), f.filename) for f in files]
    head = ("ID", "SIZE", "CREATED", "PURPOSE", "STATUS", "FILENAME")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(5)]
    for r in [head, *rows]:
        _emit(sys.stdout, "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True))
              + "  " + r[5])
    return EXIT_OK


def _do_quota(args: argparse.Namespace) -> int:
    from .._quota import Usage

    with _client(args) as client:
        usage = Usage.of(client.list(), client.limits)
    if args.json:
        _emit_json({
            "files": usage.files, "max_files": usage.max_files, "free_files": usage.free_files,
            "bytes": usage.bytes, "max_bytes": usage.max_bytes, "free_bytes": usage.free_bytes})
        return EXIT_OK
    _emit(sys.stdout, f"files: {usage.files:,} of {usage.max_files:,} ({usage.free_files:,} free)")
    _emit(sys.stdout, f"bytes: {fmt_bytes(usage.bytes)} of {fmt_bytes(usage.max_bytes)} "
                      f"({fmt_bytes(usage.free_bytes)} free)")
    return EXIT_OK


def _do_delete(args: argparse.Namespace) -> int:

    if not (args.ids or args.match or args.older_than is not None or args.all):
        raise _Usage("say what to delete: file ids, --match GLOB, --older-than DAYS or --all")
    if args.ids and (args.match or args.older_than is not None or args.all):
        raise _Usage("give file ids or filters, not both")
    with _client(args) as client:
        files = client.list().data
        now = _age_clock(client, args.older_than is not None)
        if now is None:
            return EXIT_FAILED
        if args.older_than is not None:
            for f in files:
                if not plausibly_dated(f, now):
                    _say(f"kimi-files: {shown(f.id)} ({shown(f.filename)}): the listing gives "
                         "it no plausible created_at; --older-than leaves it alone")
        chosen = select_for_deletion(files, ids=args.ids, match=args.match,
                                     older_than_days=args.older_than, everything=args.all,
                                     now=now)
        missing = sorted(set(args.ids) - {f.id for f in chosen})
        for fid in missing:
            _say(f"kimi-files: no file {fid} in this account")
        if args.dry_run or (not args.ids and not args.yes):
            for f in chosen:
                _emit(sys.stdout, f"would delete {f.id}  {f.filename}  ({f.bytes:,} bytes)")
            if not args.dry_run:
                _say(f"kimi-files: {len(chosen)} file(s) match; pass --yes to delete them")
                return EXIT_FAILED
            return EXIT_OK if not missing else EXIT_FAILED
        failed = _delete_each(client, chosen) < len(chosen) or bool(missing)
    return EXIT_FAILED if failed else EXIT_OK


def _age_clock(client: KimiFiles, by_age: bool) -> float | None:
    """The time ``created_at`` is judged by: the server's (its ``Date`` headers); when files
    go by age and it is unknown or far from the local clock, None (said)."""
    from .._quota import age_clock

    now = age_clock(client.clock.now(), time.time())
    if isinstance(now, str):
        if by_age:
            _say(f"kimi-files: refusing --older-than: {now}")
            return None
        return time.time()  # only the plausibility of created_at: the local clock will do
    return now


def _delete_each(client: KimiFiles, files: Sequence[FileObject]) -> int:
    """Delete ``files`` (one already gone is fine), a line each, and forget them in the reuse
    cache; how many are gone. A failure is said and the rest go on."""
    from ..errors import NotFoundError

    gone = []
    for f in files:
        try:
            client.delete(f.id)
        except NotFoundError:
            pass
        except KimiError as exc:
            _say(f"kimi-files: could not delete {f.id}: {exc}")
            continue
        gone.append(f.id)
        _emit(sys.stdout, f"deleted {f.id}  {f.filename}")
    cache = client.reuse_cache()
    if cache is not None and gone:
        cache.forget(gone)
    return len(gone)


def _do_prune(args: argparse.Namespace) -> int:
    from .._quota import implausibly_dated, select_for_pruning

    if args.keep is None and args.older_than is None:
        raise _Usage("say what to keep: --keep N (the N newest) and/or --older-than DAYS")
    with _client(args) as client:
        files = client.list().data
        now = _age_clock(client, args.older_than is not None)
        if now is None:
            return EXIT_FAILED
        for f in implausibly_dated(files, match=args.match, purpose=args.purpose, now=now):
            _say(f"kimi-files: {shown(f.id)} ({shown(f.filename)}): the listing gives it no "
                 "plausible created_at; it is neither pruned nor counted among the newest")
        chosen = select_for_pruning(files, keep=args.keep, older_than_days=args.older_than,
                                    match=args.match, purpose=args.purpose, now=now)
        if args.dry_run or not args.yes:
            for f in chosen:
                _emit(sys.stdout, f"would delete {f.id}  {f.filename}  ({f.bytes:,} bytes, "
                                  f"{_when(f.created_at)})")
            if not args.dry_run:
                _say(f"kimi-files: {len(chosen)} file(s) match; pass --yes to delete them")
                return EXIT_FAILED
            _say(f"kimi-files: {len(chosen)} file(s) would be deleted (dry run)")
            return EXIT_OK
        gone = _delete_each(client, chosen)
        _say(f"kimi-files: {gone} file(s) deleted")
    return EXIT_FAILED if gone < len(chosen) else EXIT_OK



def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    ls = sub.add_parser("list", parents=parents, help="list the account's files")
    ls.add_argument("--json", action="store_true", help="the API's list object as JSON")
    ls.set_defaults(func=_do_list)
    qu = sub.add_parser("quota", parents=parents, help="files and bytes used and free")
    qu.add_argument("--json", action="store_true",
                    help="as JSON: files, max_files, free_files, bytes, max_bytes, free_bytes")
    qu.set_defaults(func=_do_quota)
    de = sub.add_parser("delete", parents=parents, help="delete files by id or by filter")
    de.add_argument("ids", nargs="*", metavar="ID", help="the ids of the files to delete")
    de.add_argument("--match", metavar="GLOB", help="files whose name matches")
    de.add_argument("--older-than", type=_days, metavar="DAYS", help="files older than DAYS")
    de.add_argument("--all", action="store_true", help="every file (with --yes)")
    de.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    de.add_argument("--yes", action="store_true", help="delete what the filters match")
    de.set_defaults(func=_do_delete)
    pr = sub.add_parser("prune", parents=parents,
                        help="delete old files of one purpose: keep the N newest, or those "
                             "younger than DAYS")
    pr.add_argument("--keep", type=_whole(0), metavar="N", help="keep the N newest")
    pr.add_argument("--older-than", type=_days, metavar="DAYS",
                    help="delete those made more than DAYS ago")
    pr.add_argument("--match", metavar="GLOB", help="only files whose name matches")
    pr.add_argument("--purpose", choices=sorted(KNOWN_PURPOSES), default="file-extract",
                    help="only files of this purpose (default file-extract); others are "
                         "never touched")
    pr.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    pr.add_argument("--yes", action="store_true", help="delete them (for cron jobs)")
    pr.set_defaults(func=_do_prune)
