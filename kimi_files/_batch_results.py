"""``results``: the answers of finished batches joined to their documents, after checking the
files belong together; and ``--cleanup``: which of the batches' files may be deleted."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch_build import AtomicWriter, BatchMap, json_bytes, load_map
from ._batch_flow import (
    Manifest,
    _all_batches_steps,
    _file_bytes_steps,
    resolve_target,
    retrieve_batch_steps,
)
from ._batch_input import ENDED_EARLY, JoinedRow, join_results
from ._batch_models import Batch
from ._steps import Blocking, DeleteFile, Say, Steps
from .errors import BatchError, BatchNotFinishedError, ConfigurationError, NotFoundError

if TYPE_CHECKING:
    from ._steps import ClientLike


def refuse_output_onto(output: str | os.PathLike[str], files: Mapping[str, str | None]) -> None:
    """Refuse to write ``output`` onto one of ``files`` (what it is -> its path).

    Raises:
        ConfigurationError: naming the file and what it is.
    """
    target = os.path.realpath(os.fsdecode(output))
    for what, path in files.items():
        if path and os.path.realpath(path) == target:
            raise ConfigurationError(f"-o {os.fsdecode(output)}: that is the batch's {what} "
                                     "file; write the results to another file")


def check_pairing(manifest: Manifest, batches: Sequence[Batch], found: BatchMap | None,
                  map_path: str | None) -> None:
    """Refuse to join results to documents through files that do not belong together: a
    batch that read another input file than the manifest recorded, or a map written with
    another input than the one submitted. Pure.

    Raises:
        ConfigurationError: naming the files and what differs.
    """
    for b, entry in zip(batches, manifest.batches, strict=False):
        recorded = entry.get("input_file_id")
        if recorded and b.input_file_id and b.input_file_id != recorded:
            raise ConfigurationError(
                f"{manifest.path}: batch {b.id} read the input file {b.input_file_id}, not "
                f"{recorded} as the manifest records: this manifest is not that batch's; "
                "nothing was written")
    if found is not None and found.input_sha256 and manifest.input_sha256 and (
            found.input_sha256 != manifest.input_sha256):
        raise ConfigurationError(
            f"{map_path}: this map was written with another input than the one "
            f"{manifest.path} submitted (its SHA-256 differs: another build, other documents "
            "or another prompt): its paths would name the wrong documents; nothing was "
            "written. Give the map of the input submitted (--map)")


@dataclass
class ResultsReport:
    """What ``results`` wrote: one line per request in ``path``; ``counts`` by status
    (``ok``, ``error``, ``missing``); the batches read; the files deleted (``--cleanup``);
    the errors of the batches that failed (their requests are ``missing``)."""

    path: Path
    counts: dict[str, int]
    batches: list[Batch]
    deleted: list[str] = field(default_factory=list)
    failed: list[BatchError] = field(default_factory=list)


def _split_lines(data: bytes) -> list[bytes]:
    return data.splitlines()


def _write_results(path: Path, rows: Iterable[JoinedRow]) -> dict[str, int]:
    counts = {"ok": 0, "error": 0, "missing": 0}
    w = AtomicWriter(path)
    try:
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            w.write(json_bytes(row) + b"\n")
    except BaseException:
        w.abort()
        raise
    w.commit()
    return counts


def results_steps(client: ClientLike, target: str | os.PathLike[str] | Manifest | Batch,
                  output: str | os.PathLike[str], *, ids: Mapping[str, str] | None = None,
                  map_file: str | os.PathLike[str] | None = None,
                  cleanup: bool = False) -> Steps[ResultsReport]:
    """Download every batch's output and error files and write ``output``: one line per
    request (``custom_id``, ``path``, ``status``, ``answer``, ``usage``, ``error``), in the
    input's order, joined to the documents by ``custom_id`` (the map of ``build``, found
    through the manifest, or ``map_file``, or ``ids``), after checking they belong together
    (:func:`check_pairing`). An expired or cancelled batch gives the results it has
    (the rest ``missing``, said once). ``cleanup`` deletes the batches' input, output and
    error files afterwards, and the input files submit itself uploaded (never one it reused,
    nor one of a bare batch id: those are kept, and said).

    Raises:
        BatchNotFinishedError: a batch is still running.
        BatchFailedError: every batch failed (none has results; the errors are in the
            message); ``cleanup`` deletes their files first. When some failed and others
            did not, the others' results are written and ``.failed`` names the failed.
        ConfigurationError: a target that is no batch id nor manifest.
    """
    manifest = yield Blocking(resolve_target, (target,))
    where = os.fsdecode(map_file) if map_file is not None else manifest.map
    refuse_output_onto(output, {"input": manifest.input, "map": where,
                                "manifest": os.fsdecode(manifest.path) if manifest.path else None})
    found: BatchMap | None = None
    if ids is None:
        found, said = yield Blocking(_map_for, (manifest, where))
        if said is not None:
            yield said
    ids = ids if found is None else found.ids
    got = _Downloaded()
    for batch_id in manifest.ids:
        yield from got.batch_steps(client, manifest, batch_id)
    check_pairing(manifest, got.batches, found, where)
    uploaded = {str(b["id"]): b["input_uploaded"] for b in manifest.batches
                if isinstance(b.get("input_uploaded"), bool)}
    if got.failed and len(got.failed) == len(got.batches):  # nothing to write; files may go
        if cleanup:
            deleted = yield from _cleanup_steps(client, got.batches, uploaded)
            yield from _record_cleaned(manifest, deleted)
            if deleted:
                got.failed[0].message += f"; --cleanup deleted {', '.join(deleted)}"
        raise got.failed[0]
    for error in got.failed:
        yield Say.error("%s; its requests have no result (missing)", error)
    rows = join_results(ids or {}, got.outputs, got.errors, missing=ENDED_EARLY + (
        f", or its batch failed ({', '.join(e.batch_id for e in got.failed)})"
        if got.failed else ""))
    counts = yield Blocking(_write_results, (Path(output), rows))
    report = ResultsReport(Path(output), counts, got.batches, failed=got.failed)
    if cleanup:
        report.deleted = yield from _cleanup_steps(client, got.batches, uploaded)
        yield from _record_cleaned(manifest, report.deleted)
    return report


def _map_for(manifest: Manifest, where: str | None) -> tuple[BatchMap | None, Say | None]:
    """The map at ``where``; when there is none, the line that says so (said once: results
    will have no paths)."""
    found = load_map(where)
    if found is None and where:
        return None, Say.warning("%s: the map of custom_id to path cannot be read: results "
                                 "have no path", where)
    if found is None:
        return None, Say.warning("no map of custom_id to path (%s): every result has "
                                 "\"path\": null; give the map build wrote with --map "
                                 "(map_file=)", "a bare batch id" if manifest.path is None
                                 else f"{manifest.path} records none")
    return found, None


@dataclass
class _Downloaded:
    """The batches read, their output and error lines, and the errors of those that failed."""

    batches: list[Batch] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)
    failed: list[BatchError] = field(default_factory=list)

    def batch_steps(self, client: ClientLike, manifest: Manifest, batch_id: str) -> Steps[None]:
        batch = yield from retrieve_batch_steps(client.retry_policy, batch_id)
        self.batches.append(batch)
        if not batch.done:
            c = batch.request_counts
            raise BatchNotFinishedError(
                f"batch {batch.id} is {batch.status} ({c.completed + c.failed} of {c.total} "
                f"requests done): wait for it first (kimi-files batch wait {batch.id})",
                batch_id=batch.id, status=batch.status, errors=batch.errors)
        if batch.status == "failed":  # no results of its own: the others' still are
            error = batch.error()
            assert error is not None
            self.failed.append(error)
            return
        if batch.status != "completed":
            yield Say.warning("%s", batch.error())
        for file_id, into in ((batch.output_file_id, self.outputs),
                              (batch.error_file_id, self.errors)):
            if file_id in manifest.cleaned:
                raise ConfigurationError(
                    f"{manifest.path}: batch {batch.id}'s file {file_id} was deleted by an "
                    "earlier `results --cleanup` (the manifest records it): its results are "
                    "in the results file written then; nothing was written")
            if file_id:
                data = yield from _file_bytes_steps(client.retry_policy, file_id)
                into.extend(_split_lines(data))


def _record_cleaned(manifest: Manifest, deleted: Sequence[str]) -> Steps[None]:
    """The manifest remembers the files ``--cleanup`` deleted: a later ``results`` says so."""
    if deleted and manifest.path is not None:
        manifest.cleaned.extend(d for d in deleted if d not in manifest.cleaned)
        yield Blocking(manifest.save)


#: Why an input file is kept by ``--cleanup``.
KEPT_BUSY = "another batch that is still running reads it too"
KEPT_REUSED = ("submit did not upload it (the account held this content already: it was "
               "reused), so it may be yours")
KEPT_UNKNOWN = ("no manifest says submit uploaded it (a bare batch id), so it may be yours; "
                "delete it yourself with kimi-files delete ID if it is not")


def files_to_clean(batches: Sequence[Batch], others: Iterable[Batch],
                   uploaded: Mapping[str, bool] | None = None
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """(the files of ``batches`` to delete, the input files kept with the reason). An input
    is deleted only when ``uploaded`` (batch id -> whether submit itself uploaded its input,
    as the manifest records) says so, and no other batch still running reads it; output and
    error files are the batches' own. Pure."""
    uploaded = uploaded or {}
    mine = {b.id for b in batches}
    busy = {b.input_file_id for b in others if b.id not in mine and not b.done}
    delete: list[str] = []
    kept: list[tuple[str, str]] = []
    ours = {b.input_file_id for b in batches if uploaded.get(b.id) is True}
    for b in batches:
        for file_id in (b.input_file_id, b.output_file_id, b.error_file_id):
            if not file_id or file_id in delete or file_id in {k for k, _ in kept}:
                continue
            if file_id == b.input_file_id:
                why = (KEPT_BUSY if file_id in busy else None) if file_id in ours else (
                    KEPT_REUSED if b.id in uploaded else KEPT_UNKNOWN)
                if why is not None:
                    kept.append((file_id, why))
                    continue
            delete.append(file_id)
    return delete, kept


def _cleanup_steps(client: ClientLike, batches: Sequence[Batch],
                   uploaded: Mapping[str, bool]) -> Steps[list[str]]:
    """Delete the batches' output and error files, and the inputs submit itself uploaded
    (each once; one already gone is fine), except an input another running batch reads too;
    each input kept is said with the reason; the ids deleted. The reuse cache forgets them."""
    others = yield from _all_batches_steps(client)  # which inputs are still being read
    delete, kept = files_to_clean(batches, others, uploaded)
    for file_id, why in kept:
        yield Say.warning("kept the input file %s: %s", file_id, why)
    deleted: list[str] = []
    for file_id in delete:
        with contextlib.suppress(NotFoundError):
            yield DeleteFile(file_id)
        deleted.append(file_id)
        yield Say.info("deleted %s", file_id)
    cache = yield Blocking(client.reuse_cache)
    if cache is not None and deleted:
        yield Blocking(cache.forget, (deleted,))
    return deleted
