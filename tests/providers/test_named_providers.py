"""Operator-declared providers: settings, the adapters built from them, request validation,
the splitter, and reconciliation on a provider that drops batch metadata."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest
from pydantic import ValidationError

from connector.config import NamedProviderSettings, Settings
from connector.emulator import Emulator
from connector.errors import ValidationError as RequestInvalid
from connector.model import ENDPOINTS, validate_request
from connector.providers.openai_batch import (
    AzureOpenAIBatchProvider,
    OpenAIBatchProvider,
    encode_line,
    input_file_name,
)
from connector.providers.registry import build_providers, endpoints_of
from connector.providers.split import split_batches

from .conftest import make_provider
from .test_contract import items
from .test_split import Req

GROQ_ENV = {
    "BATCHBRIDGE_PROVIDERS__GROQ__KIND": "openai_compatible",
    "BATCHBRIDGE_PROVIDERS__GROQ__BASE_URL": "https://api.groq.example/openai/v1",
    "BATCHBRIDGE_PROVIDERS__GROQ__API_KEY": "gsk-secret",
    "BATCHBRIDGE_PROVIDERS__GROQ__COMPLETION_WINDOW": "7d",
    "BATCHBRIDGE_PROVIDERS__GROQ__MAX_REQUESTS": "2",
    "BATCHBRIDGE_PROVIDERS__GROQ__ENDPOINTS": '["/v1/chat/completions", "/v1/embeddings"]',
}


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_nested_environment_variables_declare_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    groq = settings_from(monkeypatch, GROQ_ENV).providers["groq"]
    assert groq.kind == "openai_compatible" and groq.completion_window == "7d"
    assert groq.max_requests == 2 and groq.endpoints == ["/v1/chat/completions", "/v1/embeddings"]
    assert groq.api_key.get_secret_value() == "gsk-secret"
    assert "gsk-secret" not in repr(groq)


def test_one_json_variable_declares_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = {
        "az": {
            "kind": "azure_openai",
            "base_url": "https://res.openai.azure.example",
            "api_version": "2024-10-21",
        },
        "together": {"kind": "openai_compatible", "base_url": "https://together.example/v1"},
    }
    providers = settings_from(
        monkeypatch, {"BATCHBRIDGE_PROVIDERS": json.dumps(declared)}
    ).providers
    assert set(providers) == {"az", "together"}
    assert providers["az"].api_version == "2024-10-21"
    assert providers["together"].endpoints == ["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("openai", {"kind": "openai_compatible", "base_url": "http://x"}),  # built in
        ("Groq!", {"kind": "openai_compatible", "base_url": "http://x"}),
        ("a__b", {"kind": "openai_compatible", "base_url": "http://x"}),  # env delimiter
        ("x" * 33, {"kind": "openai_compatible", "base_url": "http://x"}),
        ("groq", {"kind": "openai_compatible"}),  # nowhere to go
        ("groq", {"kind": "mistral", "base_url": "http://x"}),
        ("az", {"kind": "azure_openai", "base_url": "http://x"}),  # no api_version
        ("groq", {"kind": "openai_compatible", "base_url": "http://x", "endpoints": ["/v1/x"]}),
        ("groq", {"kind": "openai_compatible", "base_url": "http://x", "completion_window": "1w"}),
    ],
)
def test_bad_declarations_are_refused_at_start(name: str, fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, providers={name: fields})


def test_adapters_and_validation_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        **GROQ_ENV,
        "BATCHBRIDGE_PROVIDERS__AZ__KIND": "azure_openai",
        "BATCHBRIDGE_PROVIDERS__AZ__BASE_URL": "https://res.openai.azure.example",
        "BATCHBRIDGE_PROVIDERS__AZ__API_VERSION": "2024-10-21",
    }
    providers = build_providers(settings_from(monkeypatch, env))
    assert set(providers) == {"openai", "anthropic", "gemini", "groq", "az"}
    groq, az = providers["groq"], providers["az"]
    assert type(groq) is OpenAIBatchProvider and isinstance(az, AzureOpenAIBatchProvider)
    assert (groq.name, groq.limits.max_requests, groq.completion_window) == ("groq", 2, "7d")
    endpoints = endpoints_of(providers)
    assert {k: endpoints[k] for k in ENDPOINTS} == ENDPOINTS  # the built-ins unchanged
    request = {
        "request_id": "r",
        "provider": "groq",
        "model": "llama-3.1-8b-instant",
        "endpoint": "/v1/embeddings",
        "body": json.dumps({"input": "x"}),
    }
    assert validate_request(request, endpoints=endpoints) == {"input": "x"}
    with pytest.raises(RequestInvalid, match="unknown provider 'groq'"):
        validate_request(request)  # the default knows only the built-ins
    with pytest.raises(RequestInvalid, match="not supported for az"):
        validate_request({**request, "provider": "az"}, endpoints=endpoints)
    # The splitter packs to the declared limits.
    batches = split_batches([Req(i, "m", "/v1/embeddings", 10) for i in range(5)], groq.limits)
    assert [len(b) for b in batches.batches] == [2, 2, 1]


def test_azure_spells_batch_endpoints_without_v1() -> None:
    az = AzureOpenAIBatchProvider.named(
        "azure",
        NamedProviderSettings(kind="azure_openai", base_url="http://x", api_version="v"),
    )
    assert az.wire_endpoint("/v1/chat/completions") == "/chat/completions"
    line = json.loads(encode_line(items(az, ["c"])[0], az.wire_endpoint("/v1/chat/completions")))
    assert line["url"] == "/chat/completions"


async def test_find_reads_the_tag_from_the_input_file_when_metadata_is_dropped(
    emulator: Emulator, emulator_url: tuple[Emulator, str]
) -> None:
    url = emulator_url[1]
    started = time.time()
    # A batch made as a provider that drops metadata would leave it: no metadata at all.
    client = openai.AsyncOpenAI(api_key="k", base_url=f"{url}/compat/groq/v1", max_retries=0)
    provider = make_provider("groq", url)
    lines = b"".join(encode_line(item) for item in items(provider, ["a", "b"]))
    upload = await client.files.create(
        file=(input_file_name("tag-bare"), io.BytesIO(lines)), purpose="batch"
    )
    bare = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    other = await client.files.create(file=("mine.jsonl", io.BytesIO(lines)), purpose="batch")
    await client.batches.create(
        input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    found = await provider.find("tag-bare", created_after=started)
    assert found is not None and found.batch_id == bare.id
    assert await provider.find("mine", created_after=started) is None
    await client.close()
    await provider.aclose()
