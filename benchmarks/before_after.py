"""Sync against async `upload()` calls, for two versions of kimi_files, all interleaved.

    git archive main kimi_files | tar -x -C /tmp/base      # the "before" package
    .venv/bin/python benchmarks/before_after.py --before /tmp/base [--repeat 9] [--mib 100]

Runs run.py's KIMI_TWO_CALLS script (the asyncspeed part's) against the fast server, for the
package under ``--before`` (through PYTHONPATH, from outside the checkout) and for the
installed one, sync and async, with the reuse cache and without: the four runs of a round in
turn (the first one rotating), so the machine's load hits all alike. Prints, per version and
mode, the medians of the call (the second of its process), its CPU, and the first call.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kimi_bench_run", HERE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kimi_bench_run"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True,
                        help="a directory holding the kimi_files package to compare with")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--mib", type=int, default=100)
    args = parser.parse_args(argv)
    run: Any = _run_module()
    with tempfile.TemporaryDirectory(prefix="kimi-before-after-") as tmp_name:
        tmp = Path(tmp_name)
        big = run.make_text_file(tmp / "big.txt", args.mib * run.MiB)
        script = tmp / "two_calls.py"
        script.write_text(run.KIMI_TWO_CALLS)
        state = tmp / "state"
        with run.fast_server() as srv:
            for cache in ("nocache", "cache"):
                variants = {f"{who} {mode}": (who, mode) for who in ("before", "after")
                            for mode in ("sync", "async")}
                results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
                names = list(variants)
                for i in range(args.repeat + 1):  # round 0 warms up, untimed
                    for name in names[i % len(names):] + names[:i % len(names)]:
                        who, mode = variants[name]
                        env = run.child_env(KIMI_FILES_STATE_DIR=str(state))
                        if who == "before":
                            env["PYTHONPATH"] = str(args.before.resolve())
                        out = subprocess.run(
                            [sys.executable, str(script), mode, str(big), srv.base, cache],
                            env=env, capture_output=True, text=True, check=True, cwd=tmp).stdout
                        if i:
                            results[name].append(json.loads(out.strip().splitlines()[-1]))
                med = statistics.median
                print(f"\n{args.mib} MiB, {cache}, medians of {args.repeat}:\n")
                print("| version, client | call | CPU of the call | first call |")
                print("|---|---|---|---|")
                for name, runs in results.items():
                    print(f"| {name} | {med(r['inner'] for r in runs):.3f} s | "
                          f"{med(r['cpu'] for r in runs):.3f} s | "
                          f"{med(r['first'] for r in runs):.3f} s |")
                for who in ("before", "after"):
                    a, s = results[f"{who} async"], results[f"{who} sync"]
                    print(f"\n{who}: async/sync call "
                          f"{med(r['inner'] for r in a) / med(r['inner'] for r in s):.2f}x, CPU "
                          f"{med(r['cpu'] for r in a) / med(r['cpu'] for r in s):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
