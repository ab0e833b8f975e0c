"""Build the provider adapters from settings: the three built-ins and the operator's named ones."""

from __future__ import annotations

from collections.abc import Mapping

from connector.config import NamedProviderSettings, ProviderSettings, Settings
from connector.errors import ConfigError
from connector.providers.anthropic_batch import AnthropicBatchProvider
from connector.providers.base import Provider
from connector.providers.gemini_batch import GeminiBatchProvider
from connector.providers.openai_batch import AzureOpenAIBatchProvider, OpenAIBatchProvider

PROVIDERS: dict[str, type[OpenAIBatchProvider | AnthropicBatchProvider | GeminiBatchProvider]] = {
    "openai": OpenAIBatchProvider,
    "anthropic": AnthropicBatchProvider,
    "gemini": GeminiBatchProvider,
}

#: The adapter class behind each ``kind`` of named provider.
KINDS: dict[str, type[OpenAIBatchProvider]] = {
    "openai_compatible": OpenAIBatchProvider,
    "azure_openai": AzureOpenAIBatchProvider,
}


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The adapter for one provider: a built-in by name, or a named one by its kind."""
    if isinstance(settings, NamedProviderSettings):
        return KINDS[settings.kind].named(name, settings)
    try:
        provider_class = PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown provider {name!r}; expected one of {sorted(PROVIDERS)}"
        ) from None
    return provider_class(settings)


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Every adapter the settings declare, by the name requests use."""
    providers = {name: build_provider(name, getattr(settings, name)) for name in PROVIDERS}
    for name, named in settings.providers.items():
        providers[name] = build_provider(name, named)
    return providers


def endpoints_of(providers: Mapping[str, Provider]) -> dict[str, frozenset[str]]:
    """What ``connector.model.validate_request`` accepts, from the adapters in use."""
    return {name: provider.endpoints for name, provider in providers.items()}
