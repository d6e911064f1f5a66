"""Upload one file and print its extracted text.

    python examples/upload_one.py [PATH]     (default: the sample PDF)
"""

from __future__ import annotations

import sys
from pathlib import Path

from _connect import connect

import kimi_files

HERE = Path(__file__).resolve().parent


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus" / "kimi-files-intro.pdf"
    try:
        with connect() as client:
            uploaded = client.upload(path)
            print(f"uploaded {uploaded.filename} as {uploaded.id} ({uploaded.bytes:,} bytes, "
                  f"{uploaded.mime_type})")
            print(client.content(uploaded.id).text)
    except kimi_files.KimiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
