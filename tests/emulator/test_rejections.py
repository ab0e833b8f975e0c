"""Requests the real APIs refuse are refused the same way, seen through the real SDKs."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic import AsyncAnthropic
from emulator_helpers import gemini_file_batch, openai_lines, parse_jsonl, poll
from google import genai
from google.genai import errors, types
from openai import AsyncOpenAI

from connector.emulator import Emulator

FINAL_OPENAI = {"completed", "failed", "expired", "cancelled"}


async def openai_batch(client: AsyncOpenAI, content: bytes, endpoint: str) -> openai.types.Batch:
    uploaded = await client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h"
    )
    return await poll(lambda: client.batches.retrieve(batch.id), lambda b: b.status in FINAL_OPENAI)


# --- OpenAI ---------------------------------------------------------------------------------


async def test_openai_sync_calls_on_an_unknown_model_are_404_model_not_found(
    openai_client: AsyncOpenAI,
) -> None:
    calls = [
        openai_client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}]
        ),
        openai_client.responses.create(model="gpt-nope", input="hi"),
        openai_client.embeddings.create(model="gpt-nope", input="hi"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            await call
        assert info.value.code == "model_not_found"
        assert info.value.body["message"] == (
            "The model `gpt-nope` does not exist or you do not have access to it."
        )


async def test_an_openai_batch_on_an_unknown_model_fails_each_line_with_a_404(
    openai_client: AsyncOpenAI,
) -> None:
    content = openai_lines([("a", "x"), ("b", "y")], model="gpt-nope")
    done = await openai_batch(openai_client, content, "/v1/chat/completions")
    assert done.status == "completed" and done.output_file_id is None
    assert done.request_counts.failed == 2 and done.request_counts.completed == 0
    lines, _ = parse_jsonl((await openai_client.files.content(done.error_file_id)).text)
    assert {line["custom_id"] for line in lines} == {"a", "b"}
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 404
        assert line["response"]["body"]["error"]["code"] == "model_not_found"


async def test_an_openai_line_whose_url_is_not_the_batch_endpoint_fails_the_batch(
    openai_client: AsyncOpenAI,
) -> None:
    content = openai_lines([("a", "x")]) + openai_lines([("b", "y")], endpoint="/v1/responses")
    done = await openai_batch(openai_client, content, "/v1/chat/completions")
    assert done.status == "failed" and done.output_file_id is None
    assert [e.model_dump() for e in done.errors.data] == [
        {
            "code": "invalid_url",
            "line": 2,
            "message": "The URL provided for this request does not prefix-match the batch endpoint.",
            "param": "url",
        }
    ]


async def test_duplicate_custom_ids_fail_the_batch_in_openai_words(
    openai_client: AsyncOpenAI,
) -> None:
    done = await openai_batch(
        openai_client, openai_lines([("a", "x"), ("a", "y")]), "/v1/chat/completions"
    )
    assert done.status == "failed"
    error = done.errors.data[0]
    assert error.code == "duplicate_custom_id" and error.line == 2
    assert error.message is not None and error.message.startswith(
        "The custom_id for this request is a duplicate of another request."
    )


async def test_known_models_are_configurable_and_a_provider_left_out_serves_any(
    emu: Emulator, openai_client: AsyncOpenAI, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(known_models={"openai": ["house-model"]})
    chat = await openai_client.chat.completions.create(
        model="house-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.model == "house-model"
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    message = await anthropic_client.messages.create(
        model="any-model-at-all", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.model == "any-model-at-all"


# --- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_sync_refusals(anthropic_client: AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await anthropic_client.messages.create(
            model="claude-nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-nope"},
    }
    # The SDK's signature demands max_tokens and messages; its raw post sends what we give it.
    for body, problem in [
        ({"model": "claude-haiku-4-5", "messages": []}, "max_tokens: Field required"),
        ({"model": "claude-haiku-4-5", "max_tokens": 5}, "messages: Field required"),
    ]:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await anthropic_client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
        assert bad.value.body["error"] == {"type": "invalid_request_error", "message": problem}


async def test_anthropic_batch_requests_with_bad_params_error_alone_in_the_results(
    anthropic_client: AsyncAnthropic,
) -> None:
    good = {
        "model": "claude-haiku-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    requests: Any = [
        {"custom_id": "ok", "params": good},
        {"custom_id": "no-max", "params": {k: v for k, v in good.items() if k != "max_tokens"}},
        {"custom_id": "no-msgs", "params": {k: v for k, v in good.items() if k != "messages"}},
        {"custom_id": "no-model", "params": {**good, "model": "claude-nope"}},
    ]
    batch = await anthropic_client.messages.batches.create(requests=requests)
    ended = await poll(
        lambda: anthropic_client.messages.batches.retrieve(batch.id),
        lambda b: b.processing_status == "ended",
    )
    assert ended.request_counts.succeeded == 1 and ended.request_counts.errored == 3
    results = {
        r.custom_id: r.result
        async for r in await anthropic_client.messages.batches.results(batch.id)
    }
    assert results["ok"].type == "succeeded"
    errors_seen = {
        key: (r.error.error.type, r.error.error.message)
        for key, r in results.items()
        if r.type == "errored"
    }
    assert errors_seen == {
        "no-max": ("invalid_request_error", "max_tokens: Field required"),
        "no-msgs": ("invalid_request_error", "messages: Field required"),
        "no-model": ("not_found_error", "model: claude-nope"),
    }


# --- Gemini ---------------------------------------------------------------------------------


async def test_gemini_calls_on_an_unknown_model_are_404_not_found(
    emu: Emulator, genai_client: genai.Client
) -> None:
    with pytest.raises(errors.ClientError) as sync:
        await genai_client.aio.models.generate_content(model="gemini-nope", contents="hi")
    assert sync.value.code == 404 and sync.value.status == "NOT_FOUND"
    assert sync.value.message is not None
    # This SDK version calls the v1 API by default; the message names the version called.
    assert "models/gemini-nope is not found for API version v1, or" in sync.value.message
    with pytest.raises(errors.ClientError) as batch:
        await genai_client.aio.batches.create(
            model="gemini-nope", src=[{"contents": [{"parts": [{"text": "hi"}]}]}]
        )
    assert batch.value.code == 404 and batch.value.message is not None
    assert "not supported for batchGenerateContent" in batch.value.message
    assert emu.stats()["batches_created"]["gemini"] == 0


async def test_gemini_refuses_invalid_contents_on_sync_and_inline_batch_calls(
    emu: Emulator, genai_client: genai.Client
) -> None:
    empty_parts = [types.Content(role="user", parts=[])]
    with pytest.raises(errors.ClientError) as sync:
        await genai_client.aio.models.generate_content(
            model="gemini-2.5-flash", contents=empty_parts
        )
    assert sync.value.code == 400 and sync.value.status == "INVALID_ARGUMENT"
    with pytest.raises(errors.ClientError) as inline:
        await genai_client.aio.batches.create(
            model="gemini-2.5-flash",
            src=[{"contents": [{"parts": [{"text": "ok"}]}]}, {"contents": [{"role": "user"}]}],
        )
    assert inline.value.code == 400 and inline.value.message == (
        "* BatchGenerateContentRequest.batch.input_config.requests.requests[1].request"
        ".contents[0].parts: contents.parts must not be empty.\n"
    )
    assert emu.stats()["batches_created"]["gemini"] == 0


async def test_gemini_refuses_contents_of_the_wrong_type(url: str) -> None:
    # The SDK validates types before sending; a raw call shows what the API itself says.
    async with httpx.AsyncClient(base_url=url, headers={"x-goog-api-key": "g"}) as http:
        answer = await http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": 5}
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "Invalid value at 'contents' "
        "(type.googleapis.com/google.ai.generativelanguage.v1beta.Content), 5",
    }


async def test_gemini_file_lines_with_invalid_contents_fail_alone(
    genai_client: genai.Client,
) -> None:
    lines = [
        {"key": "ok", "request": {"contents": [{"parts": [{"text": "hi"}]}]}},
        {"key": "five", "request": {"contents": 5}},
        {"key": "none", "request": {}},
    ]
    by_key = await gemini_file_batch(genai_client, lines)
    assert "response" in by_key["ok"]
    assert by_key["five"]["error"]["code"] == 3
    assert by_key["five"]["error"]["message"].startswith("Invalid value at 'contents'")
    assert by_key["none"]["error"] == {
        "code": 3,
        "message": "* GenerateContentRequest.contents: contents is not specified\n",
    }


async def test_emulator_fail_markers_still_pick_the_error(
    openai_client: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.RateLimitError):
        await openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "EMULATOR_FAIL:rate_limit"}]
        )
