"""The same question of many documents with the platform's Batch API, in four steps.

``client.batches`` builds one chat request per document (its extracted text as the system
message, the question as the user message), checks every rule of the input file, uploads it
with purpose="batch" and creates the batch, waits for it, and joins the answers back to the
documents by ``custom_id``. The command line does the same with ``kimi-files batch build |
submit | wait | results``.

    python examples/batch_answers.py [PATH...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _connect import connect

HERE = Path(__file__).resolve().parent


def main() -> int:
    corpus = HERE / "corpus"
    paths = sys.argv[1:] or [corpus / "季度报告.txt", corpus / "sales.csv", corpus / "README.md"]
    with tempfile.TemporaryDirectory(prefix="kimi-batch-example-") as folder, connect() as client:
        work = Path(folder)
        built = client.batches.build(paths, model="kimi-k2.5", output=work / "requests.jsonl",
                                     prompt="Summarise this document in one sentence.")
        manifest = client.batches.submit(built.path)
        print(f"submitted {', '.join(manifest.ids)}", file=sys.stderr)
        client.batches.wait(manifest, on_update=lambda batches: print(
            "  " + ", ".join(f"{b.status} {b.request_counts.completed}/{b.request_counts.total}"
                             for b in batches), file=sys.stderr))
        report = client.batches.results(manifest, work / "results.jsonl", cleanup=True)
        for line in (work / "results.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            print(f"{Path(row['path']).name}: {row['answer'] or row['error']}")
    return 0 if report.counts["ok"] == len(built.ids) else 1


if __name__ == "__main__":
    sys.exit(main())
