"""Refusals, prompt caching, Flex and the enqueued-token limit for the providers served with
OpenAI's routes under other names (/compat/<name>, Azure), each kept apart by its name."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from emulator_helpers import Clock, flex_outcomes, openai_lines, parse_jsonl, poll
from openai import AsyncAzureOpenAI, AsyncOpenAI

from connector.emulator import Emulator

API_VERSION = "2024-10-21"
# About 2,500 tokens (four characters a token): above OpenAI's 1,024-token caching minimum.
PREFIX = " ".join(f"Rule {i}: answer in at most {i % 7 + 1} sentences." for i in range(250))
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def groq(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="k", base_url=f"{url}/compat/groq/v1", max_retries=0)


@pytest.fixture
def azure(url: str) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(api_key="k", azure_endpoint=url, api_version=API_VERSION, max_retries=0)


async def run_batch(
    client: AsyncOpenAI, content: bytes, endpoint: str, window: str = "24h"
) -> openai.types.Batch:
    uploaded = await client.files.create(file=("in.jsonl", content), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )


async def finished(client: AsyncOpenAI, batch_id: str) -> openai.types.Batch:
    final = ("completed", "failed", "expired", "cancelled")
    return await poll(lambda: client.batches.retrieve(batch_id), lambda b: b.status in final)


async def lines_of(client: AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id
    text = (await client.files.content(file_id)).text
    return {line["custom_id"]: line for line in parse_jsonl(text)[0]}


async def test_a_named_provider_serves_any_model_unless_its_models_are_listed(
    emu: Emulator, groq: AsyncOpenAI, openai_client: AsyncOpenAI
) -> None:
    # Unlisted: any model name, as an operator's OpenAI-compatible provider names them.
    chat = await groq.chat.completions.create(model="llama-3.1-8b-instant", messages=HI)
    assert chat.model == "llama-3.1-8b-instant"
    with pytest.raises(openai.NotFoundError):  # OpenAI itself keeps its list
        await openai_client.chat.completions.create(model="llama-3.1-8b-instant", messages=HI)

    emu.set_faults(known_models={**emu.config.known_models, "groq": ["llama-3.1-8b-instant"]})
    with pytest.raises(openai.NotFoundError) as info:
        await groq.chat.completions.create(model="mixtral-8x7b", messages=HI)
    assert info.value.code == "model_not_found"
    assert (await groq.chat.completions.create(model="llama-3.1-8b-instant", messages=HI)).model


async def test_a_listed_named_provider_fails_only_the_lines_of_unknown_models(
    emu: Emulator, groq: AsyncOpenAI
) -> None:
    emu.set_faults(known_models={"groq": ["llama-3.1-8b-instant"]})
    content = openai_lines([("a", "hi")], model="llama-3.1-8b-instant") + openai_lines(
        [("b", "ho")], model="mixtral-8x7b"
    )
    batch = await run_batch(groq, content, "/v1/chat/completions", window="7d")
    done = await finished(groq, batch.id)
    # Two models in one batch fail it as OpenAI's validator does; one model each passes.
    assert done.status == "failed" and done.errors and done.errors.data
    assert [e.code for e in done.errors.data] == ["mismatched_model"]

    batch = await run_batch(
        groq, openai_lines([("b", "ho")], model="mixtral-8x7b"), "/v1/chat/completions"
    )
    done = await finished(groq, batch.id)
    assert done.status == "completed"
    line = (await lines_of(groq, done.error_file_id))["b"]
    assert line["response"]["status_code"] == 404
    assert line["response"]["body"]["error"]["code"] == "model_not_found"


async def test_azure_lines_must_name_the_batch_endpoint_as_azure_spells_it(
    azure: AsyncAzureOpenAI,
) -> None:
    content = openai_lines([("a", "hi")], model="my-deployment")  # url /v1/chat/completions
    batch = await run_batch(azure, content, "/chat/completions")
    done = await finished(azure, batch.id)
    assert done.status == "failed" and done.errors and done.errors.data
    assert [(e.code, e.line, e.param) for e in done.errors.data] == [("invalid_url", 1, "url")]


async def test_azure_refuses_an_endpoint_spelled_as_openai_does(azure: AsyncAzureOpenAI) -> None:
    content = openai_lines([("a", "hi")], model="my-deployment")
    with pytest.raises(openai.BadRequestError) as info:
        await run_batch(azure, content, "/v1/chat/completions")
    assert info.value.param == "endpoint"


async def cached_tokens(client: AsyncOpenAI, model: str, question: str) -> int:
    messages = [{"role": "system", "content": PREFIX}, {"role": "user", "content": question}]
    chat = await client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    assert chat.usage and chat.usage.prompt_tokens_details
    return chat.usage.prompt_tokens_details.cached_tokens or 0


async def test_each_named_provider_has_a_prompt_cache_of_its_own(
    clock: Clock, groq: AsyncOpenAI, openai_client: AsyncOpenAI, url: str
) -> None:
    assert await cached_tokens(groq, "gpt-4o-mini", "first") == 0
    clock.now += 10
    read = await cached_tokens(groq, "gpt-4o-mini", "second")
    assert read > 1024 and read % 128 == 0
    # The same prompt and model name elsewhere finds nothing cached.
    assert await cached_tokens(openai_client, "gpt-4o-mini", "third") == 0
    together = AsyncOpenAI(api_key="k", base_url=f"{url}/compat/together/v1", max_retries=0)
    assert await cached_tokens(together, "gpt-4o-mini", "fourth") == 0


async def test_an_azure_batch_reads_what_its_earlier_requests_cached(
    azure: AsyncAzureOpenAI,
) -> None:
    rows = []
    for key in ("a", "b"):
        messages = [{"role": "system", "content": PREFIX}, {"role": "user", "content": key}]
        body = {"model": "my-deployment", "messages": messages}
        rows.append({"custom_id": key, "method": "POST", "url": "/chat/completions", "body": body})
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    done = await finished(azure, (await run_batch(azure, content, "/chat/completions")).id)
    assert done.status == "completed"
    lines = await lines_of(azure, done.output_file_id)
    usage = {k: line["response"]["body"]["usage"] for k, line in lines.items()}
    assert usage["a"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["b"]["prompt_tokens_details"]["cached_tokens"] > 1024
    assert lines["a"]["response"]["body"]["object"] == "chat.completion"


async def test_flex_draws_and_counts_are_per_provider(
    emu: Emulator, groq: AsyncOpenAI, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(flex_429_rate=0.5, seed=3)
    alone = await flex_outcomes(openai_client, 12)
    emu.reset()
    emu.set_faults(flex_429_rate=0.5, seed=3)
    groq_outcomes = await flex_outcomes(groq, 7)
    # Groq's Flex calls do not move OpenAI's draws.
    assert await flex_outcomes(openai_client, 12) == alone
    flex = emu.stats()["flex_calls"]
    assert flex["groq"] == {
        "served": groq_outcomes.count(True),
        "unavailable": groq_outcomes.count(False),
    }
    assert sum(flex["openai"].values()) == 12
    chat = await groq.chat.completions.create(model="o3", messages=HI, service_tier="auto")
    assert chat.service_tier == "default"


async def test_flex_on_a_model_without_it_is_refused_by_named_providers(
    groq: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await groq.chat.completions.create(model="gpt-4o-mini", messages=HI, service_tier="flex")
    assert info.value.body["message"] == "Unsupported service_tier: flex"


async def test_the_enqueued_token_limit_counts_each_provider_apart(
    emu: Emulator, clock: Clock, groq: AsyncOpenAI, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(processing_seconds=10.0)
    content = openai_lines([(f"r{i}", f"question number {i}") for i in range(20)])
    await run_batch(openai_client, content, "/v1/chat/completions")
    size = emu.stats()["openai_enqueued_tokens"]["openai"]["gpt-4o-mini"]
    emu.set_faults(openai_enqueued_token_limit={"gpt-4o-mini": size})

    fits = await run_batch(groq, content, "/v1/chat/completions")  # OpenAI's batch not counted
    over = await run_batch(groq, content, "/v1/chat/completions")
    clock.now += 3.0  # past validating
    assert (await groq.batches.retrieve(fits.id)).status == "in_progress"
    failed = await groq.batches.retrieve(over.id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "token_limit_exceeded"
    stats = emu.stats()
    assert stats["openai_enqueued_tokens"] == {
        "openai": {"gpt-4o-mini": size},
        "groq": {"gpt-4o-mini": size},
    }
    # Stats name a named provider's batch states as OpenAI's API does.
    states = {b["id"]: b["state"] for b in stats["batches"] if b["provider"] == "groq"}
    assert states == {fits.id: "in_progress", over.id: "failed"}
