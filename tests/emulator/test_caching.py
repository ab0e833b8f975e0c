"""Prompt caching as the real SDKs see it: who writes, who reads, and how usage reports it."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic
from emulator_helpers import Clock, gemini_file_batch, parse_jsonl, poll
from google import genai
from google.genai import types
from openai import AsyncOpenAI

from connector.emulator import Emulator

# A support policy of about 6,000 tokens (four characters a token), the shared prefix.
POLICY = " ".join(f"Clause {i}: refunds within {i % 30} days need a receipt." for i in range(500))
SONNET = "claude-sonnet-4-5"


def tokens_of(body: Any) -> int:
    """The emulator's documented estimate: compact sorted JSON, four characters a token."""
    return len(json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)) // 4


# --- Anthropic ------------------------------------------------------------------------------


def anthropic_params(question: str, *, ttl: str | None = None, model: str = SONNET) -> dict:
    marker: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return {
        "model": model,
        "max_tokens": 64,
        "system": [{"type": "text", "text": POLICY, "cache_control": marker}],
        "messages": [{"role": "user", "content": question}],
    }


async def test_anthropic_messages_write_then_read_and_input_counts_only_the_rest(
    anthropic_client: AsyncAnthropic, clock: Clock
) -> None:
    first = await anthropic_client.messages.create(**anthropic_params("Where is my parcel?"))
    clock.now += 60
    second = await anthropic_client.messages.create(**anthropic_params("Can I get a refund?"))
    written = first.usage.cache_creation_input_tokens
    assert written and written > 5000 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    for message, question in ((first, "Where is my parcel?"), (second, "Can I get a refund?")):
        u = message.usage
        whole = tokens_of(anthropic_params(question))
        assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == whole
        assert 0 < u.input_tokens < 100
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == written


async def test_anthropic_cache_lives_five_minutes_from_its_last_use_or_an_hour(
    anthropic_client: AsyncAnthropic, clock: Clock
) -> None:
    async def read(ttl: str | None = None) -> int:
        message = await anthropic_client.messages.create(**anthropic_params("hi", ttl=ttl))
        return message.usage.cache_read_input_tokens or 0

    assert await read() == 0
    clock.now += 299
    assert await read() > 0  # and refreshed: five more minutes from now
    clock.now += 299
    assert await read() > 0
    clock.now += 301
    assert await read() == 0
    start = clock.now + 10_000
    clock.now = start
    hour = await anthropic_client.messages.create(**anthropic_params("hi", ttl="1h"))
    assert hour.usage.cache_creation.ephemeral_1h_input_tokens > 0
    clock.now = start + 3000
    assert await read("1h") > 0


async def test_anthropic_prompts_below_the_model_minimum_are_not_cached(
    anthropic_client: AsyncAnthropic,
) -> None:
    params = anthropic_params("hi", model="claude-haiku-4-5")  # needs 4,096 tokens
    params["system"][0]["text"] = POLICY[:12_000]  # about 3,000 tokens
    for _ in range(2):
        message = await anthropic_client.messages.create(**params)
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0


async def test_anthropic_refuses_more_than_four_breakpoints(
    anthropic_client: AsyncAnthropic,
) -> None:
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    params = anthropic_params("hi")
    params["system"] = [marked] * 5
    with pytest.raises(anthropic.BadRequestError) as info:
        await anthropic_client.messages.create(**params)
    assert info.value.body["error"]["message"] == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )


async def test_anthropic_batch_first_request_writes_the_rest_read_and_no_sharing_with_messages(
    anthropic_client: AsyncAnthropic,
) -> None:
    requests: Any = [
        {"custom_id": f"q{i}", "params": anthropic_params(f"question {i}")} for i in range(4)
    ]
    batch = await anthropic_client.messages.batches.create(requests=requests)
    await poll(
        lambda: anthropic_client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    usage = {
        r.custom_id: r.result.message.usage
        async for r in await anthropic_client.messages.batches.results(batch.id)
    }
    written = usage["q0"].cache_creation_input_tokens
    assert written and usage["q0"].cache_read_input_tokens == 0
    for key in ("q1", "q2", "q3"):
        assert usage[key].cache_read_input_tokens == written
        assert usage[key].cache_creation_input_tokens == 0
    # The Messages API has its own cache: the batch warmed nothing for it.
    sync = await anthropic_client.messages.create(**anthropic_params("question 9"))
    assert sync.usage.cache_read_input_tokens == 0 and sync.usage.cache_creation_input_tokens


# --- OpenAI ---------------------------------------------------------------------------------


def chat(question: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": POLICY},
            {"role": "user", "content": question},
        ],
    }


def shared_prefix_tokens(a: dict[str, Any], b: dict[str, Any]) -> int:
    """Tokens of the common start of two chat prompts, messages in order."""
    texts = [
        "".join(json.dumps(m, separators=(",", ":"), sort_keys=True) for m in x["messages"])
        for x in (a, b)
    ]
    same = 0
    while same < min(map(len, texts)) and texts[0][same] == texts[1][same]:
        same += 1
    return same // 4


async def test_openai_caches_shared_prefixes_of_1024_tokens_in_128_token_steps(
    openai_client: AsyncOpenAI,
) -> None:
    first = await openai_client.chat.completions.create(**chat("Where is my parcel?"))
    second = await openai_client.chat.completions.create(**chat("Can I get a refund?"))
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    shared = shared_prefix_tokens(chat("Where is my parcel?"), chat("Can I get a refund?"))
    assert cached % 128 == 0 and shared - 128 < cached <= shared
    assert second.usage.prompt_tokens == tokens_of(chat("Can I get a refund?")) > cached
    short = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi" * 1000}]}
    for _ in range(2):
        answer = await openai_client.chat.completions.create(**short)
        assert answer.usage.prompt_tokens_details.cached_tokens == 0  # under 1,024 tokens


async def test_openai_responses_report_cached_input_tokens(openai_client: AsyncOpenAI) -> None:
    await openai_client.responses.create(model="gpt-4o-mini", instructions=POLICY, input="one")
    again = await openai_client.responses.create(
        model="gpt-4o-mini", instructions=POLICY, input="two"
    )
    assert again.usage.input_tokens_details.cached_tokens >= 1024


async def test_openai_cache_expires_and_can_be_turned_off(
    emu: Emulator, openai_client: AsyncOpenAI, clock: Clock
) -> None:
    await openai_client.chat.completions.create(**chat("a"))
    clock.now += 301
    late = await openai_client.chat.completions.create(**chat("b"))
    assert late.usage.prompt_tokens_details.cached_tokens == 0
    emu.set_faults(prompt_caching=False)
    off = await openai_client.chat.completions.create(**chat("c"))
    assert off.usage.prompt_tokens_details.cached_tokens == 0


async def test_openai_batch_reads_after_its_first_request_and_sums_cached_usage(
    openai_client: AsyncOpenAI,
) -> None:
    rows = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat(f"q{i}"),
        }
        for i in range(3)
    ]
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    uploaded = await openai_client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await poll(
        lambda: openai_client.batches.retrieve(batch.id), lambda b: b.status == "completed"
    )
    lines, _ = parse_jsonl((await openai_client.files.content(done.output_file_id)).text)
    cached = {
        line["custom_id"]: line["response"]["body"]["usage"]["prompt_tokens_details"][
            "cached_tokens"
        ]
        for line in lines
    }
    assert cached["q0"] == 0 and cached["q1"] == cached["q2"] >= 1024
    assert done.usage.input_tokens_details.cached_tokens == sum(cached.values())


# --- Gemini ---------------------------------------------------------------------------------


def gemini_request(question: str) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": POLICY}]},
        "contents": [{"role": "user", "parts": [{"text": question}]}],
    }


async def test_gemini_implicit_caching_on_2_5_models_only(genai_client: genai.Client) -> None:
    config = types.GenerateContentConfig(system_instruction=POLICY)
    for model in ("gemini-2.5-flash", "gemini-2.0-flash"):
        first = await genai_client.aio.models.generate_content(
            model=model, contents="one", config=config
        )
        second = await genai_client.aio.models.generate_content(
            model=model, contents="two", config=config
        )
        assert first.usage_metadata.cached_content_token_count is None
        cached = second.usage_metadata.cached_content_token_count
        if model == "gemini-2.0-flash":
            assert cached is None
        else:
            assert cached is not None and cached >= 2048 and cached % 128 == 0
            assert second.usage_metadata.prompt_token_count > cached


async def test_gemini_file_batch_reads_after_its_first_request(
    genai_client: genai.Client,
) -> None:
    lines = [{"key": f"q{i}", "request": gemini_request(f"q{i}")} for i in range(3)]
    results = await gemini_file_batch(genai_client, lines)
    cached = {
        key: r["response"]["usageMetadata"].get("cachedContentTokenCount", 0)
        for key, r in results.items()
    }
    assert cached["q0"] == 0 and cached["q1"] == cached["q2"] >= 2048


async def test_the_same_run_reports_the_same_cache_usage(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    async def run() -> list[tuple[int | None, int | None]]:
        emu.reset()
        out = []
        for question in ("a", "b", "c"):
            message = await anthropic_client.messages.create(**anthropic_params(question))
            out.append(
                (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens)
            )
        return out

    assert await run() == await run()
