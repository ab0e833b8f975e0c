"""The real ``openai`` SDK against the emulator: files, batches, sync endpoints, webhooks."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from aiohttp import web
from emulator_helpers import openai_lines, parse_jsonl, poll
from openai import AsyncOpenAI, OpenAI

from connector.emulator import Emulator

FINAL = {"completed", "failed", "expired", "cancelled"}


async def submit(
    client: AsyncOpenAI, requests: list[tuple[str, str]], **kwargs
) -> openai.types.Batch:
    content = openai_lines(
        requests, **{k: v for k, v in kwargs.items() if k in ("model", "endpoint")}
    )
    uploaded = await client.files.create(file=("input.jsonl", content), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=kwargs.get("endpoint", "/v1/chat/completions"),
        completion_window="24h",
        metadata=kwargs.get("metadata"),
    )


async def wait_final(client: AsyncOpenAI, batch_id: str) -> openai.types.Batch:
    return await poll(lambda: client.batches.retrieve(batch_id), lambda b: b.status in FINAL)


async def test_full_lifecycle_with_output_and_error_files(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    requests = [(f"req-{i}", f"question {i}") for i in range(6)]
    requests[2] = ("req-2", "EMULATOR_FAIL:rate_limit")
    requests[4] = ("req-4", "EMULATOR_FAIL:invalid_request")
    batch = await submit(openai_client, requests, metadata={"batchbridge_batch_id": "bb-1"})
    assert batch.status == "validating"
    assert batch.metadata == {"batchbridge_batch_id": "bb-1"}
    assert batch.expires_at == batch.created_at + 24 * 3600

    seen = set()

    async def fetch() -> openai.types.Batch:
        b = await openai_client.batches.retrieve(batch.id)
        seen.add(b.status)
        return b

    done = await poll(fetch, lambda b: b.status in FINAL)
    assert done.status == "completed"
    assert {"validating", "completed"} <= seen
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.request_counts.model_dump() == {"total": 6, "completed": 4, "failed": 2}
    assert (
        done.usage is not None
        and done.usage.input_tokens > 0
        and done.usage.output_tokens >= 4 * 20
    )

    output, bad = parse_jsonl((await openai_client.files.content(done.output_file_id)).text)
    assert bad == []
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1", "req-3", "req-5"]
    body = output[0]["response"]["body"]
    assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert (
        sum(line["response"]["body"]["usage"]["completion_tokens"] for line in output)
        == done.usage.output_tokens
    )

    errors, _ = parse_jsonl((await openai_client.files.content(done.error_file_id)).text)
    by_id = {line["custom_id"]: line for line in errors}
    assert (
        by_id["req-2"]["response"] is None
        and by_id["req-2"]["error"]["code"] == "rate_limit_exceeded"
    )
    assert by_id["req-4"]["error"] is None and by_id["req-4"]["response"]["status_code"] == 400
    assert by_id["req-4"]["response"]["body"]["error"]["code"] == "invalid_request"

    stats = emu.stats()
    assert stats["batches_created"]["openai"] == 1 and stats["requests_submitted"]["openai"] == 6
    assert stats["files_uploaded"] == 1
    assert stats["batches"] == [
        {"provider": "openai", "id": batch.id, "tag": "bb-1", "state": "completed", "total": 6}
    ]


async def test_file_metadata_and_retrieve(openai_client: AsyncOpenAI) -> None:
    content = openai_lines([("a", "x")])
    uploaded = await openai_client.files.create(file=("input.jsonl", content), purpose="batch")
    again = await openai_client.files.retrieve(uploaded.id)
    assert (
        again.bytes == len(content) and again.purpose == "batch" and again.filename == "input.jsonl"
    )
    assert (await openai_client.files.content(uploaded.id)).content == content
    with pytest.raises(openai.NotFoundError):
        await openai_client.files.retrieve("file-missing")


async def test_all_failing_batch_completes_with_only_an_error_file(
    openai_client: AsyncOpenAI,
) -> None:
    batch = await submit(openai_client, [(f"r{i}", "EMULATOR_FAIL:server_error") for i in range(3)])
    done = await wait_final(openai_client, batch.id)
    assert done.status == "completed"
    assert done.output_file_id is None and done.error_file_id is not None
    assert done.request_counts.failed == 3 and done.request_counts.completed == 0
    errors, _ = parse_jsonl((await openai_client.files.content(done.error_file_id)).text)
    assert {line["error"]["code"] for line in errors} == {"server_error"}


async def test_expired_batch_returns_partial_results(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(batch_outcome="expired")
    batch = await submit(openai_client, [(f"r{i}", "q") for i in range(4)])
    done = await wait_final(openai_client, batch.id)
    assert done.status == "expired" and done.expired_at is not None
    output, _ = parse_jsonl((await openai_client.files.content(done.output_file_id)).text)
    errors, _ = parse_jsonl((await openai_client.files.content(done.error_file_id)).text)
    assert len(output) == 2 and len(errors) == 2
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


async def test_cancel_moves_through_cancelling_to_cancelled(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(processing_seconds=3)  # the cancel must arrive before the batch ends
    batch = await submit(openai_client, [(f"r{i}", "q") for i in range(4)])
    cancelling = await openai_client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = await wait_final(openai_client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    errors, _ = parse_jsonl((await openai_client.files.content(done.error_file_id)).text)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    with pytest.raises(openai.BadRequestError):
        await openai_client.batches.cancel(batch.id)


async def test_stuck_batch_stays_in_progress_until_cancelled(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(batch_outcome="stuck")
    batch = await submit(openai_client, [("r0", "q")])
    await asyncio.sleep(emu.config.processing_seconds * 2)
    assert (await openai_client.batches.retrieve(batch.id)).status == "in_progress"
    await openai_client.batches.cancel(batch.id)
    assert (await wait_final(openai_client, batch.id)).status == "cancelled"


async def test_token_limit_fails_the_batch(emu: Emulator, openai_client: AsyncOpenAI) -> None:
    emu.set_faults(openai_token_limit=True)
    batch = await submit(openai_client, [("r0", "q")])
    done = await wait_final(openai_client, batch.id)
    assert done.status == "failed" and done.failed_at is not None
    assert [e.code for e in done.errors.data] == ["token_limit_exceeded"]
    assert done.output_file_id is None and done.error_file_id is None


async def test_more_than_one_model_fails_validation(openai_client: AsyncOpenAI) -> None:
    content = openai_lines([("a", "x")], model="gpt-4o-mini")
    content += openai_lines([("b", "y")], model="gpt-4o")
    uploaded = await openai_client.files.create(file=("input.jsonl", content), purpose="batch")
    batch = await openai_client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await wait_final(openai_client, batch.id)
    assert done.status == "failed"
    assert done.errors.data[0].code == "mismatched_model" and done.errors.data[0].line == 2


async def test_create_rejects_unknown_input_file(openai_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await openai_client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )


async def test_malformed_lines_are_injected_into_the_output_file(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(malformed_lines=2)
    batch = await submit(openai_client, [(f"r{i}", "q") for i in range(3)])
    done = await wait_final(openai_client, batch.id)
    good, bad = parse_jsonl((await openai_client.files.content(done.output_file_id)).text)
    assert len(good) == 3 and len(bad) == 2


async def test_list_paginates_newest_first(openai_client: AsyncOpenAI) -> None:
    ids = [(await submit(openai_client, [("r", "q")])).id for _ in range(5)]
    first = await openai_client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    everything = [b.id async for b in await openai_client.batches.list(limit=2)]
    assert everything == ids[::-1]


async def test_http_429_then_success_with_sdk_retries(emu: Emulator, url: str) -> None:
    emu.set_faults(
        http_errors=[
            {
                "path_regex": "^/v1/batches/",
                "method": "GET",
                "status": 429,
                "count": 2,
                "retry_after": 0.01,
            }
        ]
    )
    client = AsyncOpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=3)
    batch = await submit(client, [("r", "q")])
    assert (await client.batches.retrieve(batch.id)).id == batch.id
    assert emu.config.http_errors[0].count == 0


async def test_http_500_surfaces_as_provider_error_without_retries(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(http_errors=[{"path_regex": "^/v1/files$", "status": 500, "count": 1}])
    with pytest.raises(openai.InternalServerError) as info:
        await openai_client.files.create(file=("input.jsonl", b"{}"), purpose="batch")
    assert info.value.body["type"] == "server_error"
    assert (await openai_client.files.create(file=("input.jsonl", b"{}"), purpose="batch")).id


async def test_sync_endpoints(emu: Emulator, openai_client: AsyncOpenAI) -> None:
    chat = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert (
        chat.choices[0].message.content.startswith("Emulated answer")
        and chat.usage.prompt_tokens > 0
    )
    again = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert again.choices[0].message.content == chat.choices[0].message.content
    response = await openai_client.responses.create(model="gpt-4o-mini", input="hello")
    assert response.output_text.startswith("Emulated answer") and response.usage.output_tokens >= 20
    embeddings = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"]
    )
    assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == 8
    as_b64 = await openai_client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="base64"
    )
    assert isinstance(as_b64.data[0].embedding, str)
    with pytest.raises(openai.RateLimitError):
        await openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "EMULATOR_FAIL:rate_limit"}]
        )
    assert emu.stats()["sync_calls"]["openai"] == 6


async def test_embeddings_batch(openai_client: AsyncOpenAI) -> None:
    batch = await submit(
        openai_client,
        [("e1", "text one")],
        model="text-embedding-3-small",
        endpoint="/v1/embeddings",
    )
    done = await wait_final(openai_client, batch.id)
    output, _ = parse_jsonl((await openai_client.files.content(done.output_file_id)).text)
    assert output[0]["response"]["body"]["data"][0]["object"] == "embedding"


async def test_webhook_delivery_verifies_with_the_sdk(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    received: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        emu.set_faults(
            webhook_url=f"http://127.0.0.1:{runner.addresses[0][1]}/hook", webhook_secret=secret
        )
        batch = await submit(openai_client, [("r", "q")])
        body, headers = await asyncio.wait_for(received.get(), timeout=5)
    finally:
        await runner.cleanup()
    event = OpenAI(api_key="sk-test").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "batch.completed" and event.data.id == batch.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        OpenAI(api_key="sk-test").webhooks.unwrap(body, headers, secret="whsec_" + "A" * 32)
    assert json.loads(body)["object"] == "event"
