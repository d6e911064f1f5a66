"""Ingest a whole folder: planned against the quota, paced, resumable, no duplicates.

    python examples/ingest_folder.py [FOLDER]     (default: the sample corpus)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _connect import connect

import kimi_files

HERE = Path(__file__).resolve().parent


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    with connect() as client, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.sqlite3"
        skip = ["*.py"]
        report = kimi_files.ingest([folder], client=client, state=state, concurrency=4,
                                   exclude=skip)
        for r in report.results:
            print(f"{r.status:9} {r.file_id or '-':24} {r.path}")
        print(report.summary())
        # a second run finds everything already there: nothing is sent twice
        again = kimi_files.ingest([folder], client=client, state=state, exclude=skip)
        print(f"re-run: {again.count('skipped')} skipped, {again.count('uploaded')} uploaded")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
