"""The steps of the Batch API (:mod:`kimi_files._steps`): its endpoints, and the way from
documents to answers: build, check, submit, wait, results. Written once for both clients."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._steps import Blocking, DeleteFile, Steps, Wait
from .batch_build import (
    AtomicWriter,
    json_bytes,
    manifest_path_for,
    map_path_for,
    write_json,
)
from .batch_input import (
    CHAT_ENDPOINT,
    ENDED_EARLY,
    MAX_INPUT_BYTES,
    MAX_METADATA_KEYS,
    InputChecker,
    join_results,
)
from .batch_models import (
    DEFAULT_COMPLETION_WINDOW,
    MANIFEST_KIND,
    POLL_FACTOR,
    POLL_FIRST,
    POLL_MAX,
    Batch,
    BatchList,
)
from .errors import (
    BatchAlreadySubmittedError,
    BatchError,
    BatchInputError,
    BatchNotFinishedError,
    ConfigurationError,
    KimiError,
    NotFoundError,
)
from .options import UploadOptions
from .retry import may_have_stored

if TYPE_CHECKING:
    from ._steps import ClientLike
    from .config import RetryPolicy


log = logging.getLogger("kimi_files")

# --- the endpoints' steps -----------------------------------------------------------------------


def _batch_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not batch_id.strip() or set(batch_id.strip()) <= {"."}:
        raise ConfigurationError(f"Invalid batch id {batch_id!r}")
    return quote(batch_id.strip(), safe="")


def _parse_batch(response: Any) -> Batch:
    from ._endpoints import json_of

    return Batch.from_dict(json_of(response))


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The metadata, checked: at most 16 keys, strings only. Pure.

    Raises:
        ConfigurationError: too many keys, or a key or value that is not a string.
    """
    if metadata is None:
        return {}
    if len(metadata) > MAX_METADATA_KEYS:
        raise ConfigurationError(f"a batch takes at most {MAX_METADATA_KEYS} metadata keys, "
                                 f"not {len(metadata)}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigurationError(f"batch metadata takes strings, not {k!r}: {v!r}")
    return dict(metadata)


def create_batch_steps(policy: RetryPolicy, input_file_id: str, *, endpoint: str = CHAT_ENDPOINT,
                       completion_window: str = DEFAULT_COMPLETION_WINDOW,
                       metadata: Mapping[str, str] | None = None) -> Steps[Batch]:
    """``POST /v1/batches``. Retried only when the request surely created nothing (a 429, no
    connection): after a lost answer a batch may exist, and a second would run twice."""
    from ._endpoints import call_steps

    body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": endpoint,
                            "completion_window": completion_window}
    if metadata:
        body["metadata"] = check_metadata(metadata)
    try:
        return (yield from call_steps("POST", "batches", _parse_batch, policy, once_sent=True,
                                      json=body))
    except KimiError as exc:
        if may_have_stored(exc):
            exc.message += ("; the batch may have been created all the same, so it is not sent "
                            "again: `kimi-files batch list` (client.batches.list()) shows it")
        raise


def retrieve_batch_steps(policy: RetryPolicy, batch_id: str) -> Steps[Batch]:
    from ._endpoints import call_steps

    return (yield from call_steps("GET", f"batches/{_batch_id(batch_id)}", _parse_batch, policy))


def list_batches_steps(policy: RetryPolicy, *, limit: int | None = None,
                       after: str | None = None) -> Steps[BatchList]:
    from ._endpoints import call_steps, json_of

    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if after:
        params["after"] = after

    def parse(response: Any) -> BatchList:
        data = json_of(response)
        items = data.get("data")
        return BatchList(tuple(Batch.from_dict(b) for b in items if isinstance(b, Mapping))
                         if isinstance(items, list) else (), bool(data.get("has_more")))

    return (yield from call_steps("GET", "batches", parse, policy, params=params))


def cancel_batch_steps(policy: RetryPolicy, batch_id: str) -> Steps[Batch]:
    """``POST /v1/batches/{id}/cancel`` (asking twice is harmless: retried)."""
    from ._endpoints import call_steps

    return (yield from call_steps("POST", f"batches/{_batch_id(batch_id)}/cancel", _parse_batch,
                                  policy))


def _file_bytes_steps(policy: RetryPolicy, file_id: str) -> Steps[bytes]:
    from ._endpoints import call_steps, quoted_id

    return (yield from call_steps("GET", f"files/{quoted_id(file_id)}/content", lambda r: r.content,
                                  policy))


# --- check ----------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterable[bytes]:
    with path.open("rb") as fh:
        yield from fh


def known_models(any_model: bool = False) -> Collection[str] | None:
    """The models the platform is known to serve (None with ``any_model``: no name is
    checked)."""
    from .tokens import CONTEXT_WINDOWS

    return None if any_model else frozenset(CONTEXT_WINDOWS)


def check_file(path: str | os.PathLike[str], limit: int = MAX_INPUT_BYTES,
               any_model: bool = False) -> InputChecker:
    """Every rule of the platform's input file (see :data:`~kimi_files.batch_input.RULES`),
    read once, line by line; nothing is sent. The checker holds the refusals and the parts
    the input would be sent as. ``any_model`` lets a model not in the known list pass.

    Raises:
        BatchInputError: the file cannot be read (rule ``readable``).
    """
    p = Path(path)
    try:
        return InputChecker(p.name, limit=limit, models=known_models(any_model)).feed_all(
            _lines(p))
    except OSError as exc:
        raise BatchInputError(f"{os.fsdecode(path)}: cannot be read ({exc.strerror or exc})",
                              path=os.fsdecode(path), rule="readable") from None


def input_error(path: str, checker: InputChecker) -> BatchInputError:
    """The error for an input that breaks rules: the first few refusals, and the count."""
    shown = "\n".join(f"  {path}: {v}" for v in checker.violations[:10])
    more = f"\n  ... and {checker.count - 10:,} more" if checker.count > 10 else ""
    first = checker.violations[0]
    return BatchInputError(f"{path}: {checker.count:,} refusal(s); nothing was sent:\n{shown}{more}",
                           path=path, rule=first.rule, violations=tuple(checker.violations))


# --- submit ---------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """The batches an input file was sent as (one unless it was over 100 MB), and where its
    map is: what ``wait`` and ``results`` take instead of a batch id.

    ``input_sha256`` is the input's content when it was submitted, ``parts`` how many batches
    it is sent as; ``uploads`` records each part's input file (and whether submit itself
    uploaded it) before its batch is created, so a re-run resumes; ``earlier`` keeps the
    batches a ``--force`` submit replaced; ``cleaned`` the files ``--cleanup`` deleted."""

    input: str
    map: str | None
    batches: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    input_sha256: str | None = None
    parts: int = 0
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    earlier: list[dict[str, Any]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [str(b["id"]) for b in self.batches]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": MANIFEST_KIND, "version": 2, "input": self.input, "map": self.map,
                "input_sha256": self.input_sha256, "parts": self.parts,
                "batches": self.batches, "uploads": self.uploads, "earlier": self.earlier,
                "cleaned": self.cleaned}

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Raises:
            ConfigurationError: not a readable manifest.
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{p}: not a readable batch manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND or not isinstance(
                data.get("batches"), list):
            raise ConfigurationError(f"{p}: not a kimi-files batch manifest (written by "
                                     "kimi-files batch submit)")

        def entries(key: str) -> list[dict[str, Any]]:
            got = data.get(key)
            return [b for b in got if isinstance(b, dict) and b.get("id")] if isinstance(
                got, list) else []

        uploads = data.get("uploads")
        cleaned = data.get("cleaned")
        sha = data.get("input_sha256")
        parts = data.get("parts")
        return cls(str(data.get("input") or ""), data.get("map"), entries("batches"), p,
                   sha if isinstance(sha, str) else None,
                   parts if isinstance(parts, int) else 0,
                   {str(k): v for k, v in uploads.items() if isinstance(v, dict)}
                   if isinstance(uploads, dict) else {},
                   entries("earlier"),
                   [str(x) for x in cleaned] if isinstance(cleaned, list) else [])


def _write_parts(path: Path, parts: Sequence[int]) -> list[Path]:
    """The input cut into files of the given numbers of lines, in a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="kimi-batch-parts-"))
    out: list[Path] = []
    with path.open("rb") as src:
        for n, count in enumerate(parts, 1):
            part = folder / f"{path.stem}.part{n}of{len(parts)}.jsonl"
            with part.open("wb") as dst:
                for _ in range(count):
                    dst.write(src.readline())
            out.append(part)
    return out


def _remove_parts(parts: Sequence[Path]) -> None:
    for part in parts:
        part.unlink(missing_ok=True)
    if parts:
        with_folder = parts[0].parent
        with contextlib.suppress(OSError):
            with_folder.rmdir()


@dataclass(frozen=True)
class BatchMap:
    """A map written by ``build``: custom_id -> path, and the SHA-256 of the input it was
    written with (None from an older kimi-files)."""

    ids: dict[str, str]
    input_sha256: str | None


def load_map(path: str | os.PathLike[str] | None) -> BatchMap | None:
    """The map at ``path``; None when there is none or it is no map."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ids = data.get("ids") if isinstance(data, dict) else None
    if not isinstance(ids, dict):
        return None
    sha = data.get("input_sha256")
    return BatchMap({str(k): str(v) for k, v in ids.items()},
                    sha if isinstance(sha, str) else None)


def _load_map(path: str | None) -> dict[str, str] | None:
    found = load_map(path)
    return None if found is None else found.ids


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


def submit_steps(client: ClientLike, path: str | os.PathLike[str], *,
                 completion_window: str = DEFAULT_COMPLETION_WINDOW,
                 metadata: Mapping[str, str] | None = None,
                 limit: int = MAX_INPUT_BYTES, progress: bool | None = False,
                 force: bool = False, any_model: bool = False) -> Steps[Manifest]:
    """Check the input (every rule), upload it with purpose ``batch`` (reused when the
    account holds this content) and create its batch; an input over ``limit`` (100 MB) is
    cut between lines into several batches. The manifest (beside the input) records each
    part's upload before its batch is created and each batch after, so a crash loses no
    batch id and a re-run resumes: the parts created already are not created again.

    An input whose manifest lists batches already (all its parts, or a content that has
    changed since) is refused, naming them and their statuses, unless ``force`` (the new
    batches run every request again; the manifest keeps the old ones under ``earlier``).

    Raises:
        BatchInputError: the input breaks a rule (nothing was sent).
        BatchAlreadySubmittedError: submitted before (nothing was sent).
        ConfigurationError: bad metadata.
        KimiError: an upload or a create failed (the batches created before are in the
            manifest).
    """
    from ._hashing import sha256_of

    metadata = check_metadata(metadata)
    p = Path(path)
    shown = os.fsdecode(path)
    checker: InputChecker = yield Blocking(check_file, (p, limit, any_model))
    if not checker.ok:
        raise input_error(shown, checker)
    sha: str = yield Blocking(sha256_of, (p,))
    map_file = map_path_for(p)
    beside: BatchMap | None = yield Blocking(load_map, (map_file,))
    if beside is not None and beside.input_sha256 not in (None, sha):
        log.warning("%s: written with another input than %s (another build): not recorded "
                    "in the manifest; results will name no paths unless given the right map "
                    "(--map)", map_file, shown)
        beside = None
    manifest = Manifest(os.path.abspath(p), os.path.abspath(map_file) if beside is not None
                        else None, path=manifest_path_for(p), input_sha256=sha,
                        parts=len(checker.parts))
    previous: Manifest | None = yield Blocking(_previous_manifest, (manifest.path,))
    if previous is not None:
        yield from _resume_or_refuse(client, shown, previous, manifest, force)
    parts = [p]
    if len(checker.parts) > 1:
        log.warning("%s: %s bytes is over the %s MB a batch takes: sending it as %d batches",
                    shown, f"{checker.size:,}", limit // (1024 * 1024), len(checker.parts))
        parts = yield Blocking(_write_parts, (p, checker.parts))
    options = UploadOptions(purpose="batch", progress=progress)
    created = {b.get("index") for b in manifest.batches}
    try:
        from .uploader import upload_steps

        for index, (part, lines) in enumerate(zip(parts, checker.parts, strict=True), 1):
            if index in created:
                continue
            uploaded = yield from upload_steps(client, part, options)
            before = manifest.uploads.get(str(index), {})
            # reused, but what a run of this submit uploaded itself: still submit's own
            mine = not uploaded.reused or (before.get("input_file_id") == uploaded.id
                                           and before.get("input_uploaded") is True)
            if not mine:
                log.warning("%s: the account holds this input already (%s): reused, so "
                            "results --cleanup will keep it", part.name, uploaded.id)
            manifest.uploads[str(index)] = {"input_file_id": uploaded.id,
                                            "input_uploaded": mine}
            yield Blocking(manifest.save)
            batch = yield from create_batch_steps(client.retry_policy, uploaded.id,
                                                  completion_window=completion_window,
                                                  metadata=metadata)
            manifest.batches.append({"id": batch.id, "input_file_id": uploaded.id,
                                     "input_uploaded": mine, "index": index,
                                     "lines": lines, "part": part.name})
            yield Blocking(manifest.save)
    finally:  # no yield here: a closed generator (Ctrl-C, a cancelled task) may not
        if len(parts) > 1:
            _remove_parts(parts)
    return manifest


def _previous_manifest(path: Path | None) -> Manifest | None:
    if path is None or not path.is_file():
        return None
    try:
        found = Manifest.load(path)
    except ConfigurationError:
        return None
    return found if found.batches or found.uploads else None


def _all_batches_steps(client: ClientLike) -> Steps[list[Batch]]:
    """Every batch of the account, newest first."""
    found: list[Batch] = []
    after: str | None = None
    while True:
        page = yield from list_batches_steps(client.retry_policy, limit=100, after=after)
        found.extend(page.data)
        if not page.has_more or not page.data:
            return found
        after = page.data[-1].id


def resume_plan(previous: Manifest, sha: str, parts: int) -> str:
    """What a submit does with the manifest an earlier submit of this input left: ``resume``
    (the same content, some parts not created yet), ``done`` (every part created) or
    ``other`` (another content, or a manifest that does not say). Pure."""
    if previous.input_sha256 != sha or previous.parts != parts:
        return "other"
    made = {b.get("index") for b in previous.batches}
    return "done" if all(i in made for i in range(1, parts + 1)) else "resume"


def _resume_or_refuse(client: ClientLike, shown: str, previous: Manifest, manifest: Manifest,
                      force: bool) -> Steps[None]:
    plan = resume_plan(previous, manifest.input_sha256 or "", manifest.parts)
    manifest.earlier = list(previous.earlier)
    if plan == "resume":
        made = {b.get("index") for b in previous.batches}
        known = {str(b["id"]) for b in (*previous.batches, *previous.earlier)}
        lost: dict[str, str] = {}
        if not force:  # a part uploaded, its batch not recorded: was the answer lost?
            pending = {str(u.get("input_file_id")) for i, u in previous.uploads.items()
                       if i.isdigit() and int(i) not in made}
            if pending:
                for b in (yield from _all_batches_steps(client)):
                    if b.input_file_id in pending and b.id not in known:
                        lost[b.id] = b.status
        if lost:
            raise BatchAlreadySubmittedError(
                f"{shown}: a part's batch may have been created before its answer was lost: "
                f"{_statuses(lost)} read(s) its input and no manifest lists it. Check it "
                "(kimi-files batch status ID); --force creates the part again (run twice, "
                "billed twice)", batches=lost)
        manifest.batches = list(previous.batches)
        manifest.uploads = dict(previous.uploads)
        if previous.batches:
            log.warning("%s: resuming the submit: part(s) %s created already as %s; "
                        "creating the rest", shown,
                        ", ".join(str(b.get("index")) for b in previous.batches),
                        ", ".join(previous.ids))
        return
    if not previous.batches:  # uploads only, of another content: nothing runs
        return
    statuses: dict[str, str] = {}
    for batch_id in previous.ids:
        try:
            statuses[batch_id] = (yield from retrieve_batch_steps(client.retry_policy,
                                                                  batch_id)).status
        except NotFoundError:
            statuses[batch_id] = "not found"
    what = ("was submitted already as" if plan == "done" else
            "has changed since it was submitted (or its manifest is older) as")
    if not force:
        raise BatchAlreadySubmittedError(
            f"{shown} {what} {_statuses(statuses)} (manifest {previous.path}); submitting "
            "it again would run and bill every request again. Wait for them (kimi-files "
            "batch wait MANIFEST) and read the results; --force submits it again as new "
            "batches", batches=statuses)
    log.warning("%s %s %s: submitting it again (--force); the manifest keeps them under "
                "\"earlier\"", shown, what, _statuses(statuses))
    manifest.earlier.extend(previous.batches)
    manifest.uploads = dict(previous.uploads)  # an input an earlier run uploaded stays its own


def _statuses(batches: Mapping[str, str]) -> str:
    return ", ".join(f"batch {i} ({s})" for i, s in batches.items())


def resolve_target(target: str | os.PathLike[str] | Manifest | Batch) -> Manifest:
    """A batch id, a manifest file (written by submit) or a :class:`Manifest`, as a
    manifest (one with no map for a bare id).

    Raises:
        ConfigurationError: a path that is no manifest.
    """
    if isinstance(target, Manifest):
        return target
    if isinstance(target, Batch):
        return Manifest("", None, [{"id": target.id, "input_file_id": target.input_file_id}])
    text = os.fsdecode(target)
    if os.path.exists(text):
        return Manifest.load(text)
    if os.sep in text or text.endswith(".json"):
        raise ConfigurationError(f"{text}: no such manifest file")
    _batch_id(text)  # refuses an empty or dotted id
    return Manifest("", None, [{"id": text}])


# --- wait -----------------------------------------------------------------------------------------


def poll_delay(polls: int, *, first: float = POLL_FIRST, factor: float = POLL_FACTOR,
               most: float = POLL_MAX) -> float:
    """Seconds before look number ``polls + 1`` at a running batch: ``first``, growing by
    ``factor`` each time, at most ``most``. Pure."""
    return float(min(most, first * factor ** max(0, polls)))


def wait_steps(client: ClientLike, ids: Sequence[str], *,
               on_update: Callable[[list[Batch]], None] | None = None,
               timeout: float | None = None, first: float = POLL_FIRST,
               most: float = POLL_MAX) -> Steps[list[Batch]]:
    """Poll the batches until every one is done (or ``timeout`` seconds of waiting passed);
    their last objects, in order. ``on_update`` sees them after every look.

    The waits are the client's (:func:`kimi_files.retry.sleep`): ``waiting_disabled()``
    skips them, and a stop asked for ends the wait early (the batches keep running)."""
    latest: dict[str, Batch] = {}
    polls = 0
    waited = 0.0
    while True:
        for batch_id in ids:
            if batch_id not in latest or not latest[batch_id].done:
                latest[batch_id] = yield from retrieve_batch_steps(client.retry_policy, batch_id)
        batches = [latest[i] for i in ids]
        if on_update is not None:
            on_update(batches)
        if all(b.done for b in batches):
            return batches
        delay = poll_delay(polls, first=first, most=most)
        if timeout is not None and waited + delay > timeout:
            return batches
        if (yield Wait(delay)) is False:
            return batches
        polls += 1
        waited += delay


def raise_for_batches(batches: Sequence[Batch]) -> None:
    """Raise the error of the first batch that failed or expired or was cancelled.

    Raises:
        BatchError: as :meth:`Batch.error`.
    """
    for b in batches:
        error = b.error()
        if error is not None:
            raise error


# --- results --------------------------------------------------------------------------------------


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


def _write_results(path: Path, rows: Iterable[dict[str, Any]]) -> dict[str, int]:
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
    found: BatchMap | None = None
    where = os.fsdecode(map_file) if map_file is not None else manifest.map
    refuse_output_onto(output, {"input": manifest.input, "map": where,
                                "manifest": os.fsdecode(manifest.path) if manifest.path else None})
    if ids is None:
        found = yield Blocking(load_map, (where,))
        if found is None and where:
            log.warning("%s: the map of custom_id to path cannot be read: results have no path",
                        where)
        elif found is None:
            log.warning("no map of custom_id to path (%s): every result has \"path\": null; "
                        "give the map build wrote with --map (map_file=)",
                        "a bare batch id" if manifest.path is None else
                        f"{manifest.path} records none")
        ids = None if found is None else found.ids
    batches: list[Batch] = []
    outputs: list[bytes] = []
    errors: list[bytes] = []
    failed: list[BatchError] = []
    for batch_id in manifest.ids:
        batch = yield from retrieve_batch_steps(client.retry_policy, batch_id)
        batches.append(batch)
        if not batch.done:
            c = batch.request_counts
            raise BatchNotFinishedError(
                f"batch {batch.id} is {batch.status} ({c.completed + c.failed} of {c.total} "
                f"requests done): wait for it first (kimi-files batch wait {batch.id})",
                batch_id=batch.id, status=batch.status, errors=batch.errors)
        if batch.status == "failed":  # no results of its own: the others' still are
            error = batch.error()
            assert error is not None
            failed.append(error)
            continue
        if batch.status != "completed":
            log.warning("%s", batch.error())
        for file_id, into in ((batch.output_file_id, outputs), (batch.error_file_id, errors)):
            if file_id in manifest.cleaned:
                raise ConfigurationError(
                    f"{manifest.path}: batch {batch.id}'s file {file_id} was deleted by an "
                    "earlier `results --cleanup` (the manifest records it): its results are "
                    "in the results file written then; nothing was written")
            if file_id:
                data = yield from _file_bytes_steps(client.retry_policy, file_id)
                into.extend(_split_lines(data))
    check_pairing(manifest, batches, found, where)
    uploaded = {str(b["id"]): b["input_uploaded"] for b in manifest.batches
                if isinstance(b.get("input_uploaded"), bool)}
    if failed and len(failed) == len(batches):  # nothing to write; its files may go
        if cleanup:
            deleted = yield from _cleanup_steps(client, batches, uploaded)
            yield from _record_cleaned(manifest, deleted)
            if deleted:
                failed[0].message += f"; --cleanup deleted {', '.join(deleted)}"
        raise failed[0]
    for error in failed:
        log.error("%s; its requests have no result (missing)", error)
    rows = join_results(ids or {}, outputs, errors, missing=ENDED_EARLY + (
        f", or its batch failed ({', '.join(e.batch_id for e in failed)})" if failed else ""))
    counts = yield Blocking(_write_results, (Path(output), rows))
    report = ResultsReport(Path(output), counts, batches, failed=failed)
    if cleanup:
        report.deleted = yield from _cleanup_steps(client, batches, uploaded)
        yield from _record_cleaned(manifest, report.deleted)
    return report


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
        log.warning("kept the input file %s: %s", file_id, why)
    deleted: list[str] = []
    for file_id in delete:
        with contextlib.suppress(NotFoundError):
            yield DeleteFile(file_id)
        deleted.append(file_id)
        log.info("deleted %s", file_id)
    cache = yield Blocking(client.reuse_cache)
    if cache is not None and deleted:
        yield Blocking(cache.forget, (deleted,))
    return deleted



def _check_steps(path: str | os.PathLike[str], any_model: bool = False) -> Steps[InputChecker]:
    checker: InputChecker = yield Blocking(check_file, (path, MAX_INPUT_BYTES, any_model))
    if not checker.ok:
        raise input_error(os.fsdecode(path), checker)
    return checker

