"""Fixtures: one emulator per session (reset before every test) and real SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from anthropic import AsyncAnthropic
from emulator_helpers import Clock
from google import genai
from google.genai import types
from openai import AsyncOpenAI

from connector.emulator import Emulator, EmulatorConfig

PROCESSING_SECONDS = 0.3


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def served() -> AsyncIterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorConfig(processing_seconds=PROCESSING_SECONDS))
    async with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
def emu(served: tuple[Emulator, str]) -> Emulator:
    emulator, _ = served
    emulator.reset()
    return emulator


@pytest.fixture
def clock(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The emulator's wall clock, frozen until the test moves it."""
    fake = Clock()
    monkeypatch.setattr(emu, "clock", fake)
    return fake


@pytest.fixture
def url(served: tuple[Emulator, str], emu: Emulator) -> str:
    return served[1]


@pytest.fixture
def openai_client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0)


@pytest.fixture
def anthropic_client(url: str) -> AsyncAnthropic:
    return AsyncAnthropic(api_key="sk-ant-test", base_url=url, max_retries=0)


@pytest.fixture
def genai_client(url: str) -> genai.Client:
    return genai.Client(api_key="g-test", http_options=types.HttpOptions(base_url=url))
