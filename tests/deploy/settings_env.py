"""The environment variables the connector reads, to check deployment files against them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from connector.config import Settings
from tests.test_env_example import env_names

PREFIX = "BATCHBRIDGE_"
CONNECTOR = Path(__file__).resolve().parents[2] / "connector"


def _read_outside_settings() -> set[str]:
    """Variables a module reads itself (``ENV_X = "BATCHBRIDGE_…"``), not through Settings.

    These are on their way into Settings (one engineer moves every environment read there);
    until then a deployment that sets them is still right.
    """
    pattern = re.compile(r'^ENV_\w+\s*=\s*"(BATCHBRIDGE_\w+)"', re.MULTILINE)
    return {
        name
        for path in CONNECTOR.rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }


def known_names() -> set[str]:
    """Every BATCHBRIDGE_* variable that configures the connector."""
    return env_names(Settings, PREFIX) | _read_outside_settings()


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process with exactly these BATCHBRIDGE_* variables (and no .env) gets."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)
