"""Content hashes of local files (SHA-256), read in pieces in constant memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_of"]


def sha256_of(path: Path, chunk: int = 1024 * 1024) -> str:
    """The SHA-256 of the file's bytes, as hex.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
