"""Shared by the examples: the bundled emulator by default, the real API when asked.

The real API is used when both MOONSHOT_API_KEY and MOONSHOT_BASE_URL are set, e.g.
``MOONSHOT_BASE_URL=https://api.moonshot.ai/v1 MOONSHOT_API_KEY=sk-... python examples/upload_one.py``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import kimi_files


@contextlib.contextmanager
def connect() -> Iterator[kimi_files.KimiFiles]:
    if os.environ.get("MOONSHOT_API_KEY") and os.environ.get("MOONSHOT_BASE_URL"):
        with kimi_files.KimiFiles() as client:
            print(f"[using {client.base_url}]", file=sys.stderr)
            yield client
        return
    from kimi_files.emulator import Emulator

    with Emulator() as emu, kimi_files.KimiFiles(api_key="emulator",
                                                 base_url=emu.base_url) as client:
        print(f"[using the bundled emulator at {emu.base_url}]", file=sys.stderr)
        yield client
