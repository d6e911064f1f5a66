"""Side-by-side benchmarks: kimi-files against curl and the openai SDK, in one run.

    .venv/bin/python benchmarks/run.py            # everything (a few minutes)
    .venv/bin/python benchmarks/run.py --quick    # smaller sizes, fewer repeats

Every tool talks to the same emulator, served by a separate process on loopback, so the
server's cost is shared and the client's is compared. Each measurement runs the tool in its own
process; peak RSS is that process's ru_maxrss (os.wait4). Figures are medians of --repeat runs
and are reported as ratios: these machines are noisy, absolute times are context only.
Results are printed as a Markdown table and written to benchmarks/results/latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent
KEY = "bench-key"


@dataclass
class Run:
    seconds: float
    rss_mb: float
    inner_seconds: float | None = None  # time of the upload call itself, in-process


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@contextmanager
def emulator(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "kimi_files.emulator", "--port", str(port),
                             "--log-level", "warning", "--max-files", "100000",
                             "--max-total-bytes", str(1 << 40), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{base}/files", headers={"Authorization": f"Bearer {KEY}"})
                break
            except httpx.TransportError:
                time.sleep(0.025)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def clear(base: str) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        for f in http.get(f"{base}/files").json()["data"]:
            http.delete(f"{base}/files/{f['id']}")


def _hwm_kb(pid: int) -> int:
    """VmHWM of a running process: the peak RSS of its current program, in KiB.

    ru_maxrss is no use here: Linux carries the parent's peak into a forked child, and this
    benchmark process is larger than some of the programs it measures.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measure(cmd: Sequence[str], env: dict[str, str] | None = None) -> Run:
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(list(cmd), stdout=out_f, stderr=err_f,
                                env={**os.environ, **(env or {})})
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kb(proc.pid))
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        status = proc.returncode
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed ({status}): {err.decode()[-800:]}")
    inner = None
    for line in out.decode().splitlines():
        if line.startswith("{\"inner\""):
            inner = json.loads(line)["inner"]
    return Run(elapsed, peak / 1024, inner)


def median_run(runs: list[Run]) -> Run:
    inner = [r.inner_seconds for r in runs if r.inner_seconds is not None]
    return Run(statistics.median(r.seconds for r in runs), max(r.rss_mb for r in runs),
               statistics.median(inner) if inner else None)


# --- the clients being compared ------------------------------------------------------------

KIMI_INPROC = textwrap.dedent("""
    import json, sys, time
    import kimi_files
    path, base = sys.argv[1], sys.argv[2]
    client = kimi_files.KimiFiles(api_key=KEY, base_url=base)
    t = time.perf_counter()
    client.upload(path, progress=False)
    print(json.dumps({"inner": time.perf_counter() - t}))
""").replace("KEY", repr(KEY))

OPENAI_CREATE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import openai
    path, base = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(api_key=KEY, base_url=base, max_retries=0)
    t = time.perf_counter()
    client.files.create(file=Path(path), purpose="file-extract")
    print(json.dumps({"inner": time.perf_counter() - t}))
""").replace("KEY", repr(KEY))

# The loop the Kimi docs show: one files.create after another.
OPENAI_LOOP = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import openai
    folder, base = Path(sys.argv[1]), sys.argv[2]
    client = openai.OpenAI(api_key=KEY, base_url=base, max_retries=0)
    t = time.perf_counter()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            client.files.create(file=p, purpose="file-extract")
    print(json.dumps({"inner": time.perf_counter() - t}))
""").replace("KEY", repr(KEY))


def curl_version() -> str:
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    return out.split()[1] if out else "?"


def write_script(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def make_text_file(path: Path, size: int) -> Path:
    line = b"The quick brown fox jumps over the lazy dog; kimi-files benchmark line.\n"
    with path.open("wb") as fh:
        block = line * (1024 * 1024 // len(line) + 1)
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            fh.write(chunk)
            written += len(chunk)
    return path


def make_folder(path: Path, n: int, size: int = 2000) -> Path:
    for i in range(n):
        sub = path / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc{i:04d}.txt").write_bytes((f"document {i} " * (size // 12 + 1)).encode()[:size])
    return path


# --- scenarios -------------------------------------------------------------------------------


def bench_single(tmp: Path, size_mb: int, repeat: int) -> list[tuple[str, Run]]:
    big = make_text_file(tmp / f"big-{size_mb}mb.txt", size_mb * 1024 * 1024)
    inproc = write_script(tmp, "kimi_inproc.py", KIMI_INPROC)
    sdk = write_script(tmp, "openai_create.py", OPENAI_CREATE)
    env = {"MOONSHOT_API_KEY": KEY, "KIMI_FILES_NO_PROGRESS": "1"}
    results: dict[str, list[Run]] = {}
    with emulator() as base:
        tools = {
            "curl -F": [shutil.which("curl") or "curl", "-s", "-S", "-o", "/dev/null",
                        "-H", f"Authorization: Bearer {KEY}", "-F", "purpose=file-extract",
                        "-F", f"file=@{big};type=text/plain", f"{base}/files"],
            "kimi_files.upload()": [PY, inproc, str(big), base],
            "kimi-upload (CLI)": [str(BIN / "kimi-upload"), "--no-state", "--no-progress",
                                  "--base-url", base, str(big)],
            "openai files.create": [PY, sdk, str(big), base],
        }
        for _ in range(repeat):  # interleaved, so drift hits every tool alike
            for name, cmd in tools.items():
                results.setdefault(name, []).append(measure(cmd, env))
                clear(base)
    return [(name, median_run(runs)) for name, runs in results.items()]


def bench_small_rss(tmp: Path, repeat: int) -> Run:
    small = make_text_file(tmp / "small-1mb.txt", 1024 * 1024)
    inproc = write_script(tmp, "kimi_inproc.py", KIMI_INPROC)
    with emulator() as base:
        runs = []
        for _ in range(repeat):
            runs.append(measure([PY, inproc, str(small), base], {"KIMI_FILES_NO_PROGRESS": "1"}))
            clear(base)
    return median_run(runs)


def bench_startup(tmp: Path, repeat: int) -> list[tuple[str, Run]]:
    small = make_text_file(tmp / "tiny.txt", 2000)
    env = {"MOONSHOT_API_KEY": KEY}
    out: list[tuple[str, Run]] = []
    with emulator() as base:
        cases = {
            "kimi-upload --help": [str(BIN / "kimi-upload"), "--help"],
            "python -c 'import kimi_files'": [PY, "-c", "import kimi_files"],
            "kimi-upload one small file": [str(BIN / "kimi-upload"), "--no-state",
                                           "--no-progress", "--base-url", base, str(small)],
            "curl -F one small file": [shutil.which("curl") or "curl", "-s", "-S", "-o",
                                       "/dev/null", "-H", f"Authorization: Bearer {KEY}", "-F",
                                       "purpose=file-extract", "-F", f"file=@{small}",
                                       f"{base}/files"],
        }
        runs: dict[str, list[Run]] = {}
        for _ in range(repeat):
            for name, cmd in cases.items():
                runs.setdefault(name, []).append(measure(cmd, env))
        clear(base)
        out = [(name, median_run(r)) for name, r in runs.items()]
    return out


def bench_folder(tmp: Path, n: int, delay: float, concurrency: int,
                 repeat: int) -> list[tuple[str, Run]]:
    folder = make_folder(tmp / f"folder-{n}", n)
    loop = write_script(tmp, "openai_loop.py", OPENAI_LOOP)
    env = {"MOONSHOT_API_KEY": KEY}
    tools = {
        "openai loop (docs)": [PY, loop, str(folder)],
        f"kimi-upload --concurrency {concurrency}": [
            str(BIN / "kimi-upload"), "--no-state", "--no-progress", "--concurrency",
            str(concurrency), str(folder), "--base-url"],
    }
    runs: dict[str, list[Run]] = {}
    with emulator("--extract-delay", str(delay)) as base:
        for _ in range(repeat):
            for name, cmd in tools.items():
                runs.setdefault(name, []).append(measure([*cmd, base], env))
                clear(base)
    return [(name, median_run(r)) for name, r in runs.items()]


def bench_list_calls(tmp: Path, sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(files in the batch, list calls, total requests), with an in-process emulator."""
    import kimi_files
    from kimi_files.emulator import Emulator

    rows = []
    with Emulator() as emu:
        for n in sizes:
            folder = make_folder(tmp / f"calls-{n}", n, size=100)
            emu.state.reset()
            with kimi_files.KimiFiles(api_key=KEY, base_url=emu.base_url) as client:
                kimi_files.ingest([folder], client=client, state=False, concurrency=8,
                                  progress=False)
            lists = sum(1 for r in emu.requests if r.method == "GET" and r.path == "/v1/files")
            rows.append((n, lists, len(emu.requests)))
    return rows


# --- report ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 MB, 2 repeats, 200 tiny files")
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size = 20 if args.quick else args.size_mb
    repeat = 2 if args.quick else args.repeat
    tiny = 200 if args.quick else 1000
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    import openai

    import kimi_files

    say(f"# kimi-files benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say()
    say(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, kimi-files {kimi_files.__version__}, openai "
        f"{openai.__version__}, curl {curl_version()}.")
    say(f"Command: `{' '.join([Path(PY).name, 'benchmarks/run.py', *sys.argv[1:]])}`; "
        f"medians of {repeat} interleaved runs; one emulator process on loopback.")
    with tempfile.TemporaryDirectory(prefix="kimi-bench-") as tmp_name:
        tmp = Path(tmp_name)
        single = bench_single(tmp, size, repeat)
        curl = dict(single)["curl -F"]
        say()
        say(f"## One {size} MB upload")
        say()
        say("| client | wall s | vs curl (time) | upload call s | peak RSS MB |")
        say("|---|---|---|---|---|")
        for name, r in single:
            inner = f"{r.inner_seconds:.2f}" if r.inner_seconds is not None else "-"
            say(f"| {name} | {r.seconds:.2f} | {r.seconds / curl.seconds:.2f}x | {inner} | "
                f"{r.rss_mb:.0f} |")
        inproc = dict(single)["kimi_files.upload()"]
        assert inproc.inner_seconds is not None
        say()
        say(f"- in-process throughput: {size / inproc.inner_seconds:.0f} MB/s, "
            f"{curl.seconds / inproc.inner_seconds:.0%} of curl's {size / curl.seconds:.0f} MB/s "
            "(goal: at least 90%)")
        say(f"- whole CLI process: {dict(single)['kimi-upload (CLI)'].seconds / curl.seconds:.2f}x "
            "curl's wall time (goal: at most 2x)")
        small = bench_small_rss(tmp, repeat)
        say(f"- peak RSS of kimi_files.upload(): {inproc.rss_mb:.0f} MB for {size} MB, "
            f"{small.rss_mb:.0f} MB for 1 MB (flat is the goal; under 64 MB)")
        sdk = dict(single)["openai files.create"]
        say(f"- the openai SDK: {sdk.rss_mb:.0f} MB peak RSS for the same file "
            f"({sdk.rss_mb / inproc.rss_mb:.1f}x kimi-files)")

        say()
        say("## Start-up")
        say()
        say("| command | wall s |")
        say("|---|---|")
        for name, r in bench_startup(tmp, max(repeat, 5)):
            say(f"| {name} | {r.seconds:.3f} |")

        say()
        say("## Folders")
        say()
        say("| batch | client | wall s | files/s | speed-up |")
        say("|---|---|---|---|---|")
        for label, n, delay in (("60 files, 0.1 s server time each", 60, 0.1),
                                (f"{tiny} tiny files, no delay", tiny, 0.0)):
            rows = bench_folder(tmp, n, delay, 8, max(1, repeat // 2 + 1))
            base_s = rows[0][1].seconds
            for name, r in rows:
                say(f"| {label} | {name} | {r.seconds:.2f} | {n / r.seconds:.1f} | "
                    f"{base_s / r.seconds:.1f}x |")

        say()
        say("## Preflight cost: list calls per batch")
        say()
        say("| files in the batch | list calls | all requests |")
        say("|---|---|---|")
        for n, lists, total in bench_list_calls(tmp, (10, 100, 1000 if not args.quick else 300)):
            say(f"| {n} | {lists} | {total} |")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
