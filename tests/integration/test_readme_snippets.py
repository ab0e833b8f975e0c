"""The SDK snippets in the README run against the emulator with only the base URL changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.emulator import EmulatorConfig, EmulatorThread

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8089"


def emulator_snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if DOCUMENTED_URL in b]


def test_readme_shows_a_snippet_for_each_provider():
    text = "\n".join(emulator_snippets())
    for sdk in (
        "from openai import OpenAI",
        "from anthropic import Anthropic",
        "from google import genai",
    ):
        assert sdk in text


@pytest.mark.parametrize("index", range(3))
def test_snippet_runs_unchanged_but_for_the_base_url(index):
    snippet = emulator_snippets()[index]
    with EmulatorThread(EmulatorConfig(processing_seconds=0.2)) as url:
        scope: dict = {}
        exec(
            compile(snippet.replace(DOCUMENTED_URL, url), f"README snippet {index}", "exec"), scope
        )  # noqa: S102
        created = scope.get("batch") or scope.get("job")
        assert created is not None and (
            getattr(created, "id", None) or getattr(created, "name", None)
        )
