"""``kimi-files content``: print or save extracted text, under names a server cannot steer."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import KimiError

if TYPE_CHECKING:
    from ._common import Subparsers

from ._common import EXIT_FAILED, EXIT_OK, _client, _Usage
from ._output import _raw, _say, write_whole

# --- content: file names a server cannot steer ---------------------------------------------------

#: Never in an output name: separators, what Windows forbids, and every unsafe character.
_NOT_IN_NAMES = re.compile('[/\\\\<>:"|?*\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e'
                           "\u2066-\u2069\ud800-\udfff]")


def _name_part(text: str, max_bytes: int) -> str:
    """``text`` as part of a file name: unsafe characters become ``_``, no leading dot or
    space (no hidden file, never ``.`` or ``..``), at most ``max_bytes`` bytes of UTF-8;
    ``file`` when nothing is left."""
    cleaned = _NOT_IN_NAMES.sub("_", text).strip(". ")
    cleaned = cleaned.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip(". ")
    return cleaned or "file"


def output_name(file_id: str, filename: str, taken: set[str]) -> str:
    """The name ``content -o DIR`` writes a file's text to: ``ID-NAME.txt``, one path
    component (no separator, not hidden, never ``.`` or ``..``), at most 255 bytes, and not
    one of ``taken`` (compared without case, for case-insensitive file systems): a ``-2``,
    ``-3``, ... is added until it is new. Adds the name to ``taken``. Pure."""
    stem = f"{_name_part(file_id, 80)}-{_name_part(filename, 150)}"
    name, n = f"{stem}.txt", 1
    while name.casefold() in taken:
        n += 1
        name = f"{stem}-{n}.txt"
    taken.add(name.casefold())
    return name


def _write_inside(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``folder/name``, which must be directly inside ``folder``; a file of
    that name is replaced whole (never written through a link it may be)."""
    target = folder / name
    # one component that names an entry of the folder itself; never resolved, so a link of
    # that name left in the folder is replaced, not followed
    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name) \
            or os.path.dirname(os.path.normpath(target)) != os.path.normpath(folder):
        raise OSError(f"{name!r} is not a plain file name")  # pragma: no cover - output_name
    write_whole(target, text, prefix=".kimi-content-")
    return target


def _do_content(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise _Usage("give file ids, or --all with --output DIR")
    if args.all and not args.output:
        raise _Usage("--all needs --output DIR")
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Usage(f"cannot use {args.output} as the output folder: "
                         f"{exc.strerror or exc}") from None
    with _client(args) as client:
        names: dict[str, str] = {}
        batch: set[str] = set()  # files whose content is their JSONL as stored
        if args.ids:
            ids = list(dict.fromkeys(args.ids))
        else:
            listing = client.list().data
            ids = list(dict.fromkeys(f.id for f in listing))
            for f in listing:
                names.setdefault(f.id, f.filename)
            batch = {f.id for f in listing if f.purpose == "batch"}
        failed = False
        taken: set[str] = set()
        for fid in ids:
            try:
                content = client.content(fid, raw=args.raw or fid in batch)
            except KimiError as exc:
                _say(f"kimi-files: {fid}: {exc}")
                failed = True
                continue
            if out_dir is None:
                from .._progress import write_line

                write_line(_raw(content.text), sys.stdout)
                continue
            name = output_name(fid, names.get(fid) or content.filename or fid, taken)
            try:
                target = _write_inside(out_dir, name, content.text)
            except OSError as exc:
                _say(f"kimi-files: {fid}: cannot write {out_dir / name}: {exc.strerror or exc}")
                failed = True
                continue
            _say(f"kimi-files: wrote {target}")
    return EXIT_FAILED if failed else EXIT_OK



def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    co = sub.add_parser("content", parents=parents, help="print or save extracted text")
    co.add_argument("ids", nargs="*", metavar="ID",
                    help="the ids of the files whose extracted text to print or save")
    co.add_argument("--all", action="store_true", help="every file (needs --output)")
    co.add_argument("-o", "--output", metavar="DIR",
                    help="write ID-NAME.txt files into DIR (names made safe; never outside DIR)")
    co.add_argument("--raw", action="store_true",
                    help="the body as stored, for batch files (their JSONL); without it an "
                         "answer that is not the extracted-text document is an error")
    co.set_defaults(func=_do_content)
