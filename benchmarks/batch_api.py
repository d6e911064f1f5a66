"""Issue #19's figures: the Batch API steps over many documents, as whole CLI processes.

    .venv/bin/python benchmarks/batch_api.py            # 1,000 and 10,000 documents
    .venv/bin/python benchmarks/batch_api.py --quick    # 200 and 2,000

* ``kimi-files batch build`` + ``kimi-files batch check`` over N documents whose texts are
  cached (the reuse cache is filled first, as a previous run would leave it: no request is
  made), at two sizes, to show the time and that the peak memory stays flat;
* ``kimi-files batch results`` over the output of a batch of N requests (the bundled emulator
  answers it; the batch is moved to ``completed`` before the clock starts).

Goals: build + check of 10,000 cached documents under 10 s with flat memory; results over
10,000 output lines under 5 s. Peak RSS is GNU time's ``%M`` when /usr/bin/time exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-0123456789abcdef"
BIN = Path(sys.executable).parent / "kimi-files"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int | None]:
    """Wall seconds and peak RSS (KiB, if measurable) of a whole process."""
    timed = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    start = time.perf_counter()
    done = subprocess.run([*timed, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rss = None
    if timed:
        rss = int(done.stderr.strip().splitlines()[-1])
    return wall, rss


def make_docs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        p = folder / f"{i // 1000:02d}" / f"doc{i:05d}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"Document {i}. " + "Lorem ipsum dolor sit amet. " * 70)
        paths.append(p)
    return paths


def fill_cache(paths: list[Path], base_url: str) -> None:
    """The texts of ``paths`` in the account's reuse cache, as a previous run leaves them."""
    from kimi_files import KimiFiles

    with KimiFiles(api_key=KEY, base_url=base_url) as c:
        cache = c.reuse_cache()
        assert cache is not None
        for i, p in enumerate(paths):
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            body = json.dumps({"content": p.read_text(), "file_type": "text/plain",
                               "filename": p.name, "title": "", "type": "file"})
            cache.remember_text(sha, f"cl-bench-{i}", body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    o = ap.parse_args(argv)
    sizes = (200, 2000) if o.quick else (1000, 10_000)
    from kimi_files.emulator import Emulator

    tmp = Path(tempfile.mkdtemp(prefix="kimi-bench-batch-"))
    rows = []
    try:
        with Emulator(api_key=KEY) as emu:
            env = {**os.environ, "MOONSHOT_API_KEY": KEY, "MOONSHOT_BASE_URL": emu.base_url,
                   "XDG_STATE_HOME": str(tmp / "state"), "KIMI_FILES_NO_PROGRESS": "1"}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"]
            for n in sizes:
                folder = tmp / f"docs{n}"
                paths = make_docs(folder, n)
                fill_cache(paths, emu.base_url)
                before = len(emu.requests)
                req = tmp / f"req{n}.jsonl"
                build = run([str(BIN), "batch", "build", "--model", "kimi-k2.5", "--prompt",
                             "Summarise this document in three lines.", str(folder), "-o",
                             str(req)], env)
                check = run([str(BIN), "batch", "check", str(req)], env)
                assert len(emu.requests) == before, "a cached build made requests"
                rows.append((f"build, {n:,} cached documents", *build))
                rows.append((f"check, {n:,} requests ({req.stat().st_size / 2**20:.1f} MiB)",
                             *check))
                rows.append((f"build + check, {n:,}", build[0] + check[0],
                             max(build[1] or 0, check[1] or 0) or None))
                emu.state.batches.phase_seconds = None
                run([str(BIN), "batch", "submit", str(req)], env)
                emu.state.batches.advance(emu.state.batches.progress_steps + 2)
                manifest = Path(f"{req}.batches.json")
                out = tmp / f"out{n}.jsonl"
                results = run([str(BIN), "batch", "results", str(manifest), "-o", str(out)],
                              env)
                lines = sum(1 for _ in out.open("rb"))
                assert lines == n, (lines, n)
                rows.append((f"results, {n:,} output lines", *results))
                emu.state.reset()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| case | wall | peak RSS |\n|---|---|---|")
    for name, wall, rss in rows:
        print(f"| {name} | {wall:.2f} s | {f'{rss / 1024:.0f} MiB' if rss else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
