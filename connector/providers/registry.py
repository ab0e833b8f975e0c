"""Build the provider adapters from settings."""

from __future__ import annotations

from connector.config import ProviderSettings, Settings
from connector.errors import ConfigError
from connector.providers.anthropic_batch import AnthropicBatchProvider
from connector.providers.base import Provider
from connector.providers.gemini_batch import GeminiBatchProvider
from connector.providers.openai_batch import OpenAIBatchProvider

PROVIDERS: dict[str, type[OpenAIBatchProvider | AnthropicBatchProvider | GeminiBatchProvider]] = {
    "openai": OpenAIBatchProvider,
    "anthropic": AnthropicBatchProvider,
    "gemini": GeminiBatchProvider,
}


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The adapter for one built-in provider."""
    try:
        provider_class = PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown provider {name!r}; expected one of {sorted(PROVIDERS)}"
        ) from None
    return provider_class(settings)


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Every adapter the settings declare, by the name requests use."""
    return {name: build_provider(name, getattr(settings, name)) for name in PROVIDERS}
