""".env.example documents every setting, and what it shows are the defaults."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from connector.config import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def env_names(model: type[BaseModel], prefix: str = "BATCHBRIDGE_") -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def documented() -> dict[str, str]:
    """Variables in the file, commented-out examples included, with their values."""
    found = {}
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*(BATCHBRIDGE_[A-Z0-9_]+)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_every_setting_is_documented():
    missing = env_names(Settings) - set(documented())
    assert missing == set()


def test_documented_names_are_settings():
    assert set(documented()) - env_names(Settings) == set()


def test_active_lines_are_the_defaults(monkeypatch):
    active = {
        m.group(1): m.group(2)
        for line in EXAMPLE.read_text().splitlines()
        if (m := re.match(r"^(BATCHBRIDGE_[A-Z0-9_]+)=(.*)$", line))
    }
    for name in env_names(Settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    from_example = Settings(_env_file=None)
    for name in env_names(Settings):
        monkeypatch.delenv(name, raising=False)
    assert from_example.model_dump() == Settings(_env_file=None).model_dump()
