"""``kimi-files state [list] | clean``: the state and cache files of this machine."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._state_files import StateFile
    from ._common import Subparsers

from ._common import EXIT_FAILED, EXIT_OK, _days, _Usage, _when
from ._output import _emit, _emit_json, _say


def _unreachable(files: list[StateFile]) -> set[str]:
    """Accounts of a loopback base URL (an emulator's) on whose port nothing answers; an
    account of any other host is never called unreachable (that would take the network)."""
    from .._state_files import answers, loopback_address

    addresses = {f.account: loopback_address(f.account) for f in files}
    return {account for account, address in addresses.items()
            if address is not None and not answers(address)}


def _row(f: StateFile) -> dict[str, object]:
    return {"path": os.fsdecode(f.path), "kind": f.kind, "account": f.account,
            "bytes": f.size, "last_used": int(f.last_used), "in_use": f.in_use}


def _do_state(args: argparse.Namespace) -> int:
    from .._state_files import (
        clean_choice,
        default_state_dir,
        drop_orphan_markers,
        remove_account_files,
        state_files,
    )

    folder = default_state_dir()
    files = state_files(folder)
    if args.action == "list":
        if args.json:
            for f in files:
                _emit_json(_row(f))
            return EXIT_OK
        _say(f"kimi-files: {folder}: {len(files)} state and cache file(s), "
             f"{sum(f.size for f in files):,} bytes")
        for f in files:
            busy = "  (in use)" if f.in_use else ""
            _emit(sys.stdout, f"{f.kind:5}  {f.account}  {f.size:>12,} bytes  last used "
                              f"{_when(int(f.last_used))}{busy}")
        return EXIT_OK
    if args.older_than is None and not args.unreachable:
        raise _Usage("state clean: say what to remove: --older-than DAYS and/or --unreachable")
    gone = _unreachable(files) if args.unreachable else set()
    chosen = clean_choice(files, now=time.time(), older_than_days=args.older_than,
                          unreachable=gone)
    code = EXIT_OK
    for f in chosen:
        why = "unreachable" if f.account in gone else f"unused for over {args.older_than:g} days"
        if args.dry_run:
            _emit(sys.stdout, f"would remove {f.path} ({f.kind}, {f.size:,} bytes, {why})")
            continue
        from ..errors import StateError

        try:
            removed = remove_account_files(f)
        except StateError as exc:
            _say(f"kimi-files state clean: kept {f.path}: {exc}")
            code = EXIT_FAILED
            continue
        for p in removed:
            _emit(sys.stdout, f"removed {p} ({why})")
    if not args.dry_run:
        drop_orphan_markers(folder)
    held = [f for f in files if f.in_use]
    if held:
        _say(f"kimi-files state clean: {len(held)} file(s) in use by a live run, left alone")
    if not chosen:
        _say("kimi-files state clean: nothing to remove")
    return code


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    st = sub.add_parser(
        "state", help="list or clean the state and reuse-cache files of this machine",
        description="The state stores and reuse caches in the state folder ($KIMI_FILES_STATE_DIR, "
                    "else $XDG_STATE_HOME/kimi-files), each recognised as ours by its header; "
                    "clean never removes another program's file, nor one a live run holds.")
    st.add_argument("action", nargs="?", choices=["list", "clean"], default="list",
                    help="list (default): each file's account, size and last use; clean: "
                         "remove those --older-than or --unreachable")
    st.add_argument("--older-than", type=_days, metavar="DAYS",
                    help="clean: files unused for more than DAYS days")
    st.add_argument("--unreachable", action="store_true",
                    help="clean: files of an emulator's loopback base URL on whose port "
                         "nothing answers (other hosts are never probed)")
    st.add_argument("--dry-run", action="store_true", help="clean: say what would go, remove "
                                                           "nothing")
    st.add_argument("--json", action="store_true", help="list: one JSON object per file")
    st.add_argument("-v", "--verbose", action="count", default=0,
                    help="log more to stderr (-v: info, -vv: debug)")
    st.set_defaults(func=_do_state, emulator=False)
