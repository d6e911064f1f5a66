"""Chat messages from documents, the way the Kimi docs build them, in a few lines.

``kimi_files.messages`` uploads each file with purpose="file-extract" (or reuses the copy the
account already holds), fetches its extracted text once (then caches it), and returns one
system message per file with the whole JSON text of ``files.content``, as the docs do. Pass
them to ``openai.OpenAI(base_url=..., api_key=...).chat.completions.create(...)``.

    python examples/chat_messages.py [PATH...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _connect import connect

import kimi_files

HERE = Path(__file__).resolve().parent


def main() -> int:
    paths = sys.argv[1:] or [HERE / "corpus" / "季度报告.txt", HERE / "corpus" / "sales.csv"]
    with connect() as client:
        documents = kimi_files.messages(paths, client=client, max_chars=100_000)
    messages = [{"role": "system", "content": "You are Kimi. Answer using the documents."},
                *documents,
                {"role": "user", "content": "Summarise these documents in two sentences."}]
    print(json.dumps(messages, ensure_ascii=False, indent=2))
    return 0 if not documents.failed else 1


if __name__ == "__main__":
    sys.exit(main())
