"""The shape the codebase holds to: no module over 600 lines, no function over 60.

A function that must be longer is named in ``LONGER`` with the reason; today none is."""

from __future__ import annotations

import ast
from pathlib import Path

import kimi_files

PACKAGE = Path(kimi_files.__file__).resolve().parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
#: "path:function" -> why it must be longer than MAX_FUNCTION_LINES.
LONGER: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_600_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(PACKAGE)}:{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONGER:
                    long[where] = lines
    assert long == {}
