"""An emulator for the whole session and one adapter per provider (Gemini both ways)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from connector.config import NamedProviderSettings, ProviderSettings
from connector.emulator import Emulator, EmulatorConfig
from connector.providers.anthropic_batch import AnthropicBatchProvider
from connector.providers.base import Provider
from connector.providers.gemini_batch import GeminiBatchProvider
from connector.providers.limits import GEMINI_LIMITS
from connector.providers.openai_batch import OpenAIBatchProvider
from connector.providers.registry import build_provider

PROCESSING_SECONDS = 0.3
# groq: an openai_compatible provider (AsyncOpenAI at /compat/groq/v1); azure: an
# azure_openai provider (AsyncAzureOpenAI at the emulator's /openai routes).
ADAPTERS = ["openai", "anthropic", "gemini-inline", "gemini-file", "groq", "azure"]
AZURE_API_VERSION = "2024-10-21"


@pytest.fixture(scope="session")
async def emulator_url() -> AsyncIterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorConfig(processing_seconds=PROCESSING_SECONDS))
    async with emulator.serve(host="127.0.0.1", port=0) as url:
        yield emulator, url


@pytest.fixture
def emulator(emulator_url: tuple[Emulator, str]) -> Emulator:
    emulator, _ = emulator_url
    emulator.reset()
    emulator.set_faults(processing_seconds=PROCESSING_SECONDS)
    return emulator


def make_provider(name: str, url: str, *, max_retries: int = 2) -> Provider:
    if name == "groq":
        return build_provider(
            name,
            NamedProviderSettings(
                kind="openai_compatible",
                base_url=f"{url}/compat/groq/v1",
                max_retries=max_retries,
                timeout_s=10,
                completion_window="7d",
            ),
        )
    if name == "azure":
        return build_provider(
            name,
            NamedProviderSettings(
                kind="azure_openai",
                base_url=url,
                api_version=AZURE_API_VERSION,
                max_retries=max_retries,
                timeout_s=10,
            ),
        )
    if name == "openai":
        return OpenAIBatchProvider(
            ProviderSettings(base_url=f"{url}/v1", max_retries=max_retries, timeout_s=10)
        )
    if name == "anthropic":
        return AnthropicBatchProvider(
            ProviderSettings(base_url=url, max_retries=max_retries, timeout_s=10)
        )
    provider = GeminiBatchProvider(
        ProviderSettings(base_url=url, max_retries=max_retries, timeout_s=10)
    )
    if name == "gemini-file":
        provider.limits = dataclasses.replace(GEMINI_LIMITS, inline_max_bytes=0)
    return provider


@pytest.fixture(params=ADAPTERS)
async def provider(
    request: pytest.FixtureRequest, emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> AsyncIterator[Provider]:
    adapter = make_provider(request.param, emulator_url[1])
    yield adapter
    await adapter.aclose()
