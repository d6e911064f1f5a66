"""The core does no I/O: a step generator (a function annotated ``-> Steps[...]``, and every
function defined inside one) asks its driver for each file open, stat, clock read, sleep, log
line, progress bar and update of one (the actions of :mod:`kimi_files._steps`) instead of doing
it inline. A lambda it hands on (``on_read``) is the driver's to call, not the generator's.

The check reads the source (ast), so it also fails for a new generator that forgets."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import kimi_files

PACKAGE = Path(kimi_files.__file__).resolve().parent

#: Calls that do I/O, by name, by module attribute, or by any object's method name.
NAMES = {"open", "print", "input", "ProgressBar", "StatusLine"}
MODULES = {"os": {"stat", "fstat", "lstat", "replace", "remove", "unlink", "rename", "scandir",
                  "listdir", "makedirs", "mkdir", "fsync"},
           "time": None, "log": None, "logging": None, "sys": None, "shutil": None,
           "subprocess": None, "socket": None}
METHODS = {"stat", "lstat", "read_text", "read_bytes", "write_text", "write_bytes", "unlink",
           "mkdir", "exists", "is_file", "is_dir", "iterdir", "rglob", "glob",
           # a bar's or a status line's update draws on the terminal: Advance
           "advance", "file_done", "rewind", "touch"}

#: Modules whose steps still do some I/O inline, and how many such calls: none may be added;
#: when one is converted, its count here goes down with it (to its removal).
PENDING: dict[str, int] = {}


def _is_steps(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return fn.returns is not None and ast.unparse(fn.returns).startswith("Steps[")


def _io_call(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name) and f.id in NAMES:
        return f.id
    if isinstance(f, ast.Attribute):
        if isinstance(f.value, ast.Name) and f.value.id in MODULES:
            attrs = MODULES[f.value.id]
            if attrs is None or f.attr in attrs:
                return f"{f.value.id}.{f.attr}"
        if f.attr in METHODS:
            return f".{f.attr}()"
    return None


def inline_io(source: str) -> list[tuple[int, str, str]]:
    """(line, generator, call) for each I/O call inside a step generator of ``source``."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_steps(fn):
            for node in _inside(fn):
                if isinstance(node, ast.Call) and (call := _io_call(node)) is not None:
                    found.append((node.lineno, fn.name, call))
    return sorted(set(found))


def _inside(node: ast.AST) -> list[ast.AST]:
    """The nodes under ``node``, but not those of a lambda (a callback the driver calls)."""
    nodes = []
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.Lambda):
            nodes += [child, *_inside(child)]
    return nodes


def test_the_check_sees_inline_io_in_a_generator() -> None:
    source = '''
def steps(path) -> Steps[int]:
    with open(path) as fh:
        log.info("read %s", path)
        started = time.monotonic()
        size = os.stat(path).st_size
        def inner() -> None:
            Path(path).read_text()
        yield Send(on_read=lambda chunk: bar.advance(len(chunk)))
        bar.file_done()
    return size

def plain(path) -> int:
    return os.stat(path).st_size
'''
    assert [call for _, _, call in inline_io(source)] == [
        "open", "log.info", "time.monotonic", "os.stat", ".read_text()", ".file_done()"]


def test_step_generators_do_no_io_inline() -> None:
    counts: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        for line, fn, call in inline_io(path.read_text(encoding="utf-8")):
            counts[name] += 1
            where.setdefault(name, []).append(f"{line} {fn}: {call}")
    over = {name: where[name] for name, n in counts.items() if n > PENDING.get(name, 0)}
    assert over == {}, "yield the action instead (Now, Stat, Open, Progress, Close, Say)"
    stale = {name: (n, counts[name]) for name, n in PENDING.items() if counts[name] < n}
    assert stale == {}, "fewer calls than PENDING allows: lower the count (to removal at 0)"
