"""``python -m kimi_files.emulator``: serve the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from .._config import MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES
from ._state import FAULT_KINDS


def _fault(text: str) -> tuple[str, int, str]:
    kind, _, rest = text.partition(":")
    times_text, _, endpoint = rest.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown fault {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    try:
        times = int(times_text or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad count in {text!r}") from None
    return kind, times, endpoint or "upload"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kimi_files.emulator",
        description="A local emulator of the Kimi Files API (base URL: http://HOST:PORT/v1).",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    parser.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    parser.add_argument("--max-files", type=int, default=MAX_FILES,
                        help=f"files per account (default {MAX_FILES:,})")
    parser.add_argument("--max-total-bytes", type=int, default=MAX_TOTAL_BYTES,
                        help=f"bytes per account (default {MAX_TOTAL_BYTES:,}, 10 GiB)")
    parser.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES,
                        help=f"bytes per file (default {MAX_FILE_BYTES:,}, 100 MiB)")
    parser.add_argument("--extract-delay", type=float, default=0.0,
                        help="seconds of server time per upload (emulated extraction)")
    parser.add_argument("--max-concurrency", type=int, help="emulate a tier's concurrency limit")
    parser.add_argument("--rpm", type=int, help="emulate a tier's requests-per-minute limit")
    parser.add_argument("--rate-window", type=float, default=60.0,
                        help="the window of --rpm, in seconds (default 60)")
    parser.add_argument("--fail", type=_fault, action="append", default=[],
                        metavar="KIND[:TIMES[:ENDPOINT]]",
                        help="inject a fault, e.g. extraction_failed:2 or html_502:1:list "
                             "(repeatable)")
    parser.add_argument("--chaos", type=float, default=0.0, metavar="RATE",
                        help="fail a random RATE (0..1) of uploads with random retryable faults")
    parser.add_argument("--storage-dir",
                        help="keep the uploads in this folder, with an index of them: they "
                             "survive a restart on the same folder (default: a temporary "
                             "folder, removed when the emulator stops)")
    parser.add_argument("--extract-images", action="store_true",
                        help="accept images under file-extract (older behaviour; the newest "
                             "guide says they are no longer extracted)")
    parser.add_argument("--date-offset", type=float, default=0.0, metavar="SECONDS",
                        help="send a Date header this far from the clock of created_at, as a "
                             "gateway whose clock is wrong would (negative: behind)")
    parser.add_argument("--no-date", action="store_true", help="send no Date header")
    parser.add_argument("--batch-phase-seconds", type=float, default=1.0, metavar="S",
                        help="seconds a batch spends in each phase (validating, in_progress "
                             "twice, finalizing; default 1)")
    parser.add_argument("--page-size", type=int, metavar="N",
                        help="list at most N files per page (with has_more), as openai-style "
                             "servers do (default: every file at once)")
    parser.add_argument("--log-level", default="info",
                        help="uvicorn's log level: critical, error, warning, info (default), "
                             "debug, trace")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    try:
        import uvicorn

        from ._app import create_app
        from ._state import EmulatorState
    except ImportError as exc:
        print(f"the emulator needs the 'emulator' extra: pip install 'kimi-files[emulator]' "
              f"({exc})", file=sys.stderr)
        return 1
    state = EmulatorState(
        api_key=args.api_key, storage_dir=args.storage_dir, max_files=args.max_files,
        max_total_bytes=args.max_total_bytes, max_file_bytes=args.max_file_bytes,
        extract_delay=args.extract_delay, max_concurrency=args.max_concurrency, rpm=args.rpm,
        rate_window=args.rate_window, extract_images=args.extract_images,
        page_size=args.page_size,
        date_offset=None if args.no_date else args.date_offset,
    )
    state.batches.phase_seconds = args.batch_phase_seconds
    state.batches.default_phase_seconds = args.batch_phase_seconds
    if args.chaos:
        state.set_chaos(args.chaos)
    for kind, times, endpoint in args.fail:
        state.add_fault(kind, times=times, endpoint=endpoint)
    print(f"kimi-files emulator: base URL http://{args.host}:{args.port}/v1", file=sys.stderr,
          flush=True)
    try:
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=args.log_level,
                    access_log=False, lifespan="off", date_header=False)
    finally:
        state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
