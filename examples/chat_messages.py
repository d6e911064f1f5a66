"""Build chat messages from uploaded files, the way the Kimi docs do.

The docs upload each file with purpose="file-extract", fetch its content, and put each as a
system message before the user's question. This prints the messages; pass them to
``openai.OpenAI(base_url=..., api_key=...).chat.completions.create(model=..., messages=...)``.

    python examples/chat_messages.py [PATH...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _connect import connect

import kimi_files

HERE = Path(__file__).resolve().parent


def build_messages(client: kimi_files.KimiFiles, paths: list[Path],
                   question: str) -> list[dict[str, str]]:
    messages = [{"role": "system",
                 "content": "You are Kimi. Answer using the documents provided."}]
    for path in paths:
        uploaded = client.upload(path)
        # the content endpoint returns the platform's JSON document; the docs put it whole
        # into the system message
        document = client.content(uploaded.id)
        messages.append({"role": "system",
                         "content": json.dumps(document.document, ensure_ascii=False)
                         if document.document else document.text})
    messages.append({"role": "user", "content": question})
    return messages


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or [HERE / "corpus" / "季度报告.txt",
                                                 HERE / "corpus" / "sales.csv"]
    with connect() as client:
        messages = build_messages(client, paths, "Summarise these documents in two sentences.")
    print(json.dumps(messages, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
