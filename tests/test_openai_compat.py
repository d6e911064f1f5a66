"""The official openai SDK as a client of the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from kimi_files.emulator import Emulator

from .conftest import API_KEY, write


@pytest.fixture
def sdk(emulator: Emulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=emulator.base_url, max_retries=0) as client:
        yield client


def test_openai_round_trip(sdk: openai.OpenAI, tmp_path: Path) -> None:
    p = write(tmp_path / "中文 doc.txt", "你好, world\n")
    created = sdk.files.create(file=p, purpose="file-extract")  # type: ignore[arg-type]
    assert created.filename == "中文 doc.txt" and created.bytes == p.stat().st_size
    assert created.status == "ok" and created.id.startswith("cl")
    assert [f.id for f in sdk.files.list().data] == [created.id]
    assert sdk.files.retrieve(created.id).filename == created.filename
    content = sdk.files.content(file_id=created.id).text
    import json

    doc = json.loads(content)
    assert doc["content"] == "你好, world\n" and doc["filename"] == "中文 doc.txt"
    assert sdk.files.delete(created.id).deleted is True
    assert sdk.files.list().data == []


@pytest.mark.parametrize(
    ("fault", "sdk_error", "status"),
    [("file_too_large", openai.BadRequestError, 400),
     ("invalid_authentication", openai.AuthenticationError, 401),
     ("api_not_open", openai.PermissionDeniedError, 403),
     ("max_rpm", openai.RateLimitError, 429),
     ("extraction_failed", openai.InternalServerError, 500)],
)
def test_openai_sees_the_tables_error_bodies(sdk: openai.OpenAI, emulator: Emulator,
                                             tmp_path: Path, fault: str,
                                             sdk_error: type[openai.APIStatusError],
                                             status: int) -> None:
    from kimi_files.emulator import ERROR_ROWS

    emulator.fail_next(fault)
    p = write(tmp_path / "a.txt", "x")
    with pytest.raises(sdk_error) as info:
        sdk.files.create(file=p, purpose="file-extract")  # type: ignore[arg-type]
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict)
    row_status, etype, _ = ERROR_ROWS[fault]
    assert row_status == status
    # the SDK unwraps {"error": {...}} into .body
    assert body.get("type") == etype or body.get("error", {}).get("type") == etype


def test_openai_sees_limits(sdk: openai.OpenAI, emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(openai.BadRequestError, match="File size is zero"):
        sdk.files.create(file=write(tmp_path / "e.txt", b""), purpose="file-extract")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="Invalid purpose"):
        sdk.files.create(file=write(tmp_path / "a.txt", "x"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve("missing")


def test_openai_auto_pagination_ends(sdk: openai.OpenAI, tmp_path: Path) -> None:
    created = [sdk.files.create(file=write(tmp_path / f"{i}.txt", str(i)),  # type: ignore[arg-type]
                                purpose="file-extract").id for i in range(5)]

    def collect(**params: object) -> list[str]:
        seen: list[str] = []
        for f in sdk.files.list(**params):  # type: ignore[arg-type]
            seen.append(f.id)
            # the SDK follows `has_more` and `after`: past this many it is looping
            assert len(seen) <= 2 * len(created), "files.list() does not terminate"
        return seen

    assert collect() == created          # one page, has_more false
    assert collect(limit=2) == created   # three pages, each after the last id of the one before
