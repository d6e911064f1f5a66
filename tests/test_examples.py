"""The examples run against the emulator with no key and no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MOONSHOT_API_KEY", "MOONSHOT_BASE_URL")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_upload_one_prints_the_pdf_text() -> None:
    r = _run("upload_one.py")
    assert r.returncode == 0, r.stderr
    assert "application/pdf" in r.stdout and "Limits: 100 MB per file" in r.stdout


def test_ingest_folder_then_rerun_skips() -> None:
    r = _run("ingest_folder.py")
    assert r.returncode == 0, r.stderr
    assert "7 uploaded" in r.stdout and "re-run: 7 skipped, 0 uploaded" in r.stdout


def test_chat_messages_follow_the_docs() -> None:
    r = _run("chat_messages.py")
    assert r.returncode == 0, r.stderr
    messages = json.loads(r.stdout)
    assert [m["role"] for m in messages] == ["system", "system", "system", "user"]
    doc = json.loads(messages[1]["content"])
    assert doc["filename"] == "季度报告.txt" and "收入" in doc["content"]


def test_batch_answers_go_from_documents_to_one_answer_each() -> None:
    r = _run("batch_answers.py")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [x.split(":")[0] for x in lines] == ["季度报告.txt", "sales.csv", "README.md"]
    assert all("[emulated answer] doc-" in x for x in lines) and "completed 3/3" in r.stderr
