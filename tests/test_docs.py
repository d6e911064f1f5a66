"""The README's commands are the ones CI runs; the package imports light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert f"\n{command}\n" in readme
    assert "kimi-upload --emulator examples/corpus\n" in readme


def test_import_is_light() -> None:
    code = ("import sys, kimi_files; "
            "print(sorted(m for m in ('httpx', 'tqdm', 'magic', 'sqlite3', 'starlette', "
            "'uvicorn', 'kimi_files.emulator', 'kimi_files.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_docs_name_only_files_that_exist() -> None:
    # the modules were renamed (_name.py) once already: a page that still sends readers to
    # the old names is a page that lies
    import re

    known = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *ROOT.glob("docs/*.md")]
    missing = {f"{page.relative_to(ROOT)}: {name}"
               for page in pages
               for name in re.findall(r"([A-Za-z_][\w]*\.py)\b", page.read_text(encoding="utf-8"))
               if name not in known | {"_name.py"}}  # the pattern, as the README says it
    assert missing == set()
