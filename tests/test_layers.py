"""The layering holds: the library never imports the CLI or the emulator, the pure rules
import no I/O library, and every public function says what it raises."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import kimi_files as kf

PACKAGE = Path(kf.__file__).resolve().parent
#: Decisions with no I/O: they must not import an I/O library.
PURE = ("_adoption", "_planner", "_quota", "_retry", "errors", "_answers", "_redact", "_models",
        "_options", "_config", "_report", "_steps", "_filerules", "_batch_models", "_replace", "_batch_input",
        "_tokens", "_extract_rules")
IO_LIBRARIES = {"httpx", "httpcore", "sqlite3", "magic", "tqdm", "starlette", "uvicorn"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as dotted names (relative ones resolved in the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "kimi_files." + base if base else "kimi_files"
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _library_modules() -> list[Path]:
    return [p for p in PACKAGE.glob("*.py") if p.stem not in ("cli",)]


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: p.stem)
def test_the_library_never_imports_the_cli_or_the_emulator(path: Path) -> None:
    bad = {m for m in _imports(path) for layer in ("kimi_files.cli", "kimi_files.emulator")
           if m == layer or m.startswith(layer + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_library(name: str) -> None:
    top = {m.split(".")[0] for m in _imports(PACKAGE / f"{name}.py")}
    assert not top & IO_LIBRARIES, f"{name}.py imports {sorted(top & IO_LIBRARIES)}"


def _public_functions() -> list[tuple[str, object]]:
    found = []
    for name in kf.__all__:
        value = getattr(kf, name)
        if inspect.isfunction(value):
            found.append((name, value))
        elif inspect.isclass(value) and name in ("KimiFiles", "AsyncKimiFiles"):
            for attr, member in vars(value).items():
                if inspect.isfunction(member) and not attr.startswith("_"):
                    found.append((f"{name}.{attr}", member))
    return found


def test_every_public_function_of_the_api_says_what_it_raises() -> None:
    missing = []
    for name, fn in _public_functions():
        doc = inspect.getdoc(fn) or ""
        if "Raises:" not in doc and name not in (
                "disable_progress_bars", "enable_progress_bars", "waiting_disabled"):
            missing.append(name)
    assert not missing, f"no Raises: section in {missing}"


def test_the_public_surface_lists_its_lazy_names_and_one_version() -> None:
    import importlib.metadata
    import subprocess
    import sys

    listed = dir(kf)
    for name in ("KimiFiles", "AsyncKimiFiles", "StateStore", "Pacer", "LocalFile", "Usage",
                 "waiting_disabled", "aupload", "aextract", "aingest", "messages", "Session"):
        assert name in listed and name in kf.__all__, name
        assert getattr(kf, name) is not None
    assert kf.__version__ == importlib.metadata.version("kimi-files")
    from kimi_files._client import KimiFiles

    assert kf.__version__ in KimiFiles(api_key="k", base_url="http://127.0.0.1:9/v1")._user_agent
    # dir() does not import what it lists: the package stays light
    code = "import sys, kimi_files; dir(kimi_files); print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
