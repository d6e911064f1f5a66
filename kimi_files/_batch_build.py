"""Build a Batch API input file: one chat request per document, its extracted text as the
system message, a stable ``custom_id`` per path and the map of ids to paths beside it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._batch_input import (
    custom_id_for,
    request_line,
)
from ._batch_models import (
    MANIFEST_KIND,
    MAP_KIND,
)
from ._options import UploadOptions
from ._steps import Blocking, Steps
from .errors import (
    ConfigurationError,
    KimiError,
)

if TYPE_CHECKING:
    from ._steps import ClientLike



log = logging.getLogger("kimi_files")


# --- build: one request per document --------------------------------------------------------------


def map_path_for(requests: str | os.PathLike[str]) -> Path:
    """Where ``batch build`` keeps the map ``custom_id -> path`` of an input file."""
    p = Path(requests)
    return p.with_name(p.name + ".map.json")


def manifest_path_for(requests: str | os.PathLike[str]) -> Path:
    """Where ``batch submit`` records the batches an input file was sent as."""
    p = Path(requests)
    return p.with_name(p.name + ".batches.json")


#: The start of a line kimi-files writes in a Batch API file: a request (``method``) or a
#: result (``path``), its custom_id first.
_OWN_LINE = re.compile(rb'\{"custom_id": ?"(?:[^"\\]|\\.)*", ?"(method|path)": ?')


def own_batch_file(path: str | os.PathLike[str]) -> str | None:
    """What kimi-files wrote this file as, when it is one of the batch steps' own files (a
    map, a manifest, an input file of requests, a results file), else None: a folder walked
    for documents leaves them out. Reads the first 4 KB at most."""
    p = Path(path)
    kinds = {MAP_KIND: "a map written by kimi-files batch build",
             MANIFEST_KIND: "a manifest written by kimi-files batch submit"}
    name = p.name
    try:
        if name.endswith((".map.json", ".batches.json")):
            with p.open("rb") as fh:
                head = fh.read(4096)
            kind = re.search(rb'"kind": ?"([^"]*)"', head)
            return kinds.get(kind.group(1).decode("utf-8", "replace")) if kind else None
        if name.endswith(".jsonl"):
            if map_path_for(p).is_file() or manifest_path_for(p).is_file():
                return "an input file written by kimi-files batch build"
            with p.open("rb") as fh:
                head = fh.read(4096)
            line = _OWN_LINE.match(head)
            if line is not None:
                return ("a Batch API input file (requests)" if line.group(1) == b"method"
                        else "a results file written by kimi-files batch results")
    except OSError:
        return None
    return None


def check_model(model: str, *, any_model: bool = False) -> None:
    """Refuse a model the platform is not known to serve (a typo shows up before a batch is
    paid for), unless ``any_model`` (a model newer than this list).

    Raises:
        ConfigurationError: naming the model and the known ones.
    """
    from ._tokens import CONTEXT_WINDOWS

    if not any_model and model not in CONTEXT_WINDOWS:
        raise ConfigurationError(
            f"--model {model}: not a model the platform is known to serve "
            f"({', '.join(sorted(CONTEXT_WINDOWS))}); --any-model sends it all the same")


def check_output(out: Path, *, force: bool = False) -> None:
    """Refuse an output a build must not write: a name not ``*.jsonl`` (the platform's rule),
    or an existing file that is not a build's own input file (a document of the user's),
    unless ``force``.

    Raises:
        ConfigurationError: naming the file and the rule.
    """
    shown = os.fsdecode(out)
    if not out.name.endswith(".jsonl"):
        raise ConfigurationError(f"-o {shown}: a batch input file is named *.jsonl (the "
                                 "platform's rule); nothing was written")
    if out.is_dir():
        raise ConfigurationError(f"-o {shown}: is a folder; nothing was written")
    if not force and out.exists() and own_batch_file(out) is None:
        raise ConfigurationError(f"-o {shown}: exists and is no input file a build wrote; "
                                 "not overwritten (--force overwrites it)")


@dataclass
class BuildReport:
    """What ``build`` wrote: the input file, its map, the requests (``ids``: custom_id ->
    path, in order) and the documents left out (``failed``: path -> the error)."""

    path: Path
    map_path: Path
    model: str
    ids: dict[str, str] = field(default_factory=dict)
    failed: dict[str, KimiError] = field(default_factory=dict)


class AtomicWriter:
    """A file written beside its final name and moved there only when complete; ``sha256``
    is the hash of what was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        self.tmp = Path(name)
        self.fh = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def json_bytes(value: object, indent: int | None = None) -> bytes:
    """``value`` as UTF-8 JSON; a string that is no valid Unicode (a file name of bytes that
    are not UTF-8, held as surrogate escapes) is written escaped (``\\udce9``), which reads
    back as the same name."""
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, indent=indent).encode()


def write_json(path: Path, value: object) -> None:
    w = AtomicWriter(path)
    try:
        w.write(json_bytes(value, indent=1) + b"\n")
    except BaseException:
        w.abort()
        raise
    w.commit()


def build_steps(client: ClientLike, paths: Iterable[str | os.PathLike[str]], *, model: str,
                prompt: str, output: str | os.PathLike[str],
                body: Mapping[str, object] | None = None, strict: bool = False,
                force: bool = False, any_model: bool = False) -> Steps[BuildReport]:
    """Write ``output`` (one chat request per document) and its map beside it.

    Each document's text comes through the extraction path (the reuse cache's text when this
    content was read before: no request at all); its system message is the one
    :func:`kimi_files.messages` builds, so identical documents give identical bytes. A path
    given twice is one request. A document the service cannot read is left out and named in
    ``.failed`` (``strict``: raised). Both files are written whole or not at all. The map
    names each document by its absolute path (its ``custom_id`` is a hash of it) and records
    the input's SHA-256, so ``results`` can tell it belongs to the input that was submitted.

    Raises:
        ConfigurationError: an empty model or prompt; a model the platform is not known to
            serve (unless ``any_model``); an output not named ``*.jsonl``, or
            one that exists and is no input file a build wrote (unless ``force``).
        KimiError: with ``strict``, the first document that failed; either way, a failure
            that is not a document's own (AuthenticationError, NoRoomError, the network...).
    """
    from ._chat import document_steps

    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("a batch needs a model (--model)")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigurationError("a batch needs a prompt (--prompt or --prompt-file)")
    check_model(model, any_model=any_model)
    options = UploadOptions(progress=False)
    out = Path(output)
    check_output(out, force=force)
    report = BuildReport(out, map_path_for(out), model)
    writer: AtomicWriter = yield Blocking(AtomicWriter, (out,))
    try:
        for raw in paths:
            given = os.fsdecode(raw)
            path = os.path.abspath(given)  # the map names it wherever results are read
            cid = custom_id_for(path)
            if cid in report.ids:
                continue
            got = yield from document_steps(client, given, options, strict=strict,
                                            what="batch")
            if isinstance(got, KimiError):
                report.failed[given] = got
                continue
            content = got[0]
            report.ids[cid] = path
            yield Blocking(writer.write, (request_line(cid, model, content.as_message(), prompt,
                                                       body),))
        yield Blocking(write_json, (report.map_path, {"kind": MAP_KIND, "version": 2,
                                                       "input": out.name,
                                                       "input_sha256": writer.sha256,
                                                       "model": model, "ids": report.ids}))
    except BaseException:  # no yield here: a closed generator (Ctrl-C, a cancelled task) may not
        writer.abort()
        raise
    yield Blocking(writer.commit)
    return report


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
