"""Quota planning: does an upload (or a batch) fit, and which files must go to make room.

Pure: :func:`plan_room` takes the account's files, what is about to be uploaded and the
limits, and returns a :class:`RoomPlan` or raises :class:`~kimi_files.NoRoomError`. Nothing
is deleted here; the caller deletes ``plan.deletions`` only after every local check passed.

The deletion rule: candidates are the account's files the policy selects (``"oldest"``: all,
oldest first; a callable: those it accepts, oldest first; a sequence of ids: those, in that
order), minus protected ids (files of the batch itself). The plan deletes the shortest prefix
of the candidates after which both the file count and the bytes fit; if even all candidates
cannot make room, nothing is deleted and the error says how much must go.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._config import Limits
from ._models import FileObject
from .errors import ConfigurationError, NoRoomError, NotEnoughFileSlotsError, NotEnoughStorageError

__all__ = [
    "FreeQuota",
    "RoomPlan",
    "Usage",
    "account_full_error",
    "check_free_quota",
    "deficit",
    "fit_in_order",
    "fmt_bytes",
    "fmt_time",
    "implausibly_dated",
    "no_room_error",
    "plan_room",
    "plausibly_dated",
    "select_candidates",
    "select_for_deletion",
    "select_for_pruning",
]

#: "never", "oldest", a predicate over the account's files, or file ids in deletion order
#: (a list or tuple: a bare string is never taken for a list of ids).
FreeQuota = Literal["never", "oldest"] | Callable[[FileObject], bool] | list[str] | tuple[str, ...]


def check_free_quota(policy: object) -> None:
    """Refuse a ``free_quota`` that is none of the accepted forms, before anything is sent.

    Raises:
        ConfigurationError: a typo such as ``"oldset"``, a bare string, or ids that are not
            strings.
    """
    if isinstance(policy, str):
        if policy in ("never", "oldest"):
            return
        raise ConfigurationError(
            f"free_quota must be 'never', 'oldest', a predicate or a list of file ids, not "
            f"{policy!r}")
    if callable(policy):
        return
    if isinstance(policy, (list, tuple)) and all(isinstance(i, str) for i in policy):
        return
    raise ConfigurationError(
        f"free_quota must be 'never', 'oldest', a predicate or a list of file ids, not "
        f"{type(policy).__name__} {policy!r}")


@dataclass(frozen=True, slots=True)
class Usage:
    """What the account holds and may hold."""

    files: int
    bytes: int
    max_files: int
    max_bytes: int

    @classmethod
    def of(cls, files: Iterable[FileObject], limits: Limits) -> Usage:
        items = list(files)
        return cls(
            files=len(items),
            bytes=sum(f.bytes for f in items),
            max_files=limits.max_files,
            max_bytes=limits.max_total_bytes,
        )

    @property
    def free_files(self) -> int:
        return max(0, self.max_files - self.files)

    @property
    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self.bytes)


@dataclass(frozen=True, slots=True)
class RoomPlan:
    """The outcome of planning: what to delete (possibly nothing) so the upload fits."""

    usage: Usage
    need_files: int
    need_bytes: int
    deletions: tuple[FileObject, ...] = ()

    @property
    def freed_bytes(self) -> int:
        return sum(f.bytes for f in self.deletions)


def deficit(usage: Usage, need_files: int, need_bytes: int) -> tuple[int, int]:
    """(files, bytes) that must be freed for ``need_files`` files of ``need_bytes`` to fit."""
    return (
        max(0, usage.files + need_files - usage.max_files),
        max(0, usage.bytes + need_bytes - usage.max_bytes),
    )


def _age_key(f: FileObject) -> tuple[int, str]:
    return (f.created_at, f.id)


def select_candidates(
    files: Sequence[FileObject], policy: FreeQuota, protected: Collection[str] = ()
) -> list[FileObject]:
    """The files ``policy`` allows to delete, in deletion order, never a protected one."""
    check_free_quota(policy)
    if isinstance(policy, str):
        if policy == "never":
            return []
        chosen = sorted(files, key=_age_key)
    elif callable(policy):
        chosen = sorted((f for f in files if policy(f)), key=_age_key)
    else:
        by_id = {f.id: f for f in files}
        seen: set[str] = set()
        chosen = []
        for fid in policy:
            if fid in by_id and fid not in seen:
                seen.add(fid)
                chosen.append(by_id[fid])
    return [f for f in chosen if f.id not in protected]


def fmt_bytes(n: int) -> str:
    """A byte count for people: '512 bytes', '1.5 MiB (1,572,864 bytes)'."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({n:,} bytes)"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_time(ts: int | float) -> str:
    """A server's Unix time as a readable UTC date (``2026-12-05 07:55:06Z``); a time that is
    no date (0, nonsense) as the number. Pure."""
    import datetime as dt

    if not ts or ts < 0:
        return f"{ts} (no date)"
    try:
        return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def plan_room(
    files: Sequence[FileObject],
    need_files: int,
    need_bytes: int,
    limits: Limits,
    policy: FreeQuota = "never",
    *,
    protected: Collection[str] = (),
    what: str = "the upload",
) -> RoomPlan:
    """Plan room for ``need_files`` new files of ``need_bytes`` in total. Pure.

    Raises :class:`NotEnoughFileSlotsError` or :class:`NotEnoughStorageError` (both
    :class:`NoRoomError`) when the upload cannot fit, naming how much must go.
    """
    usage = Usage.of(files, limits)
    short_files, short_bytes = deficit(usage, need_files, need_bytes)
    if (short_files == 0 and short_bytes == 0) or (need_files == 0 and need_bytes == 0):
        # nothing to send needs no room, even on an account that holds more than its limits
        return RoomPlan(usage, need_files, need_bytes)
    if need_files > usage.max_files or need_bytes > usage.max_bytes:
        raise no_room_error(usage, need_files, need_bytes, what,
                            "To make room: it is larger than the whole account allows.")
    deletions: list[FileObject] = []
    freed_files = freed_bytes = 0
    for candidate in select_candidates(files, policy, protected):
        if freed_files >= short_files and freed_bytes >= short_bytes:
            break
        deletions.append(candidate)
        freed_files += 1
        freed_bytes += candidate.bytes
    if freed_files >= short_files and freed_bytes >= short_bytes:
        return RoomPlan(usage, need_files, need_bytes, tuple(deletions))
    if isinstance(policy, str) and policy == "never":
        hint = "delete files first, or let kimi-files free room (free_quota='oldest', --free-quota oldest)"
    else:
        hint = "the files the policy may delete are not enough; delete others or upload less"
    raise no_room_error(usage, need_files, need_bytes, what, f"To make room: {hint}.")


def no_room_error(usage: Usage, need_files: int, need_bytes: int, what: str,
                  advice: str) -> NoRoomError:
    """The error for ``need_files`` files of ``need_bytes`` that do not fit ``usage``: how
    much must go, then ``advice`` (whole sentences). Pure."""
    short_files, short_bytes = deficit(usage, need_files, need_bytes)
    parts = []
    if short_files:
        parts.append(f"{short_files:,} file(s) must go (the account holds {usage.files:,} of "
                     f"{usage.max_files:,} files)")
    if short_bytes:
        parts.append(f"{fmt_bytes(short_bytes)} must go (the account holds "
                     f"{fmt_bytes(usage.bytes)} of {fmt_bytes(usage.max_bytes)})")
    message = (f"No room for {what} ({need_files:,} file(s), {fmt_bytes(need_bytes)}): "
               + "; ".join(parts) + f". {advice}")
    cls = NotEnoughFileSlotsError if short_files else NotEnoughStorageError
    return cls(message, files_to_free=short_files, bytes_to_free=short_bytes)


def account_full_error(refused: str, answer: str, server_limit: int | None,
                       held: int | None, planned_limit: int) -> NotEnoughFileSlotsError:
    """The one error for every file a batch did not send once the server said the account
    holds its maximum number of files: ``refused`` is the file it refused, ``answer`` the
    server's words, ``held`` the files listed just after (None: not known), ``planned_limit``
    the limit the plan assumed. Pure."""
    holds = f"; it holds {held:,} file(s) now" if held is not None else ""
    real = server_limit or held
    limit = ""
    if real is not None and real < planned_limit:
        limit = (f" The account's real limit looks like {real:,} files, not the "
                 f"{planned_limit:,} planned for: pass --max-files {real} (or set "
                 f"KIMI_FILES_MAX_FILES={real}; Limits(max_files={real}) in code) so the "
                 "plan knows it.")
    return NotEnoughFileSlotsError(
        f"The account is full: the server refused {refused} ({answer!r}){holds}. Nothing "
        "more was sent; the files not sent are deferred. To finish them: delete files you "
        "no longer need (kimi-files list, then kimi-files delete ID... or kimi-files prune) "
        f"and run again.{limit}", files_to_free=1)


def fit_in_order(sizes: Sequence[int], free_files: int, free_bytes: int) -> list[int]:
    """The indexes of the files to send when not all fit: in input order, each file that
    still fits the free slots and bytes left by those taken before it (first fit). Pure."""
    taken: list[int] = []
    for i, size in enumerate(sizes):
        if free_files >= 1 and size <= free_bytes:
            taken.append(i)
            free_files -= 1
            free_bytes -= size
    return taken


def select_for_deletion(files: Sequence[FileObject], *, ids: Sequence[str], match: str | None,
                        older_than_days: float | None, everything: bool,
                        now: float) -> list[FileObject]:
    """The files ``kimi-files delete`` names: by id, or matching all the filters given
    (``everything`` with none), oldest first. ``older_than_days`` never chooses a file the
    listing gives no plausible date (:func:`plausibly_dated`): its age is unknown. Pure."""
    import fnmatch

    if ids:
        wanted = set(ids)
        return [f for f in files if f.id in wanted]
    chosen = list(files)
    if match is not None:
        chosen = [f for f in chosen if fnmatch.fnmatchcase(f.filename, match)]
    if older_than_days is not None:
        cutoff = now - older_than_days * 86400
        chosen = [f for f in chosen if plausibly_dated(f, now) and f.created_at < cutoff]
    if not (everything or match is not None or older_than_days is not None):
        return []
    return sorted(chosen, key=lambda f: (f.created_at, f.id))


#: How far past ``now`` a ``created_at`` may lie and still be a time (clocks disagree).
FUTURE_SLACK = 86_400


def plausibly_dated(f: FileObject, now: float) -> bool:
    """Does the listing give ``f`` a time it could have been made at: after 1970 and no
    later than a day past ``now``? (Parsing made a ``created_at`` that is no number, such as
    ``true`` or text, 0.) Pure."""
    return 0 < f.created_at <= now + FUTURE_SLACK


#: How far the server's clock may be from the local clock before ages are not judged at all.
CLOCK_AGREEMENT = 86_400


def age_clock(server_now: int | None, local_now: float) -> int | str:
    """The time files' ages are judged by (``created_at`` is the server's clock): the server's
    time from its ``Date`` headers; or, when it is unknown or more than
    :data:`CLOCK_AGREEMENT` from the local clock (one of them is wrong, and deleting by age
    would then delete the wrong files), why no age can be judged. Pure."""
    if server_now is None:
        return ("the server's time is unknown (its answers carry no Date header), so no file's "
                "age can be judged; nothing is deleted by age")
    apart = server_now - local_now
    if abs(apart) > CLOCK_AGREEMENT:
        return (f"the server's clock (Date: {fmt_time(server_now)}) is "
                f"{abs(apart) / 86_400:.1f} days {'ahead of' if apart > 0 else 'behind'} this "
                f"machine's ({fmt_time(local_now)}); one of them is wrong, so no file's age can "
                "be judged; nothing is deleted by age")
    return server_now


def _prunable_scope(files: Sequence[FileObject], match: str | None,
                    purpose: str) -> list[FileObject]:
    """The files of ``purpose`` whose name matches ``match`` (all of them without one)."""
    import fnmatch

    return [f for f in files if f.purpose == purpose
            and (match is None or fnmatch.fnmatchcase(f.filename, match))]


def implausibly_dated(files: Sequence[FileObject], *, match: str | None, purpose: str,
                      now: float) -> list[FileObject]:
    """The files ``prune`` would consider but cannot date (see :func:`plausibly_dated`):
    never pruned, never counted among the newest; the caller says so. Pure."""
    return [f for f in _prunable_scope(files, match, purpose) if not plausibly_dated(f, now)]


def select_for_pruning(files: Sequence[FileObject], *, keep: int | None,
                       older_than_days: float | None, match: str | None, purpose: str,
                       now: float) -> list[FileObject]:
    """The files ``kimi-files prune`` deletes, oldest first. Pure.

    Only files of ``purpose`` (and whose name matches the glob ``match``, if given) are ever
    considered. ``keep``: all but the ``keep`` newest of those; ``older_than_days``: those
    made more than that many days before ``now``. With both, a file must meet both. A file
    the listing gives no plausible ``created_at`` (:func:`implausibly_dated`) is never chosen
    and never counted among the newest. (A listing holds each id once: FileList.of.)
    """
    if keep is None and older_than_days is None:
        return []
    # a file whose age the listing does not give is never pruned
    dated = [f for f in _prunable_scope(files, match, purpose) if plausibly_dated(f, now)]
    considered = select_for_deletion(dated, ids=(), match=None, older_than_days=None,
                                     everything=True, now=now)
    chosen = considered if keep is None else considered[:max(0, len(considered) - keep)]
    if older_than_days is None:
        return chosen
    return select_for_deletion(chosen, ids=(), match=None, older_than_days=older_than_days,
                               everything=False, now=now)
