"""The steps of the Batch API (:mod:`kimi_files._steps`): its endpoints, and the way from
documents to answers: build, check, submit, wait, results. Written once for both clients."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._batch_build import (
    load_map,
    manifest_path_for,
    map_path_for,
    write_json,
)
from ._batch_input import (
    CHAT_ENDPOINT,
    MAX_INPUT_BYTES,
    MAX_METADATA_KEYS,
    InputChecker,
)
from ._batch_models import (
    DEFAULT_COMPLETION_WINDOW,
    MANIFEST_KIND,
    POLL_FACTOR,
    POLL_FIRST,
    POLL_MAX,
    Batch,
    BatchList,
)
from ._options import UploadOptions
from ._retry import may_have_stored
from ._steps import Blocking, Say, Steps, Wait
from .errors import (
    BatchAlreadySubmittedError,
    BatchInputError,
    ConfigurationError,
    KimiError,
    NotFoundError,
)

if TYPE_CHECKING:
    import httpx

    from ._config import RetryPolicy
    from ._steps import ClientLike


# --- the endpoints' steps -----------------------------------------------------------------------


def _batch_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not batch_id.strip() or set(batch_id.strip()) <= {"."}:
        raise ConfigurationError(f"Invalid batch id {batch_id!r}")
    return quote(batch_id.strip(), safe="")


def _parse_batch(response: httpx.Response) -> Batch:
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

    body: dict[str, object] = {"input_file_id": input_file_id, "endpoint": endpoint,
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
    from ._endpoints import call_steps, has_more, json_of

    params: dict[str, str | int] = {}
    if limit is not None:
        params["limit"] = limit
    if after:
        params["after"] = after

    def parse(response: httpx.Response) -> BatchList:
        data = json_of(response)
        items = data.get("data")
        return BatchList(tuple(Batch.from_dict(b) for b in items if isinstance(b, Mapping))
                         if isinstance(items, list) else (), has_more(data, response))

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
    from ._tokens import CONTEXT_WINDOWS

    return None if any_model else frozenset(CONTEXT_WINDOWS)


def check_file(path: str | os.PathLike[str], limit: int = MAX_INPUT_BYTES,
               any_model: bool = False) -> InputChecker:
    """Every rule of the platform's input file (see :data:`~kimi_files._batch_input.RULES`),
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
    batches: list[dict[str, object]] = field(default_factory=list)
    path: Path | None = None
    input_sha256: str | None = None
    parts: int = 0
    uploads: dict[str, dict[str, object]] = field(default_factory=dict)
    earlier: list[dict[str, object]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [str(b["id"]) for b in self.batches]

    def to_dict(self) -> dict[str, object]:
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

        def entries(key: str) -> list[dict[str, object]]:
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


def submit_steps(client: ClientLike, path: str | os.PathLike[str], *,
                 completion_window: str = DEFAULT_COMPLETION_WINDOW,
                 metadata: Mapping[str, str] | None = None,
                 limit: int = MAX_INPUT_BYTES,
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
    map_file: Path | None
    map_file, said = yield Blocking(_map_beside, (p, sha))
    if said is not None:
        yield said
    manifest = Manifest(os.path.abspath(p), os.path.abspath(map_file) if map_file else None,
                        path=manifest_path_for(p), input_sha256=sha, parts=len(checker.parts))
    previous: Manifest | None = yield Blocking(_previous_manifest, (manifest.path,))
    if previous is not None:
        yield from _resume_or_refuse(client, shown, previous, manifest, force)
    parts = [p]
    if len(checker.parts) > 1:
        yield Say.warning("%s: %s bytes is over the %s MB a batch takes: sending it as %d batches",
                          shown, f"{checker.size:,}", limit // (1024 * 1024), len(checker.parts))
        parts = yield Blocking(_write_parts, (p, checker.parts))
    options = UploadOptions(purpose="batch", progress=False)
    try:
        for index, (part, lines) in enumerate(zip(parts, checker.parts, strict=True), 1):
            if index not in {b.get("index") for b in manifest.batches}:
                yield from _send_part_steps(client, manifest, index, part, lines, options,
                                            completion_window, metadata)
    finally:  # no yield here: a closed generator (Ctrl-C, a cancelled task) may not
        if len(parts) > 1:
            _remove_parts(parts)
    return manifest


def _map_beside(p: Path, sha: str) -> tuple[Path | None, Say | None]:
    """The map beside the input, when it was written with this very input (and the line
    that says so when not)."""
    map_file = map_path_for(p)
    beside = load_map(map_file)
    if beside is not None and beside.input_sha256 not in (None, sha):
        return None, Say.warning(
            "%s: written with another input than %s (another build): not recorded in the "
            "manifest; results will name no paths unless given the right map (--map)",
            map_file, os.fsdecode(p))
    return (map_file if beside is not None else None), None


def _send_part_steps(client: ClientLike, manifest: Manifest, index: int, part: Path,
                     lines: int, options: UploadOptions, completion_window: str,
                     metadata: Mapping[str, str]) -> Steps[None]:
    """Upload one part (its upload recorded before its create) and create its batch
    (recorded after)."""
    from ._uploader import upload_steps

    uploaded = yield from upload_steps(client, part, options)
    before = manifest.uploads.get(str(index), {})
    # reused, but what a run of this submit uploaded itself: still submit's own
    mine = not uploaded.reused or (before.get("input_file_id") == uploaded.id
                                   and before.get("input_uploaded") is True)
    if not mine:
        yield Say.warning("%s: the account holds this input already (%s): reused, so "
                          "results --cleanup will keep it", part.name, uploaded.id)
    manifest.uploads[str(index)] = {"input_file_id": uploaded.id, "input_uploaded": mine}
    yield Blocking(manifest.save)
    batch = yield from create_batch_steps(client.retry_policy, uploaded.id,
                                          completion_window=completion_window,
                                          metadata=metadata)
    manifest.batches.append({"id": batch.id, "input_file_id": uploaded.id,
                             "input_uploaded": mine, "index": index, "lines": lines,
                             "part": part.name})
    yield Blocking(manifest.save)


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
            yield Say.warning("%s: resuming the submit: part(s) %s created already as %s; "
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
    yield Say.warning("%s %s %s: submitting it again (--force); the manifest keeps them under "
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


def poll_delay(polls: int) -> float:
    """Seconds before look number ``polls + 1`` at a running batch: ``POLL_FIRST``, growing
    by ``POLL_FACTOR`` each time, at most ``POLL_MAX``. Pure."""
    return float(min(POLL_MAX, POLL_FIRST * POLL_FACTOR ** max(0, polls)))


def wait_steps(client: ClientLike, ids: Sequence[str], *,
               on_update: Callable[[list[Batch]], None] | None = None,
               timeout: float | None = None) -> Steps[list[Batch]]:
    """Poll the batches until every one is done (or ``timeout`` seconds of waiting passed);
    their last objects, in order. ``on_update`` sees them after every look.

    The waits are the client's (:func:`kimi_files._retry.sleep`): ``waiting_disabled()``
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
        delay = poll_delay(polls)
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


def _check_steps(path: str | os.PathLike[str], any_model: bool = False) -> Steps[InputChecker]:
    checker: InputChecker = yield Blocking(check_file, (path, MAX_INPUT_BYTES, any_model))
    if not checker.ok:
        raise input_error(os.fsdecode(path), checker)
    return checker

