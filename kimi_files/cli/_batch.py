"""``kimi-files batch``: from documents to answers with the platform's Batch API.

::

    kimi-files batch build --model M --prompt TEXT PATH... -o requests.jsonl
    kimi-files batch check requests.jsonl
    kimi-files batch submit requests.jsonl [--completion-window 24h] [--metadata K=V]
    kimi-files batch wait requests.jsonl.batches.json        (or a batch id)
    kimi-files batch results requests.jsonl.batches.json -o results.jsonl [--cleanup]
    kimi-files batch status|cancel ID|MANIFEST;  kimi-files batch list
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._batch_models import Batch
    from .._progress import ProgressBar
    from ._common import Subparsers

from .._progress import shown
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _client,
    _settling,
    _Signalled,
    _Usage,
)
from ._output import _emit, _emit_json, _say


def _paths(args: argparse.Namespace) -> tuple[list[str], int]:
    """The documents (files as named, folders walked as uploads walk them), and how many
    paths were refused (each said)."""
    from .._batch_build import own_batch_file
    from .._scan import collect

    files, rejected = collect(args.paths)
    for r in rejected:
        _say(f"kimi-files: {shown(r.path)}: left out: {r.error}")
    named = {os.path.abspath(os.fsdecode(p)) for p in args.paths}
    out = os.path.abspath(args.output)
    kept: list[str] = []
    for f in files:
        path = os.fsdecode(f)
        full = os.path.abspath(path)
        what = None if full in named else (
            "the output of this build" if full == out else own_batch_file(path))
        if what is not None:  # found by a walk: no document of the user's
            _say(f"kimi-files: {shown(path)}: left out: {what}")
            continue
        kept.append(path)
    return kept, len(rejected)


def _prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is None:
        return str(args.prompt)
    try:
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"--prompt-file {args.prompt_file}: cannot be read ({exc})") from None


def _do_build(args: argparse.Namespace) -> int:
    from .._batch_build import check_model, check_output

    prompt = _prompt(args)
    check_model(args.model, any_model=args.any_model)  # before any document is read
    check_output(Path(args.output), force=args.force)
    paths, refused = _paths(args)
    if not paths:
        raise _Usage("no documents to build requests for")
    with _client(args) as client:  # each document left out is logged (a warning) as it is
        report = _settling("kimi-files batch", lambda: client.batches.build(
            paths, model=args.model, prompt=prompt, output=args.output, strict=args.strict,
            force=args.force, any_model=args.any_model))
    left = f"; {len(report.failed) + refused:,} left out" if report.failed or refused else ""
    _say(f"kimi-files: wrote {len(report.ids):,} request(s) to {shown(str(report.path))} "
         f"(custom_id -> path in {shown(str(report.map_path))}){left}")
    return EXIT_FAILED if report.failed or refused else EXIT_OK


def _do_check(args: argparse.Namespace) -> int:
    from .._batch_flow import check_file

    checker = check_file(args.file, any_model=args.any_model)
    if not checker.ok:
        for v in checker.violations:
            _emit(sys.stdout, f"{shown(args.file)}: {v}")
        if checker.count > len(checker.violations):
            _emit(sys.stdout, f"{shown(args.file)}: ... and {checker.count - len(checker.violations):,}"
                              " more")
        _say(f"kimi-files: {shown(args.file)}: {checker.count:,} refusal(s); fix them before "
             "submitting")
        return EXIT_FAILED
    split = (f"; over 100 MB: submit sends it as {len(checker.parts)} batches"
             if len(checker.parts) > 1 else "")
    _emit(sys.stdout, f"{shown(args.file)}: {checker.requests:,} request(s) for model "
                      f"{checker.model}, {checker.size:,} bytes: every rule holds{split}")
    return EXIT_OK


def _metadata(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _Usage(f"--metadata takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def _do_submit(args: argparse.Namespace) -> int:
    from ..errors import BatchInputError

    try:
        return _submit(args)
    except BatchInputError as exc:  # one line per refusal, as check shows them
        _say(f"kimi-files batch: error: {exc.path}: {len(exc.violations):,} refusal(s); "
             "nothing was sent:")
        for v in exc.violations[:10]:
            _say(f"  {exc.path}: {v}")
        if len(exc.violations) > 10:
            _say(f"  ... and {len(exc.violations) - 10:,} more (kimi-files batch check "
                 f"{exc.path} lists them)")
        return EXIT_FAILED


def _submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        metadata = _metadata(args.metadata)
        manifest = _settling("kimi-files batch", lambda: client.batches.submit(
            args.file, completion_window=args.completion_window, metadata=metadata,
            force=args.force, any_model=args.any_model))
    for b in manifest.batches:
        _emit(sys.stdout, str(b["id"]))
    where = shown(str(manifest.path))
    _say(f"kimi-files: submitted {len(manifest.batches)} batch(es); manifest {where}; next: "
         f"kimi-files batch wait {where}")
    return EXIT_OK


def _line(b: Batch) -> str:
    c = b.request_counts
    return (f"{b.id}  {b.status:<11} {c.completed:,} completed, {c.failed:,} failed of "
            f"{c.total:,}  output {b.output_file_id or '-'}  errors {b.error_file_id or '-'}")


def _show(batches: list[Batch], as_json: bool) -> None:
    for b in batches:
        if as_json:
            _emit_json(dict(b.raw))
        else:
            _emit(sys.stdout, _line(b))
            for e in b.errors:
                _emit(sys.stdout, f"  error {e.get('code')}" + (f" line {e['line']}" if e.get(
                    "line") is not None else "") + f": {e.get('message')}")


def _do_status(args: argparse.Namespace) -> int:
    from .._batch_flow import resolve_target

    ids = resolve_target(args.target).ids  # a bad manifest is said before any key is needed
    with _client(args) as client:
        batches = [client.batches.retrieve(i) for i in ids]
    _show(batches, args.json)
    return EXIT_OK


def _do_cancel(args: argparse.Namespace) -> int:
    from .._batch_flow import resolve_target

    ids = resolve_target(args.target).ids
    with _client(args) as client:
        batches = [client.batches.cancel(i) for i in ids]
    _show(batches, args.json)
    return EXIT_OK


def _do_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.batches.list(limit=args.limit)
    _show(list(found), args.json)
    return EXIT_OK


class _Bar:
    """Completed and failed requests of the batches waited for: a bar on a terminal, else a
    line whenever a status changes."""

    def __init__(self) -> None:
        self.bar: ProgressBar | None = None
        self.said: list[str] = []

    def __call__(self, batches: list[Batch]) -> None:
        from .._progress import ProgressBar

        total = sum(b.request_counts.total for b in batches)
        done = sum(b.request_counts.completed + b.request_counts.failed for b in batches)
        failed = sum(b.request_counts.failed for b in batches)
        if self.bar is None and total:
            self.bar = ProgressBar(total=total, desc="batch", unit="req", unit_scale=False)
        if self.bar is not None:
            self.bar.advance(done - self.bar.n)
            self.bar.note(f"failed {failed:,}")
        statuses = [b.status for b in batches]
        if statuses != self.said and (self.bar is None or not self.bar.drawn):
            self.said = statuses
            _say(f"kimi-files: {', '.join(f'{b.id} {b.status}' for b in batches)}: "
                 f"{done - failed:,} completed, {failed:,} failed of {total:,}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _do_wait(args: argparse.Namespace) -> int:
    from .._batch_flow import raise_for_batches, resolve_target, wait_steps

    manifest = resolve_target(args.target)
    bar = _Bar()
    try:
        with _client(args) as client:
            batches = client.run(wait_steps(client, manifest.ids, on_update=bar,
                                            timeout=args.timeout_wait))
    except (KeyboardInterrupt, _Signalled) as stop:
        bar.close()
        _say(f"kimi-files: stopped waiting; the batch keeps running. Resume with: "
             f"kimi-files batch wait {shown(os.fsdecode(args.target))}")
        return 128 + stop.signum if isinstance(stop, _Signalled) else EXIT_INTERRUPTED
    bar.close()
    _show(batches, args.json)
    if not all(b.done for b in batches):
        _say(f"kimi-files: still running after --max-wait; resume with: kimi-files batch wait "
             f"{shown(os.fsdecode(args.target))}")
        return EXIT_FAILED
    raise_for_batches(batches)
    _say(f"kimi-files: done; next: kimi-files batch results {shown(os.fsdecode(args.target))} "
         "-o results.jsonl")
    return EXIT_OK


def _do_results(args: argparse.Namespace) -> int:
    from .._batch_flow import resolve_target

    target = resolve_target(args.target)
    if args.map is not None:
        from .._batch_build import load_map

        if load_map(args.map) is None:
            raise _Usage(f"--map {args.map}: not a map written by kimi-files batch build")
    with _client(args) as client:
        report = client.batches.results(target, args.output, map_file=args.map,
                                        cleanup=args.cleanup)
    c = report.counts
    _say(f"kimi-files: wrote {sum(c.values()):,} result(s) to {shown(str(report.path))}: "
         f"{c.get('ok', 0):,} answered, {c.get('error', 0):,} failed, {c.get('missing', 0):,} "
         "missing")
    if report.deleted:
        _say(f"kimi-files: deleted the batches' files {', '.join(report.deleted)} (--cleanup)")
    return (EXIT_OK if not c.get("error") and not c.get("missing") and not report.failed
            else EXIT_FAILED)


def _any_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--any-model", action="store_true",
                   help="take a model the platform is not known to serve (default: refuse "
                        "it, as a typo would cost a whole batch)")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="ID|MANIFEST",
                   help="a batch id, or the manifest written by submit (FILE.batches.json)")


def register(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    top = sub.add_parser("batch", help="ask the same question of many documents with the "
                                       "platform's Batch API (build, check, submit, wait, "
                                       "results)")
    cmds = top.add_subparsers(dest="batch_command", required=True, metavar="STEP")
    _add_build(cmds, parents)
    _add_check(cmds)
    _add_submit(cmds, parents)
    for name, func, text in (("status", _do_status, "show a batch's status and counts"),
                             ("cancel", _do_cancel, "cancel a batch (the requests done keep "
                                                    "their results)")):
        p = cmds.add_parser(name, parents=parents, help=text)
        _target(p)
        p.add_argument("--json", action="store_true", help="the batch objects, as JSON lines")
        p.set_defaults(func=func)
    _add_wait(cmds, parents)
    _add_results(cmds, parents)
    _add_list(cmds, parents)


def _add_build(cmds: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    b = cmds.add_parser("build", parents=parents,
                        help="write one chat request per document (its text as the system "
                             "message) and the map custom_id -> path beside it")
    b.add_argument("paths", nargs="+", metavar="PATH",
                   help="documents, and folders walked recursively")
    b.add_argument("--model", required=True, metavar="M", help="the model of every request")
    g = b.add_mutually_exclusive_group(required=True)
    g.add_argument("--prompt", metavar="TEXT", help="the question (the user message)")
    g.add_argument("--prompt-file", metavar="F", help="the question, read from a file")
    b.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the input file to write (*.jsonl)")
    b.add_argument("--strict", action="store_true",
                   help="fail on a document the service cannot read (default: leave it out)")
    b.add_argument("--force", action="store_true",
                   help="overwrite an -o file that is no input file a build wrote")
    _any_model(b)
    b.set_defaults(func=_do_build)


def _add_check(cmds: Subparsers) -> None:
    c = cmds.add_parser("check", help="check every rule of an input file (nothing is sent)")
    c.add_argument("file", metavar="FILE", help="the input file to check (*.jsonl)")
    c.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more to stderr (-v: info, -vv: debug)")
    _any_model(c)
    c.set_defaults(func=_do_check)


def _add_submit(cmds: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    from .._batch_models import DEFAULT_COMPLETION_WINDOW

    s = cmds.add_parser("submit", parents=parents,
                        help="check, upload (purpose batch) and create the batch; over 100 MB "
                             "several, with a manifest")
    s.add_argument("file", metavar="FILE", help="the input file (*.jsonl), as build writes it")
    s.add_argument("--completion-window", default=DEFAULT_COMPLETION_WINDOW, metavar="W",
                   help=f"time the platform has to finish (default {DEFAULT_COMPLETION_WINDOW})")
    s.add_argument("--metadata", action="append", metavar="K=V",
                   help="a metadata pair of the batch (at most 16)")
    s.add_argument("--force", action="store_true",
                   help="submit again an input whose manifest lists batches already (they "
                        "run, and are billed, again); without it a re-run resumes and "
                        "creates only the parts not created yet")
    _any_model(s)
    s.set_defaults(func=_do_submit)


def _add_wait(cmds: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    w = cmds.add_parser("wait", parents=parents,
                        help="poll until the batch is done, with a bar of completed and failed "
                             "requests (Ctrl-C leaves it running)")
    _target(w)
    w.add_argument("--max-wait", dest="timeout_wait", type=float, metavar="SECONDS",
                   help="stop waiting after this long (the batch keeps running)")
    w.add_argument("--json", action="store_true", help="the batch objects, as JSON lines")
    w.set_defaults(func=_do_wait)


def _add_results(cmds: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    r = cmds.add_parser("results", parents=parents,
                        help="download the answers and join them to the documents: one JSON "
                             "line per request")
    _target(r)
    r.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to write the results, one JSON line per request")
    r.add_argument("--map", metavar="FILE",
                   help="the map written by build (default: the manifest's)")
    r.add_argument("--cleanup", action="store_true",
                   help="then delete the batches' input, output and error files (they count "
                        "against the account's 1,000 files)")
    r.set_defaults(func=_do_results)


def _add_list(cmds: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    ls = cmds.add_parser("list", parents=parents, help="the account's batches, newest first")
    ls.add_argument("--limit", type=int, default=20, metavar="N",
                    help="show at most N batches (default 20)")
    ls.add_argument("--json", action="store_true", help="the batch objects, as JSON lines")
    ls.set_defaults(func=_do_list)
