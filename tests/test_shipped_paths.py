"""Directories and binaries come from Settings (one place for every environment variable)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector import broker, schemas
from connector.config import get_settings
from connector.errors import BrokerError
from connector.shipped import shipped_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("SCHEMAS_DIR", "TOPICS_DIR", "TANSU_BIN"):
        monkeypatch.delenv(f"BATCHBRIDGE_{name}", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_checkout_uses_its_top_level_directories() -> None:
    assert shipped_dir("topics") == REPO / "topics"
    assert shipped_dir("schemas") == REPO / "schemas"
    assert schemas.schemas_dir() == REPO / "schemas"


def test_schemas_dir_follows_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BATCHBRIDGE_SCHEMAS_DIR", str(tmp_path))
    assert schemas.schemas_dir() == tmp_path


def test_tansu_binary_setting_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "tansu"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("BATCHBRIDGE_TANSU_BIN", str(binary))
    with pytest.raises(BrokerError, match="BATCHBRIDGE_TANSU_BIN=.* is not an executable"):
        broker.resolve_binary()

    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    get_settings.cache_clear()
    assert broker.resolve_binary() == str(binary)
