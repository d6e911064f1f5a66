"""Side-by-side benchmarks: kimi-files against curl and the openai SDK, in one run.

    .venv/bin/python benchmarks/run.py            # everything, about 5 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # smaller sizes, 2 repeats, under a minute
    .venv/bin/python benchmarks/run.py --only fast   # one part: fast, growth, async, asyncspeed,
                                                     # reuse, emulator, extract

The main table runs against ``benchmarks/fastserver.py``, a raw-socket server in a process of
its own that drains bodies as fast as they come and answers at once, so the client is the
bottleneck (the emulator's multipart parsing is slower than every client, and hides it). The
emulator runs are kept as a second table. Each measurement runs the tool in its own process,
interleaved with the tools it is compared with (so drift hits all alike); figures are medians
and are read as ratios: these machines are noisy, absolute times are context only. Peak RSS is
the process's own (GNU ``time``'s %M when /usr/bin/time exists, otherwise VmHWM polled from
/proc). Results are printed as Markdown and written to benchmarks/results/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
BIN = Path(PY).parent
KEY = "bench-key"
CURL = shutil.which("curl") or "curl"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MiB = 1024 * 1024


# --- measuring a process ---------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    rss_mb: float
    inner_seconds: float | None = None  # the call alone, timed inside the process
    extra: dict[str, float] = field(default_factory=dict)  # other figures the script printed


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every measured process.

    PYTHONDONTWRITEBYTECODE is dropped: with it, every start recompiles the package (and the
    openai SDK), which is not what a user's machine does.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"MOONSHOT_API_KEY": KEY, "KIMI_FILES_NO_PROGRESS": "1"})
    for name in ("MOONSHOT_BASE_URL", "KIMI_API_KEY", "KIMI_BASE_URL", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    env.update(extra)
    return env


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


#: The cost of /usr/bin/time itself (fork + exec), subtracted from every wall time.
_TIME_OVERHEAD = 0.0


def calibrate() -> None:
    global _TIME_OVERHEAD
    if GNU_TIME is None:
        return
    true = shutil.which("true") or "/bin/true"
    bare, timed = [], []
    for _ in range(15):
        t = time.perf_counter()
        subprocess.run([true], check=True)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([GNU_TIME, "-f", "%M", "-o", os.devnull, true], check=True)
        timed.append(time.perf_counter() - t)
    _TIME_OVERHEAD = max(0.0, statistics.median(timed) - statistics.median(bare))


def measure(cmd: Sequence[str], env: dict[str, str], ok: Sequence[int] = (0,)) -> Run:
    """Run ``cmd`` to its end: wall time, peak RSS, and what it printed as {"inner": ...}."""
    with tempfile.TemporaryDirectory() as scratch:
        out_p, err_p, rss_p = (os.path.join(scratch, n) for n in ("out", "err", "rss"))
        full = [GNU_TIME, "-f", "%M", "-o", rss_p, *cmd] if GNU_TIME else list(cmd)
        with open(out_p, "wb") as out_f, open(err_p, "wb") as err_f:
            started = time.perf_counter()
            proc = subprocess.Popen(full, stdout=out_f, stderr=err_f, env=env)
            peak = [0]
            if GNU_TIME is None:
                def poll() -> None:
                    while proc.poll() is None:
                        peak[0] = max(peak[0], _hwm_kb(proc.pid))
                        time.sleep(0.003)
                poller = threading.Thread(target=poll, daemon=True)
                poller.start()
            status = proc.wait()
            elapsed = time.perf_counter() - started - _TIME_OVERHEAD
        out = Path(out_p).read_text(errors="replace")
        if GNU_TIME:
            lines = Path(rss_p).read_text().split()
            peak[0] = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        if status not in ok:
            err = Path(err_p).read_text(errors="replace")
            raise RuntimeError(f"{' '.join(cmd)[:200]} exited {status}: {err[-1500:]}{out[-500:]}")
    inner, extra = None, {}
    for line in out.splitlines():
        if line.startswith('{"inner"'):
            data = json.loads(line)
            inner = data.pop("inner")
            extra = {k: float(v) for k, v in data.items()}
    return Run(elapsed, peak[0] / 1024, inner, extra)


def med(runs: Sequence[Run]) -> Run:
    inner = [r.inner_seconds for r in runs if r.inner_seconds is not None]
    extra = {k: statistics.median(r.extra[k] for r in runs if k in r.extra)
             for k in (runs[0].extra if runs else {})}
    return Run(statistics.median(r.seconds for r in runs), max(r.rss_mb for r in runs),
               statistics.median(inner) if inner else None, extra)


def interleave(repeat: int, cases: dict[str, Callable[[], Run]],
               before: Callable[[], None] | None = None) -> dict[str, Run]:
    """Each case ``repeat`` times, in turn (the starting case rotates); their medians."""
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            if before:
                before()
            runs[name].append(cases[name]())
    return {name: med(r) for name, r in runs.items()}


# --- servers ---------------------------------------------------------------------------------


class Fast:
    """benchmarks/fastserver.py in a process of its own."""

    def __init__(self, delay: float = 0.0) -> None:
        self.proc = subprocess.Popen([PY, str(HERE / "fastserver.py"), "--delay", str(delay)],
                                     stdout=subprocess.PIPE, env=child_env(), text=True)
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()
        if not self.base.startswith("http://"):
            raise RuntimeError("benchmarks/fastserver.py did not start")
        self.port = int(self.base.split(":")[2].split("/")[0])

    def _ask(self, method: str, path: str) -> dict[str, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path)
            return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
        finally:
            conn.close()

    def reset(self) -> None:
        self._ask("POST", "/bench/reset")

    def reset_counts(self) -> None:
        self._ask("POST", "/bench/reset-counts")

    def requests(self) -> dict[str, int]:
        counts = self._ask("GET", "/bench/stats")["requests"]
        assert isinstance(counts, dict)
        return {k: int(v) for k, v in counts.items() if " /v1/" in k}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@contextlib.contextmanager
def fast_server(delay: float = 0.0) -> Iterator[Fast]:
    server = Fast(delay)
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "kimi_files.emulator", "--port", str(port),
                             "--log-level", "warning", "--max-files", "100000",
                             "--max-total-bytes", str(1 << 40), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(400):
            try:
                _emu_ask(base, "GET")
                break
            except OSError:
                time.sleep(0.025)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def _emu_ask(base: str, method: str, path: str = "/v1/files") -> object:
    port = int(base.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def emu_clear(base: str) -> None:
    listing = _emu_ask(base, "GET")
    assert isinstance(listing, dict)
    for f in listing["data"]:
        _emu_ask(base, "DELETE", f"/v1/files/{f['id']}")


# --- the clients being compared --------------------------------------------------------------

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

# Issue #10: the threaded batch, the baseline of the async one.
KIMI_INGEST = textwrap.dedent("""
    import json, sys, time
    import kimi_files
    folder, base, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = kimi_files.KimiFiles(api_key=KEY, base_url=base)
    t = time.perf_counter()
    report = kimi_files.ingest([folder], client=client, state=False, concurrency=concurrency,
                               progress=False)
    assert report.ok, report.summary()
    print(json.dumps({"inner": time.perf_counter() - t}))
""").replace("KEY", repr(KEY))

# Issue #10, to be checked against the async API once it exists (names from the issue).
KIMI_AINGEST = textwrap.dedent("""
    import asyncio, json, sys, time
    import kimi_files
    folder, base, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    async def main():
        async with kimi_files.AsyncKimiFiles(api_key=KEY, base_url=base) as client:
            t = time.perf_counter()
            report = await kimi_files.aingest([folder], client=client, state=False,
                                              concurrency=concurrency, progress=False)
            assert report.ok, report.summary()
            return time.perf_counter() - t
    print(json.dumps({"inner": asyncio.run(main())}))
""").replace("KEY", repr(KEY))

KIMI_AUPLOAD_MANY = textwrap.dedent("""
    import asyncio, json, sys, threading, time
    from pathlib import Path
    import kimi_files
    folder, base, concurrency = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    async def main():
        peak = threading.active_count()
        sem = asyncio.Semaphore(concurrency)
        async with kimi_files.AsyncKimiFiles(api_key=KEY, base_url=base) as client:
            async def one(p):
                nonlocal peak
                async with sem:
                    peak = max(peak, threading.active_count())
                    return await client.upload(p, progress=False)
            t = time.perf_counter()
            await asyncio.gather(*(one(p) for p in paths))
            return time.perf_counter() - t, peak
    took, threads = asyncio.run(main())
    print(json.dumps({"inner": took, "threads": threads}))
""").replace("KEY", repr(KEY))

# Issue #11, to be checked against the reuse API once it exists (names from the issue).
KIMI_MESSAGES = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import kimi_files
    folder, base = Path(sys.argv[1]), sys.argv[2]
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    client = kimi_files.KimiFiles(api_key=KEY, base_url=base)
    t = time.perf_counter()
    kimi_files.messages(paths, client=client)
    print(json.dumps({"inner": time.perf_counter() - t}))
""").replace("KEY", repr(KEY))


# Issue #20: upload() calls, sync or async, with the reuse cache (the default: the bytes are
# hashed as they are sent) or without (cache=False: nothing hashed). "first" is the process's
# first call (what the client's first requests import and set up included); "inner" the next
# one, after the fast server forgot the first (so nothing is reused, nothing hashed twice).
KIMI_TWO_CALLS = textwrap.dedent("""
    import asyncio, json, sys, time, urllib.request
    import kimi_files
    mode, path, base, cache = sys.argv[1:5]
    kw = {} if cache == "cache" else {"cache": False}
    def reset():
        req = urllib.request.Request(base.rsplit("/v1", 1)[0] + "/bench/reset", method="POST")
        urllib.request.urlopen(req).read()
    took, cpu = [], []
    if mode == "sync":
        with kimi_files.KimiFiles(api_key=KEY, base_url=base, **kw) as client:
            for _ in range(2):
                reset()
                c, t = time.process_time(), time.perf_counter()
                client.upload(path, progress=False)
                took.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
    else:
        async def main():
            async with kimi_files.AsyncKimiFiles(api_key=KEY, base_url=base, **kw) as client:
                for _ in range(2):
                    reset()
                    c, t = time.process_time(), time.perf_counter()
                    await client.upload(path, progress=False)
                    took.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
        asyncio.run(main())
    print(json.dumps({"inner": took[1], "first": took[0], "cpu": cpu[1]}))
""").replace("KEY", repr(KEY))

# Issue #20: the cold path, a whole process: import, build the client, one small upload.
KIMI_COLD = textwrap.dedent("""
    import sys
    import kimi_files
    kimi_files.upload(sys.argv[1], base_url=sys.argv[2], progress=False)
""")


def kimi_upload(*args: str) -> list[str]:
    return [str(BIN / "kimi-upload"), "--no-progress", *args]


def curl_upload(path: Path | str, base: str) -> list[str]:
    return [CURL, "-s", "-S", "-f", "-o", "/dev/null", "-H", f"Authorization: Bearer {KEY}",
            "-F", "purpose=file-extract", "-F", f"file=@{path};type=text/plain", f"{base}/files"]


def curl_sequential(folder: Path, base: str) -> list[str]:
    """One curl after another over a folder's files (a shell loop)."""
    script = (f'for f in "$1"/*; do "{CURL}" -s -S -f -o /dev/null '
              f'-H "Authorization: Bearer {KEY}" -F purpose=file-extract '
              f'-F "file=@$f;type=text/plain" "$2/files" || exit 1; done')
    return ["sh", "-c", script, "sh", str(folder), base]


# --- test data -------------------------------------------------------------------------------

LINE = b"The quick brown fox jumps over the lazy dog; kimi-files benchmark line.\n"


def make_text_file(path: Path, size: int, tag: str = "") -> Path:
    """A text file of ``size`` bytes; ``tag`` makes its content differ from its siblings'."""
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    block = LINE * (MiB // len(LINE) + 1)
    with path.open("wb") as fh:
        first = f"{tag} {path.name}\n".encode()
        fh.write(first[:size])
        written = min(len(first), size)
        while written < size:
            chunk = block[: min(len(block), size - written)]
            fh.write(chunk)
            written += len(chunk)
    return path


def make_folder(path: Path, n: int, size: int = 2000) -> Path:
    """``n`` small text files of distinct content (no two alike: no twins), in 100 folders."""
    if path.exists():
        return path
    width = max(1, len(str(min(n, 100) - 1)))
    for i in range(n):
        sub = path / f"d{i % 100:0{width}d}"
        if i < 100:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc{i:05d}.txt").write_bytes((f"document {i} " * (size // 12 + 1)).encode()[:size])
    return path


# --- the report ------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.say("| " + " | ".join(header) + " |")
        self.say("|" + "---|" * len(header))
        for row in rows:
            self.say("| " + " | ".join(str(c) for c in row) + " |")
        self.say()


def s(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f} s"


def mb(x: float) -> str:
    return f"{x:.0f} MiB"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "not met"


# --- the cases -------------------------------------------------------------------------------


@dataclass
class Opts:
    quick: bool
    repeat: int
    big_mb: int  # the large single upload
    many_n: int  # tiny files uploaded in one batch
    dry_sizes: tuple[int, ...]  # the planning growth
    par_files: int  # the parallel large uploads
    par_mb: int
    dry_repeat: int  # the 50,000-file dry run takes 23 s today


def fast_tables(tmp: Path, o: Opts, r: Report) -> None:
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-none"))
    big = make_text_file(tmp / f"big-{o.big_mb}mib.txt", o.big_mb * MiB)
    small = make_text_file(tmp / "small-2kb.txt", 2000)
    inproc = tmp / "kimi_inproc.py"
    inproc.write_text(KIMI_INPROC)
    sdk = tmp / "openai_create.py"
    sdk.write_text(OPENAI_CREATE)
    loop = tmp / "openai_loop.py"
    loop.write_text(OPENAI_LOOP)
    rows: list[list[object]] = []
    with fast_server() as srv:
        base = srv.base

        def tool(cmd: list[str], ok: Sequence[int] = (0,), e: dict[str, str] = env) -> Callable[[], Run]:
            return lambda: measure(cmd, e, ok)

        for warm in ([PY, str(inproc), str(small), base], [PY, str(sdk), str(small), base],
                     kimi_upload("--no-state", "--base-url", base, str(small))):
            measure(warm, env)  # compile and cache before anything is timed
        srv.reset()

        # one large file
        one = interleave(o.repeat, {
            "curl": tool(curl_upload(big, base)),
            "upload()": tool([PY, str(inproc), str(big), base]),
            "kimi-upload": tool(kimi_upload("--no-state", "--base-url", base, str(big))),
            "openai": tool([PY, str(sdk), str(big), base]),
        }, before=srv.reset)
        curl, call, cli, sdk_run = one["curl"], one["upload()"], one["kimi-upload"], one["openai"]
        assert call.inner_seconds is not None and sdk_run.inner_seconds is not None
        rows.append([f"{o.big_mb} MiB, the `upload()` call alone (client built)",
                     f"{s(curl.seconds)} whole process",
                     f"`files.create` call {s(sdk_run.inner_seconds)}",
                     f"{s(call.inner_seconds)}: **{call.inner_seconds / curl.seconds:.2f}x curl**, "
                     f"{call.inner_seconds / sdk_run.inner_seconds:.2f}x the SDK's call",
                     "<= 1.2x curl", verdict(call.inner_seconds <= 1.2 * curl.seconds)])
        rows.append([f"{o.big_mb} MiB, `kimi-upload` whole process",
                     f"{s(curl.seconds)}, {mb(curl.rss_mb)}",
                     f"{s(sdk_run.seconds)}, {mb(sdk_run.rss_mb)}",
                     f"{s(cli.seconds)}: **{cli.seconds / curl.seconds:.2f}x curl**, "
                     f"{mb(cli.rss_mb)}",
                     "<= 2x curl, <= 40 MiB",
                     verdict(cli.seconds <= 2 * curl.seconds and cli.rss_mb <= 40)])

        # start-up
        start = interleave(max(o.repeat, 5), {
            "curl small": tool(curl_upload(small, base)),
            "kimi-upload small": tool(kimi_upload("--no-state", "--base-url", base, str(small))),
            "help": tool(kimi_upload("--help")),
            "import openai": tool([PY, "-c", "import openai"]),
        }, before=srv.reset)
        one_small = start["kimi-upload small"]
        rows.append(["one 2 KB file, `kimi-upload` whole process", s(start["curl small"].seconds),
                     "-", f"{s(one_small.seconds)} ({one_small.seconds / start['curl small'].seconds:.0f}x"
                     f" curl), {mb(one_small.rss_mb)}", "<= 0.12 s",
                     verdict(one_small.seconds <= 0.12)])
        rows.append(["`kimi-upload --help`", "-", f"`import openai` {s(start['import openai'].seconds)}",
                     s(start["help"].seconds), "<= 0.06 s", verdict(start["help"].seconds <= 0.06)])

        # planning: a dry run over many tiny files (the largest of the growth series)
        n_dry = o.dry_sizes[-1]
        dry = dry_run(tmp, n_dry, srv, env, o.dry_repeat)
        rows.append([f"`--dry-run` over {n_dry:,} tiny files", "-", "-",
                     f"{s(dry.seconds, 2)}, {mb(dry.rss_mb)} ({dry.rss_mb * 1024 / n_dry:.1f} KiB "
                     "per file)", "<= 5 s, <= 80 MiB (50,000 files)",
                     verdict(dry.seconds <= 5 * n_dry / 50_000 and dry.rss_mb <= 80)])

        # a re-run over files already uploaded (the state says so; the listing confirms)
        n_re = o.many_n
        re_folder = make_folder(tmp / f"tiny-{n_re}", n_re)
        re_env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-rerun"))
        srv.reset()
        measure(kimi_upload("--concurrency", "8", "--base-url", base, str(re_folder)), re_env)
        rerun_runs, rerun_requests = [], []
        for _ in range(o.repeat):
            srv.reset_counts()
            rerun_runs.append(measure(kimi_upload("--base-url", base, str(re_folder)), re_env))
            rerun_requests.append(sum(srv.requests().values()))
        rerun = med(rerun_runs)
        reqs = max(rerun_requests)
        rows.append([f"re-run over {n_re:,} already uploaded files", "-", "-",
                     f"{s(rerun.seconds, 2)}, {reqs} request(s), {mb(rerun.rss_mb)}",
                     "<= 0.3 s (1,000 files)",
                     verdict(rerun.seconds <= 0.3 * n_re / 1000 and reqs == 1)])

        # several large files at once
        par_folder = tmp / f"par-{o.par_files}x{o.par_mb}"
        for i in range(o.par_files):
            make_text_file(par_folder / f"part{i:02d}.txt", o.par_mb * MiB, tag=str(i))
        par = interleave(o.repeat, {
            "curl": tool(curl_sequential(par_folder, base)),
            "kimi": tool(kimi_upload("--no-state", "--concurrency", "4", "--base-url", base,
                                     str(par_folder))),
        }, before=srv.reset)
        ratio = par["kimi"].seconds / par["curl"].seconds
        rows.append([f"{o.par_files} x {o.par_mb} MiB at --concurrency 4",
                     f"sequential curl 1.0x ({s(par['curl'].seconds, 2)})", "-",
                     f"**{ratio:.2f}x** curl's time ({s(par['kimi'].seconds, 2)}, "
                     f"{mb(par['kimi'].rss_mb)})", "<= 1.2x", verdict(ratio <= 1.2)])

        # many tiny files, no server time
        many = interleave(o.repeat, {
            "openai loop": tool([PY, str(loop), str(re_folder), base]),
            "kimi": tool(kimi_upload("--no-state", "--concurrency", "8", "--base-url", base,
                                     str(re_folder))),
            "kimi c1": tool(kimi_upload("--no-state", "--concurrency", "1", "--base-url", base,
                                        str(re_folder))),
        }, before=srv.reset)
        speed = many["openai loop"].seconds / many["kimi"].seconds
        rows.append([f"{n_re:,} tiny files, server without delay, --concurrency 8", "-",
                     f"docs' loop 1.0x ({s(many['openai loop'].seconds, 2)})",
                     f"**{speed:.2f}x** the loop's speed ({s(many['kimi'].seconds, 2)}; at "
                     f"--concurrency 1: {s(many['kimi c1'].seconds, 2)})", ">= 3x",
                     verdict(speed >= 3)])

    r.say("## Against the fast server (the client is the bottleneck)")
    r.say()
    r.say(f"Medians of {o.repeat} interleaved runs (start-up: {max(o.repeat, 5)}; the dry run: "
          f"{o.dry_repeat}), whole processes unless it says \"call\"; "
          "`kimi-upload --no-state` except for the re-run, which uses a state in a temporary "
          "directory, and the dry run (default state location, also temporary).")
    r.say()
    r.table(["case", "curl", "openai SDK", "kimi-files today", "goal (#12)", "goal"], rows)


_dry_done: dict[int, Run] = {}


def dry_run(tmp: Path, n: int, srv: Fast, env: dict[str, str], repeat: int) -> Run:
    """``kimi-upload --dry-run`` over ``n`` tiny files (measured once per run of this script)."""
    if n not in _dry_done:
        folder = make_folder(tmp / f"plan-{n}", n, size=150)
        srv.reset()
        cmd = kimi_upload("--dry-run", "--base-url", srv.base, str(folder))
        _dry_done[n] = med([measure(cmd, env, ok=(0, 1)) for _ in range(repeat)])
    return _dry_done[n]


def growth_table(tmp: Path, o: Opts, r: Report) -> None:
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-growth"))
    inproc = tmp / "kimi_inproc.py"
    inproc.write_text(KIMI_INPROC)
    sizes = (1, 10, 100) if not o.quick else (1, 10, 20)
    rows: list[list[object]] = []
    with fast_server() as srv:
        base = srv.base
        measure([PY, str(inproc), str(make_text_file(tmp / "small-2kb.txt", 2000)), base], env)
        for size in sizes:
            f = make_text_file(tmp / f"big-{size}mib.txt", size * MiB)
            res = interleave(o.repeat, {
                "curl": lambda f=f: measure(curl_upload(f, base), env),
                "call": lambda f=f: measure([PY, str(inproc), str(f), base], env),
                "cli": lambda f=f: measure(kimi_upload("--no-state", "--base-url", base, str(f)), env),
            }, before=srv.reset)
            call = res["call"].inner_seconds or 0.0
            rows.append([f"{size} MiB", s(res["curl"].seconds), f"{s(call)} ({size / call:.0f} MiB/s)",
                         f"{s(res['cli'].seconds)}, {mb(res['cli'].rss_mb)}",
                         f"{mb(res['call'].rss_mb)}"])
        r.say("## How the cost grows")
        r.say()
        r.say("One file (medians of interleaved runs; the call alone is timed inside its process, "
              "whose peak RSS is the last column):")
        r.say()
        r.table(["file", "curl (process)", "`upload()` call", "`kimi-upload` (process, RSS)",
                 "`upload()` process RSS"], rows)
        rows = []
        for n in o.dry_sizes:
            d = dry_run(tmp, n, srv, env, o.dry_repeat)
            rows.append([f"{n:,}", s(d.seconds, 2), f"{d.seconds / n * 1e6:.0f} µs",
                         mb(d.rss_mb), f"{d.rss_mb * 1024 / n:.1f} KiB"])
        r.say("Planning: `kimi-upload --dry-run` over tiny files (150 bytes each, in 100 folders; "
              f"one list call to the fast server; median of {o.dry_repeat} runs; more than 1,000 "
              "files do not fit the account, so the plan refuses them, as a real one would):")
        r.say()
        r.table(["files", "wall", "per file", "peak RSS", "RSS per file"], rows)


def async_table(tmp: Path, o: Opts, r: Report) -> None:
    """Issue #10's figures. The async side is skipped until kimi_files.AsyncKimiFiles exists."""
    import kimi_files

    has_async = hasattr(kimi_files, "AsyncKimiFiles") and hasattr(kimi_files, "aingest")
    why = "skipped: kimi_files.AsyncKimiFiles / aingest do not exist yet (issue #10)"
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-async"))
    n = 200 if not o.quick else 64
    folder = make_folder(tmp / f"tiny-async-{n}", n)
    n_many = 1000 if not o.quick else 200
    many_folder = make_folder(tmp / f"tiny-{n_many}", n_many)
    scripts = {}
    for name, text in (("ingest", KIMI_INGEST), ("aingest", KIMI_AINGEST),
                       ("aupload", KIMI_AUPLOAD_MANY)):
        scripts[name] = tmp / f"kimi_{name}.py"
        scripts[name].write_text(text)
    rows: list[list[object]] = []
    with fast_server(delay=0.1) as srv:
        cases = {"ingest": lambda: measure([PY, str(scripts["ingest"]), str(folder), srv.base, "16"],
                                           env)}
        if has_async:
            cases["aingest"] = lambda: measure([PY, str(scripts["aingest"]), str(folder), srv.base,
                                                "16"], env)
        try:
            res = interleave(max(1, o.repeat - 2), cases, before=srv.reset)
        except RuntimeError as exc:  # the async API differs from the names: say so
            res = interleave(1, {"ingest": cases["ingest"]}, before=srv.reset)
            why = f"failed: {str(exc).splitlines()[-1][:200]} (adjust KIMI_AINGEST in run.py)"
            has_async = False
        threaded = res["ingest"]
        rows.append([f"{n} files, 0.1 s per request, concurrency 16",
                     f"`ingest` (threads): {s(threaded.inner_seconds, 2)}, {mb(threaded.rss_mb)}",
                     (f"`aingest`: {s(res['aingest'].inner_seconds, 2)}, {mb(res['aingest'].rss_mb)}"
                      if has_async else why),
                     "aingest <= ingest",
                     verdict((res["aingest"].inner_seconds or 1e9) <= (threaded.inner_seconds or 0))
                     if has_async else "-"])
        if has_async:
            try:
                srv.reset()
                many = measure([PY, str(scripts["aupload"]), str(many_folder), srv.base, "32"], env)
                rows.append([f"{n_many:,} `aupload` tasks gathered, concurrency 32, 0.1 s per request",
                             "-", f"{s(many.inner_seconds, 2)}, {mb(many.rss_mb)}, "
                             f"{many.extra.get('threads', 0):.0f} threads at most",
                             "no thread per upload, < 80 MB", verdict(many.rss_mb < 80 * 1e6 / MiB)])
            except RuntimeError as exc:
                rows.append([f"{n_many:,} `aupload` tasks", "-",
                             f"failed: {str(exc).splitlines()[-1][:200]}", "< 80 MB", "-"])
        else:
            rows.append([f"{n_many:,} `aupload` tasks gathered, concurrency 32, 0.1 s per request",
                         "-", why, "no thread per upload, peak RSS < 80 MB", "-"])
    r.say("## Async (issue #10)")
    r.say()
    r.say("Against the fast server with `--delay 0.1` (0.1 s before each answer); the call is "
          "timed inside its process. The async rows fill themselves in once the API exists "
          "(the scripts KIMI_AINGEST and KIMI_AUPLOAD_MANY in run.py use the issue's names).")
    r.say()
    r.table(["figure", "threaded", "async", "goal (#10)", "goal"], rows)


def asyncspeed_table(tmp: Path, o: Opts, r: Report) -> None:
    """Issue #20: the async client's large upload against the sync one's, and the cold path."""
    big = make_text_file(tmp / f"big-{o.big_mb}mib.txt", o.big_mb * MiB)
    small = make_text_file(tmp / "small-2kb.txt", 2000)
    calls = tmp / "kimi_two_calls.py"
    calls.write_text(KIMI_TWO_CALLS)
    cold = tmp / "kimi_cold.py"
    cold.write_text(KIMI_COLD)
    # one state for every run, made by the warm-up: a returning user's (the cache exists)
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-asyncspeed"))
    rows: list[list[object]] = []
    with fast_server() as srv:
        base = srv.base

        def tool(cmd: list[str]) -> Callable[[], Run]:
            return lambda: measure(cmd, env)

        for warm in ([PY, str(calls), "sync", str(small), base, "cache"],
                     [PY, str(calls), "async", str(small), base, "cache"],
                     [PY, str(cold), str(small), base]):
            srv.reset()
            measure(warm, env)  # compile and cache before anything is timed
        for cache, what in (("cache", "reuse cache on (the default: hashed as sent)"),
                            ("nocache", "`cache=False` (nothing hashed)")):
            res = interleave(o.repeat, {
                mode: tool([PY, str(calls), mode, str(big), base, cache])
                for mode in ("sync", "async")})
            sync, asy = res["sync"], res["async"]
            assert sync.inner_seconds is not None and asy.inner_seconds is not None
            ratio = asy.inner_seconds / sync.inner_seconds
            first = asy.extra["first"] / sync.extra["first"]
            rows.append([f"{o.big_mb} MiB, {what}", f"{s(sync.inner_seconds)} (CPU {s(sync.extra['cpu'])})",
                         f"{s(asy.inner_seconds)}: **{ratio:.2f}x sync** (CPU {s(asy.extra['cpu'])})",
                         f"{s(sync.extra['first'])} / {s(asy.extra['first'])}: {first:.2f}x",
                         f"{s(sync.seconds)} / {s(asy.seconds)}: {asy.seconds / sync.seconds:.2f}x, "
                         f"{mb(sync.rss_mb)} / {mb(asy.rss_mb)}",
                         "<= 1.25x sync", verdict(ratio <= 1.25)])
        start = interleave(max(o.repeat, 5), {
            "python": tool([PY, "-c", "pass"]),
            "import": tool([PY, "-c", "import kimi_files"]),
            "cold": tool([PY, str(cold), str(small), base]),
            "curl": tool(curl_upload(small, base)),
        }, before=srv.reset)
    r.say("## Async at sync speed, and the cold path (issue #20)")
    r.say()
    r.say("Against the fast server (no delay), sync and async interleaved, medians of "
          f"{o.repeat}. The call: the second `upload()` of a process, on a client that made "
          "requests before (the first call also pays for what the client's first requests "
          "import, anyio's asyncio backend under httpx's async client); then the first call, "
          "and the whole process (import, client, two uploads, exit). CPU: the process's, all "
          "threads, over the call (the loop's, the reader's, the hasher's; not the server's).")
    r.say()
    r.table(["case", "`KimiFiles` call", "`AsyncKimiFiles` call", "first call (sync / async)",
             "whole process (sync / async), peak RSS", "goal", "verdict"], rows)
    r.say()
    r.say(f"Cold path, whole processes (medians of {max(o.repeat, 5)}): `python -c pass` "
          f"{s(start['python'].seconds)}, `python -c 'import kimi_files'` "
          f"{s(start['import'].seconds)}, `import kimi_files; kimi_files.upload(small)` (one "
          f"2 KB file over plain http to loopback, the reuse cache on) "
          f"**{s(start['cold'].seconds)}**, {mb(start['cold'].rss_mb)}; curl -F "
          f"{s(start['curl'].seconds)}.")
    r.say()


def reuse_table(tmp: Path, o: Opts, r: Report) -> None:
    """Issue #11's figures. Skipped until kimi_files.messages exists."""
    import kimi_files

    why = "skipped: kimi_files.messages does not exist yet (issue #11)"
    rows: list[list[object]] = []
    script = tmp / "kimi_messages.py"
    script.write_text(KIMI_MESSAGES)
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-reuse"))
    n = 1000 if not o.quick else 200
    if not hasattr(kimi_files, "messages"):
        rows.append(["re-run of `messages()` over the 12-file sample corpus (emulator)",
                     why, "0 uploads, 0 content calls", "-"])
        rows.append([f"re-run of `messages()` over {n:,} files, everything cached (fast server)",
                     why, "1 list call, < 1 s", "-"])
    else:
        corpus = ROOT / "examples" / "corpus"
        try:
            from kimi_files.emulator import Emulator

            with Emulator(api_key=KEY) as emu:
                measure([PY, str(script), str(corpus), emu.base_url], env)
                emu.requests.clear()
                measure([PY, str(script), str(corpus), emu.base_url], env)
                ups = sum(1 for q in emu.requests if q.method == "POST")
                contents = sum(1 for q in emu.requests if q.path.endswith("/content"))
            rows.append(["re-run of `messages()` over the sample corpus (emulator)",
                         f"{ups} uploads, {contents} content calls", "0 uploads, 0 content calls",
                         verdict(ups == 0 and contents == 0)])
            folder = make_folder(tmp / f"tiny-{n}", n)
            with fast_server() as srv:
                measure([PY, str(script), str(folder), srv.base], env)
                srv.reset_counts()
                again = measure([PY, str(script), str(folder), srv.base], env)
                reqs = srv.requests()
            total = sum(reqs.values())
            lists = reqs.get("GET /v1/files", 0)
            rows.append([f"re-run of `messages()` over {n:,} files, everything cached",
                         f"{s(again.seconds, 2)}, {total} request(s) ({lists} list)",
                         "1 list call, < 1 s", verdict(total <= 1 and lists <= 1 and again.seconds < 1)])
        except (RuntimeError, AttributeError, OSError) as exc:
            rows.append(["`messages()` re-runs", f"failed: {str(exc).splitlines()[-1][:200]} "
                         "(adjust KIMI_MESSAGES in run.py)", "-", "-"])
    r.say("## Reuse (issue #11)")
    r.say()
    r.table(["figure", "kimi-files", "goal (#11)", "goal"], rows)


def emulator_tables(tmp: Path, o: Opts, r: Report) -> None:
    """The same clients against the bundled emulator (its multipart parsing dominates)."""
    env = child_env(KIMI_FILES_STATE_DIR=str(tmp / "state-emu"))
    size = o.big_mb
    big = make_text_file(tmp / f"big-{size}mib.txt", size * MiB)
    inproc, sdk, loop = tmp / "kimi_inproc.py", tmp / "openai_create.py", tmp / "openai_loop.py"
    inproc.write_text(KIMI_INPROC)
    sdk.write_text(OPENAI_CREATE)
    loop.write_text(OPENAI_LOOP)
    repeat = max(1, o.repeat - 2)
    with emulator() as base:
        one = interleave(repeat, {
            "curl -F": lambda: measure(curl_upload(big, base), env),
            "kimi_files.upload()": lambda: measure([PY, str(inproc), str(big), base], env),
            "kimi-upload (CLI)": lambda: measure(kimi_upload("--no-state", "--base-url", base,
                                                             str(big)), env),
            "openai files.create": lambda: measure([PY, str(sdk), str(big), base], env),
        }, before=lambda: emu_clear(base))
    curl = one["curl -F"]
    r.say("## Against the emulator (second table)")
    r.say()
    r.say(f"The bundled emulator (Starlette + python-multipart) serves; its parsing is slower "
          f"than every client, so these ratios flatter the clients. Medians of {repeat}.")
    r.say()
    r.table(["client", f"{size} MiB: wall", "vs curl", "call alone", "peak RSS"],
            [[name, s(x.seconds, 2), f"{x.seconds / curl.seconds:.2f}x", s(x.inner_seconds, 2),
              mb(x.rss_mb)] for name, x in one.items()])
    rows = []
    tiny = o.many_n
    for label, n, delay in (("60 files, 0.1 s server time each", 60, 0.1),
                            (f"{tiny:,} tiny files, no delay", tiny, 0.0)):
        folder = make_folder(tmp / f"tiny-{n}", n)
        with emulator("--extract-delay", str(delay)) as base:
            res = interleave(max(1, repeat - 1), {
                "openai loop (docs)": lambda f=folder, b=base: measure([PY, str(loop), str(f), b], env),
                "kimi-upload --concurrency 8": lambda f=folder, b=base: measure(
                    kimi_upload("--no-state", "--concurrency", "8", "--base-url", b, str(f)), env),
            }, before=lambda b=base: emu_clear(b))
        first = res["openai loop (docs)"].seconds
        for name, x in res.items():
            rows.append([label, name, s(x.seconds, 2), f"{n / x.seconds:.0f}", f"{first / x.seconds:.1f}x"])
    r.table(["batch", "client", "wall", "files/s", "speed-up"], rows)


def kimi_extract(*args: str) -> list[str]:
    return [str(BIN / "kimi-files"), "extract", "--no-progress", *args]


def _lines_of(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _fresh(tmp: Path, name: str) -> dict[str, str]:
    """An environment whose state and caches are new: every document is uploaded."""
    where = Path(tempfile.mkdtemp(dir=tmp, prefix=f"state-{name}-"))
    return child_env(KIMI_FILES_STATE_DIR=str(where))


def _checked_extract(folder: Path, n: int, out: Path, base: str) -> str:
    """What a finished extract wrote, checked: every document once and ok, none left."""
    lines = _lines_of(out)
    paths = [str(line["path"]) for line in lines]
    listing = _emu_ask(base, "GET")
    assert isinstance(listing, dict)
    left = len(listing["data"])
    ok = sum(line["status"] == "ok" for line in lines)
    once = len(paths) == len(set(paths)) == n
    if not (once and ok == n and left == 0):
        raise RuntimeError(f"extract of {folder}: {len(paths)} lines ({len(set(paths))} "
                           f"distinct) of {n}, {ok} ok, {left} files left")
    return f"{n:,} lines, all ok, each once; 0 left"


def extract_tables(tmp: Path, o: Opts, r: Report) -> None:
    """Issue #17: a corpus larger than the account, through the rolling window."""
    r.say("## Extract: a corpus of any size within the quota (issue #17)")
    r.say()
    r.say("`kimi-files extract FOLDER -o OUT.jsonl` against the emulator in a process of its "
          "own, a new state (and text cache) for each run, so every document is uploaded, read "
          "and deleted. Each result is checked: one `ok` line per document, 0 files left.")
    r.say()
    rows = []
    big_n = 1500 if not o.quick else 300
    cases = [(f"{big_n:,} docs through a 1,000-file account", big_n, "1000"),
             (f"{big_n:,} docs through an account with 10 free slots", big_n, "10")]
    for label, n, max_files in cases:
        folder = make_folder(tmp / f"extract-{n}", n)
        with emulator("--max-files", max_files) as base:
            out = tmp / f"extract-{n}-{max_files}.jsonl"
            out.unlink(missing_ok=True)
            run = measure(kimi_extract(str(folder), "-o", str(out), "--concurrency", "8",
                                       "--base-url", base), _fresh(tmp, "big"))
            rows.append([label, s(run.seconds, 1), f"{n / run.seconds:.0f}", mb(run.rss_mb),
                         _checked_extract(folder, n, out, base)])
    flat = []
    for n in ((1000, 10_000) if not o.quick else (500, 2000)):
        folder = make_folder(tmp / f"extract-{n}", n, size=300)
        with emulator() as base:
            out = tmp / f"extract-flat-{n}.jsonl"
            out.unlink(missing_ok=True)
            run = measure(kimi_extract(str(folder), "-o", str(out), "--concurrency", "8",
                                       "--base-url", base), _fresh(tmp, "flat"))
            _checked_extract(folder, n, out, base)
            flat.append((n, run))
            rows.append([f"{n:,} docs (300 B), empty account", s(run.seconds, 1),
                         f"{n / run.seconds:.0f}", mb(run.rss_mb), "checked as above"])
    r.table(["corpus", "wall", "docs/s", "peak RSS", "result"], rows)
    (n1, a), (n2, b) = flat
    r.say(f"Peak RSS {mb(a.rss_mb)} at {n1:,} documents, {mb(b.rss_mb)} at {n2:,} "
          f"({b.rss_mb - a.rss_mb:+.0f} MiB for {n2 // n1}x the documents). Goal: the "
          f"{big_n:,} through 1,000 at <= 120 MiB: "
          f"{verdict(all(float(row[3].split()[0]) <= 120 for row in rows[:2]))}.")
    r.say()
    # extract against kimi-upload, 0.1 s of server time per upload
    n = 80
    folder = make_folder(tmp / "extract-80", n)
    with emulator("--extract-delay", "0.1") as base:
        outs = iter(range(10**6))
        res = interleave(max(1, o.repeat - 2), {
            "kimi-upload --concurrency 8": lambda: measure(kimi_upload(
                "--no-state", "--no-reuse", "--concurrency", "8", "--base-url", base,
                str(folder)), _fresh(tmp, "up")),
            "kimi-files extract --concurrency 8": lambda: measure(kimi_extract(
                str(folder), "-o", str(tmp / f"x80-{next(outs)}.jsonl"), "--concurrency", "8",
                "--base-url", base), _fresh(tmp, "x")),
        }, before=lambda: emu_clear(base))
    up, ex = res["kimi-upload --concurrency 8"], res["kimi-files extract --concurrency 8"]
    r.table(["80 docs, 0.1 s server time per upload", "wall", "peak RSS"],
            [[name, s(x.seconds, 2), mb(x.rss_mb)] for name, x in res.items()])
    ratio = ex.seconds / up.seconds
    r.say(f"extract / kimi-upload: {ratio:.2f}x (upload, then content and delete for each "
          f"document). Goal <= 1.5x: {verdict(ratio <= 1.5)}.")
    r.say()
    # kill -9 at random moments, then a re-run
    import random
    import signal

    rng = random.Random(17)
    n, kills = (600, 20) if not o.quick else (120, 5)
    folder = make_folder(tmp / f"extract-kill-{n}", n)
    env = _fresh(tmp, "kill")
    out = tmp / "extract-kill.jsonl"
    out.unlink(missing_ok=True)
    with emulator("--extract-delay", "0.02", "--max-files", "50") as base:
        cmd = kimi_extract(str(folder), "-o", str(out), "--concurrency", "4", "--base-url", base)
        interrupted = 0
        for _ in range(kills):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 1.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                interrupted += 1
            proc.wait()
        written = len(_lines_of(out)) if out.exists() else 0
        measure(cmd, env)
        checked = _checked_extract(folder, n, out, base)
    r.say(f"kill -9 at random moments of {kills} runs ({interrupted} of them interrupted "
          f"mid-run; {written} of {n} documents written by then), then one re-run: {checked}.")
    r.say()


# --- main ------------------------------------------------------------------------------------

PARTS = ("fast", "growth", "async", "asyncspeed", "reuse", "emulator", "extract")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Parts: fast (issue #12's table against benchmarks/fastserver.py), growth "
               "(1/10/100 MiB; 1,000/10,000/50,000 files), async (#10), asyncspeed (#20: async "
               "vs sync at 100 MiB, the cold path), reuse (#11), emulator, "
               "extract (#17).")
    parser.add_argument("--quick", action="store_true",
                        help="20 MiB, 2 repeats, 200 tiny files, 5,000 at most for planning")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 5)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md",
                        help="where the Markdown goes (default benchmarks/results/latest.md)")
    args = parser.parse_args(argv)
    quick = args.quick
    o = Opts(quick=quick, repeat=args.repeat or (2 if quick else 5), big_mb=20 if quick else 100,
             many_n=200 if quick else 1000,
             dry_sizes=(1000, 5000) if quick else (1000, 10_000, 50_000),
             par_files=4 if quick else 20, par_mb=10 if quick else 50,
             dry_repeat=3 if quick else min(5, args.repeat or 5))
    parts = args.only or list(PARTS)
    if shutil.which(CURL) is None:
        parser.error("curl is needed on the PATH")
    r = Report()
    started = time.perf_counter()
    calibrate()
    r.say(f"# kimi-files benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    r.say()
    curl_v = subprocess.run([CURL, "--version"], capture_output=True, text=True).stdout.split()[1]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    r.say(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, kimi-files {metadata.version('kimi-files')} ({commit}), "
          f"openai {metadata.version('openai')}, httpx {metadata.version('httpx')}, curl {curl_v}.")
    r.say(f"Command: `{' '.join(['python', 'benchmarks/run.py', *(argv or sys.argv[1:])])}`"
          + ("" if GNU_TIME else "; peak RSS polled from /proc (no /usr/bin/time)") + ".")
    r.say()
    with tempfile.TemporaryDirectory(prefix="kimi-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for part in PARTS:
            if part in parts:
                t = time.perf_counter()
                {"fast": fast_tables, "growth": growth_table, "async": async_table,
                 "asyncspeed": asyncspeed_table, "reuse": reuse_table,
                 "emulator": emulator_tables,
                 "extract": extract_tables}[part](tmp, o, r)
                print(f"({part}: {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    r.say(f"Whole run: {time.perf_counter() - started:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(r.lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
