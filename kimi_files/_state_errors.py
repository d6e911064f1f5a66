"""The state store's failures in words (pure): what went wrong with a state file, what a
re-run can still know, and the way out (see :mod:`kimi_files._state`)."""

from __future__ import annotations

__all__ = ["WAY_OUT", "describe_failure"]

WAY_OUT = ("Use another state file (--state NEW; in Python state='NEW') "
           "or none (--no-state; state=False).")

# SQLite primary result codes (the low byte of an extended code): what, and what to do
_DAMAGED = ("is damaged or not an SQLite database", "move it aside to start afresh")
_SQLITE_WORDS = {
    3: ("cannot be written: permission denied", ""),  # SQLITE_PERM
    5: ("is locked by another program", "close that program"),  # SQLITE_BUSY
    6: ("is locked by another program", "close that program"),  # SQLITE_LOCKED
    8: ("cannot be written: the file or its folder is read-only", ""),  # SQLITE_READONLY
    10: ("cannot be read or written: input/output error", ""),  # SQLITE_IOERR
    11: _DAMAGED,  # SQLITE_CORRUPT
    13: ("cannot be written: the disk is full", "free some space"),  # SQLITE_FULL
    14: ("cannot be opened", "check that it and its folder are writable"),  # SQLITE_CANTOPEN
    26: _DAMAGED,  # SQLITE_NOTADB
}
# the same by message, for Pythons whose sqlite3 errors carry no code (3.10)
_SQLITE_TEXTS = (
    ("not a database", 26), ("malformed", 11), ("readonly", 8), ("disk is full", 13),
    ("disk full", 13), ("unable to open", 14), ("locked", 5), ("disk i/o", 10),
)


def describe_failure(exc: BaseException) -> str:
    """What went wrong with the state file, in words, for an ``sqlite3`` or ``OSError``."""
    if isinstance(exc, OSError):
        import errno

        words = {
            errno.ENOSPC: "cannot be written: the disk is full",
            errno.EROFS: "cannot be written: the file system is read-only",
            errno.EACCES: "cannot be used: permission denied",
            errno.EPERM: "cannot be used: operation not permitted (read-only or immutable?)",
            errno.EISDIR: "is a folder, not a file",
            errno.ENOTDIR: "cannot be reached: part of its folder path is a file, not a folder",
        }.get(exc.errno or 0)
        return words or f"cannot be used ({exc.strerror or exc})"
    detail = str(exc) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary not in _SQLITE_WORDS:
        lowered = detail.lower()
        primary = next((c for text, c in _SQLITE_TEXTS if text in lowered), None)
    words, advice = _SQLITE_WORDS.get(primary or 0, ("failed", ""))
    return f"{words} ({detail})" + (f"; {advice}" if advice else "")


def _after_loss(state_file: bool, removed: bool) -> str:
    """What a re-run can and cannot know once a run's state file or lock file was taken from
    it mid-run (see ``StateStore._check_still_ours``)."""
    if not state_file:
        return ("a re-run resumes from what was recorded until then, but files this run "
                "uploaded after that are not known to it and would be uploaded again")
    if removed:
        return ("what it recorded went with it: a re-run starts afresh and would upload again "
                "every file already uploaded (this run's output lists their ids)")
    return ("a re-run reads the new file, which does not know what was uploaded, and would "
            "upload those files again (this run's output lists their ids)")
