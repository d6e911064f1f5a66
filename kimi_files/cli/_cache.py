"""``kimi-files cache``: the reuse cache of this account."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._common import Subparsers

from ._common import EXIT_OK, _client, _Usage
from ._output import _emit, _emit_json, _say


def _do_cache(args: argparse.Namespace) -> int:
    from ..errors import CacheError

    with _client(args) as client:
        from .._cache import cache_path_for

        where = cache_path_for(client.state_path())
        if not where.exists():  # looked at, never made
            if args.json and args.action == "show":
                _emit_json({"path": os.fsdecode(where), "files": [], "texts": 0})
            else:
                _say(f"kimi-files: {where}: no reuse cache yet (0 file(s), 0 extracted text(s))")
            return EXIT_OK
        try:
            cache = client.reuse_cache()
        except CacheError as exc:
            if args.action != "clear" or exc.path is None:
                raise
            from .._cache import remove_cache_files

            for p in remove_cache_files(Path(exc.path)):
                _say(f"kimi-files: removed {p}")
            _say(f"kimi-files: the reuse cache could not be opened ({exc}); removed it")
            return EXIT_OK
        if cache is None:  # pragma: no cover - only --emulator, which the parser refuses
            raise _Usage("no reuse cache for the emulator")
        if args.action == "clear":
            files, texts = cache.counts()
            cache.clear()
            _say(f"kimi-files: forgot {files} file(s) and {texts} text(s) ({cache.path})")
            return EXIT_OK
        entries = cache.entries()
        if args.json:
            _emit_json({"path": os.fsdecode(cache.path), "files": [
                {"sha256": e.sha256, "purpose": e.purpose, "file_id": e.file_id,
                 "filename": e.filename, "bytes": e.size} for e in entries],
                "texts": cache.counts()[1]})
            return EXIT_OK
        files, texts = cache.counts()
        _say(f"kimi-files: {cache.path}: {files} file(s), {texts} extracted text(s)")
        for e in entries:
            _emit(sys.stdout, f"{e.sha256[:12]}  {e.purpose:12} {e.file_id}  {e.filename}  "
                              f"({e.size:,} bytes)")
    return EXIT_OK



def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser("cache", parents=parents,
                        help="show or empty the reuse cache (content -> stored file, texts)")
    ca.add_argument("action", choices=["show", "clear"],
                    help="show: what the cache records; clear: forget it all (and remove a "
                         "cache too damaged to open)")
    ca.add_argument("--json", action="store_true", help="show: as JSON")
    ca.set_defaults(func=_do_cache,
                    not_on_emulator="the emulator keeps no reuse cache (it is new each run)")
