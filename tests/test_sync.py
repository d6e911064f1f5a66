"""Sync semantics: gitignore-style filters, --exclude-from, and replacing earlier copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimi_files.errors import ConfigurationError
from kimi_files.scan import collect, matches_filters, read_patterns

from .conftest import write


def test_a_folder_name_excludes_the_folder_at_any_depth() -> None:
    assert not matches_filters("notes/a.txt", [], ["notes"])
    assert not matches_filters("x/notes/deep/b.txt", [], ["notes"])
    assert matches_filters("notesx/a.txt", [], ["notes"])  # a name, not a prefix


def test_double_star_anchoring_and_negation() -> None:
    assert not matches_filters("a/b/tmp/x.log", [], ["**/tmp/*.log"])
    assert matches_filters("a/b/tmp/x.txt", [], ["**/tmp/*.log"])
    assert not matches_filters("top.txt", [], ["/top.txt"])
    assert matches_filters("sub/top.txt", [], ["/top.txt"])  # anchored to the root
    assert matches_filters("notes/keep.txt", [], ["notes", "!notes/keep.txt"])
    assert not matches_filters("notes/drop.txt", [], ["notes", "!notes/keep.txt"])
    assert not matches_filters("build/x.txt", [], ["build/"])  # a folder-only pattern
    assert matches_filters("build", [], ["build/"])  # a file named build is kept


def test_includes_follow_the_same_rules() -> None:
    assert matches_filters("docs/deep/a.md", ["docs"], [])
    assert not matches_filters("src/a.md", ["docs"], [])
    assert matches_filters("x/y/a.pdf", ["*.pdf"], [])


def test_collect_walks_with_gitignore_rules(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.txt", "notes/n.txt", "sub/notes/m.txt", "sub/keep.md", "notes/keep.txt"):
        write(root / rel, rel)
    files, rejected = collect([root], exclude=["notes", "!notes/keep.txt"])
    assert not rejected
    assert sorted(p.relative_to(root).as_posix() for p in files) == [
        "a.txt", "notes/keep.txt", "sub/keep.md"]


def test_exclude_from_reads_a_gitignore(tmp_path: Path) -> None:
    ignore = write(tmp_path / ".gitignore", "# comment\n\nnotes\n*.log\n!important.log\n")
    patterns = read_patterns(ignore)
    assert not matches_filters("notes/a.txt", [], patterns)
    assert not matches_filters("x/debug.log", [], patterns)
    assert matches_filters("x/important.log", [], patterns)
    assert matches_filters("x/readme.md", [], patterns)


def test_an_unreadable_patterns_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="missing.ignore: cannot read the patterns file"):
        read_patterns(tmp_path / "missing.ignore")


def test_a_bad_pattern_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    import kimi_files

    write(tmp_path / "a.txt", "x")
    with pytest.raises(ConfigurationError, match=r"exclude: bad pattern '!'"):
        kimi_files.ingest([tmp_path], api_key="k", base_url="http://127.0.0.1:9/v1",
                          exclude=["!"], state=False)
