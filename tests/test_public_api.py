"""The public surface is what docs/API.md lists: a name that appears in the package or
disappears from it without the reference saying so fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import kimi_files as kf

API = Path(__file__).resolve().parent.parent / "docs" / "API.md"
_ENTRY = re.compile(r"^- `([A-Za-z_][A-Za-z0-9_.]*)`:", re.MULTILINE)


def _documented() -> set[str]:
    return set(_ENTRY.findall(API.read_text(encoding="utf-8")))


def _methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_every_public_name_is_documented_and_every_documented_name_exists() -> None:
    documented = {n for n in _documented() if "." not in n}
    exported = set(kf.__all__)
    assert sorted(exported - documented) == [], "public but not in docs/API.md"
    assert sorted(documented - exported) == [], "in docs/API.md but not public"


def test_the_clients_methods_are_documented() -> None:
    documented = _documented()
    for cls in (kf.KimiFiles, kf.AsyncKimiFiles):
        listed = {n.split(".", 1)[1] for n in documented if n.startswith("KimiFiles.")}
        if cls is kf.AsyncKimiFiles:
            listed = (listed - {"close"}) | {n.split(".", 1)[1] for n in documented
                                             if n.startswith("AsyncKimiFiles.")}
        assert sorted(_methods(cls) - listed) == [], f"{cls.__name__}: undocumented methods"
        assert sorted(listed - _methods(cls)) == [], f"{cls.__name__}: documented, not there"


def test_the_reference_names_each_entry_once() -> None:
    names = _ENTRY.findall(API.read_text(encoding="utf-8"))
    assert len(names) == len(set(names))
