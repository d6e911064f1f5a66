"""What a batch did: one :class:`FileResult` per input file, and the :class:`BatchReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ._models import FileObject
from ._quota import RoomPlan, fmt_bytes, fmt_time
from .errors import KimiError, UploadCancelledError

__all__ = ["STATUSES", "BatchReport", "FileResult", "Status"]

#: What became of a file: uploaded (or adopted), skipped (this very file is there already),
#: reused (the account holds its content from another upload), rejected (refused before
#: sending), failed (sending did not succeed), deferred (not sent: no room for it now; the
#: error says why and what would finish it), planned (a dry run).
Status = Literal["uploaded", "skipped", "reused", "rejected", "failed", "deferred", "planned"]
STATUSES: tuple[Status, ...] = ("uploaded", "skipped", "reused", "rejected", "failed",
                                "deferred", "planned")


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one input file."""

    path: str
    status: Status
    file_id: str | None = None
    bytes: int = 0
    error: KimiError | None = None
    note: str = ""
    #: ids of files that may be extra copies of this one (never adopted or deleted)
    suspects: tuple[str, ...] = ()
    #: the name the stored file ``file_id`` has on the server (it keeps base names only, and
    #: a reused file keeps the name it was first stored under), and its purpose
    stored_as: str | None = None
    purpose: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "file_id": self.file_id,
            "stored_as": self.stored_as,
            "purpose": self.purpose,
            "bytes": self.bytes,
            "suspects": list(self.suspects),
            "error": None if self.error is None else {
                "type": type(self.error).__name__,
                "message": str(self.error),
            },
        }


@dataclass
class BatchReport:
    """The outcome of :func:`ingest`."""

    results: list[FileResult] = field(default_factory=list)
    deleted: list[FileObject] = field(default_factory=list)
    plan: RoomPlan | None = None
    dry_run: bool = False
    interrupted: bool = False
    elapsed: float = 0.0
    list_calls: int = 0
    #: Files that may be extra copies stored by lost or interrupted attempts of this batch
    #: (or a look-alike someone else uploaded): kept, never adopted or deleted.
    suspects: list[FileObject] = field(default_factory=list)
    #: Earlier copies of changed files (this tool stored them for that path before): kept on
    #: the account, as (path, file, why: "" when ``replace`` was not asked for)
    earlier: list[tuple[str, FileObject, str]] = field(default_factory=list)
    #: Earlier copies deleted by ``replace`` once the newer copy was stored (in a dry run:
    #: that would be), as (path, file)
    replaced: list[tuple[str, FileObject]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when every file ended uploaded, skipped, reused (or planned, in a dry run)."""
        return not self.interrupted and all(
            r.status in ("uploaded", "skipped", "reused", "planned") for r in self.results)

    @property
    def suspects_remain(self) -> bool:
        """True when possible extra copies were reported (:attr:`suspects`): the account may
        hold a duplicate, or a look-alike nobody could tell apart. The command line exits 1."""
        return bool(self.suspects)

    @property
    def uploaded_bytes(self) -> int:
        return sum(r.bytes for r in self.results if r.status == "uploaded")

    def summary_lines(self) -> list[str]:
        """The summary: the counts, what was deleted, each reason once, and the possible
        extra copies with the command that removes them."""
        parts = [f"{self.count(s)} {s}" for s in STATUSES if self.count(s)]
        lines = [
            ("dry run: " if self.dry_run else "")
            + (", ".join(parts) or "no files")
            + f"; {self.uploaded_bytes:,} bytes uploaded in {self.elapsed:.1f}s"
            + (" (interrupted)" if self.interrupted else "")
        ]
        if self.deleted:  # each was said as it was deleted: counted here, not repeated
            lines.append(f"  deleted {len(self.deleted)} file(s) to make room "
                         f"({fmt_bytes(sum(v.bytes for v in self.deleted))}), each named above")
        if self.dry_run and self.plan is not None:
            for victim in self.plan.deletions:
                lines.append(f"  would delete {victim.id} {victim.filename} "
                             f"({fmt_bytes(victim.bytes)}, made {fmt_time(victim.created_at)})")
        for path, f in self.replaced:
            lines.append(f"  would replace: delete {f.id} {f.filename} ({f.bytes:,} bytes), the "
                         f"earlier copy of {path}, once its new copy is stored" if self.dry_run
                         else f"  replaced: deleted {f.id} {f.filename} ({f.bytes:,} bytes), "
                              f"the earlier copy of {path}")
        if self.earlier:
            plain = [(p, f) for p, f, why in self.earlier if not why]
            if plain:
                many = len({p for p, _ in plain})
                lines.append(f"  {many} file(s) uploaded again after a change: their earlier "
                             "copies stay on the account (--replace, replace=True, deletes "
                             "them once the new copy is stored):")
                lines.extend(f"    {f.id} {f.filename} ({f.bytes:,} bytes), earlier copy of "
                             f"{p}" for p, f in plain)
            lines.extend(f"  kept {f.id} {f.filename}, the earlier copy of {p}: {why}"
                         for p, f, why in self.earlier if why)
        # a batch-wide refusal is one error shared by every file: said once
        groups: dict[int, list[FileResult]] = {}
        cancelled = 0
        for r in self.results:
            if r.status not in ("rejected", "failed", "deferred") or r.error is None:
                continue
            if isinstance(r.error, UploadCancelledError):
                cancelled += 1
            else:
                groups.setdefault(id(r.error), []).append(r)
        for group in groups.values():
            first = group[0]
            count = f" ({len(group)} files)" if len(group) > 1 else ""
            lines.append(f"  {first.status}{count}: {first.error}")
        if cancelled:
            lines.append(f"  {cancelled} file(s) not uploaded because of the interruption; "
                         "a re-run sends them")
        if self.suspects:
            many = len(self.suspects)
            lines.append(f"  {many} possible extra cop{'y' if many == 1 else 'ies'} on the "
                         "server, kept because they cannot be proven this run's own:")
            for f in self.suspects:
                lines.append(f"    {f.id} {f.filename} ({f.bytes:,} bytes, made "
                             f"{fmt_time(f.created_at)})")
            lines.append("    remove what is yours with: kimi-files delete "
                         + " ".join(f.id for f in self.suspects))
        return lines

    def summary(self) -> str:
        """:meth:`summary_lines` as one text."""
        return "\n".join(self.summary_lines())
