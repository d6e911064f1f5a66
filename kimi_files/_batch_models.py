"""The Batch API's objects (a batch, its request counts, a list of batches) and its constants. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ._batch_input import (
    CHAT_ENDPOINT,
)
from .errors import (
    BatchCancelledError,
    BatchError,
    BatchExpiredError,
    BatchFailedError,
)

__all__ = ["DEFAULT_COMPLETION_WINDOW", "MANIFEST_KIND", "MAP_KIND", "POLL_FACTOR", "POLL_FIRST", "POLL_MAX",
           "TERMINAL", "Batch", "BatchList", "RequestCounts"]

#: The completion window asked for when none is given.
DEFAULT_COMPLETION_WINDOW = "24h"
#: The statuses a batch never leaves.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Polling: the first wait, the factor and the longest wait between two looks, in seconds.
POLL_FIRST, POLL_FACTOR, POLL_MAX = 2.0, 1.5, 60.0
MAP_KIND = "kimi-files batch map"
MANIFEST_KIND = "kimi-files batch manifest"



# --- the batch object ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as the platform describes it (the OpenAI Batch API's shape); ``raw`` is the
    whole object as sent."""

    id: str
    status: str
    endpoint: str = CHAT_ENDPOINT
    input_file_id: str = ""
    completion_window: str = ""
    created_at: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    expires_at: int | None = None
    request_counts: RequestCounts = RequestCounts()
    errors: tuple[Mapping[str, object], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Batch:
        counts = data.get("request_counts")
        counts = counts if isinstance(counts, Mapping) else {}
        errors = data.get("errors")
        items = errors.get("data") if isinstance(errors, Mapping) else errors
        metadata = data.get("metadata")
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or ""),
            endpoint=str(data.get("endpoint") or CHAT_ENDPOINT),
            input_file_id=str(data.get("input_file_id") or ""),
            completion_window=str(data.get("completion_window") or ""),
            created_at=_opt_int(data.get("created_at")) or 0,
            output_file_id=_opt_str(data.get("output_file_id")),
            error_file_id=_opt_str(data.get("error_file_id")),
            expires_at=_opt_int(data.get("expires_at")),
            request_counts=RequestCounts(*(_opt_int(counts.get(k)) or 0
                                           for k in ("total", "completed", "failed"))),
            errors=tuple(dict(e) for e in items if isinstance(e, Mapping))
            if isinstance(items, list) else (),
            metadata={str(k): str(v) for k, v in metadata.items()}
            if isinstance(metadata, Mapping) else {},
            raw=dict(data),
        )

    @property
    def done(self) -> bool:
        """The batch will not change any more (completed, failed, expired or cancelled)."""
        return self.status in TERMINAL

    def error(self) -> BatchError | None:
        """The error of a batch that ended without completing (None for a completed one or
        one still running)."""
        cls: type[BatchError] | None = {"failed": BatchFailedError, "expired": BatchExpiredError,
                                        "cancelled": BatchCancelledError}.get(self.status)
        if cls is None:
            return None
        c = self.request_counts
        what = {"failed": "failed: the platform refused its input",
                "expired": "expired before it was done (the requests done have results)",
                "cancelled": "was cancelled (the requests done before have results)"}[self.status]
        listed = "; ".join(_describe(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return cls(f"batch {self.id} {what}: {c.completed} of {c.total} requests completed, "
                   f"{c.failed} failed" + (f"; errors: {listed}{more}" if listed else ""),
                   batch_id=self.id, status=self.status, errors=self.errors)


def _describe(error: Mapping[str, object]) -> str:
    line = f" (line {error['line']})" if error.get("line") is not None else ""
    return f"{error.get('code') or 'error'}{line}: {error.get('message') or ''}".strip()


@dataclass(frozen=True, slots=True)
class BatchList:
    data: tuple[Batch, ...]
    has_more: bool = False

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


