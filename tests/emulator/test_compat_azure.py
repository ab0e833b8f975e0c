"""OpenAI-compatible providers under /compat/<name> and Azure OpenAI under /openai, driven by
the official clients (AsyncOpenAI with a base URL, AsyncAzureOpenAI)."""

from __future__ import annotations

import io

import aiohttp
import openai
import pytest
from emulator_helpers import openai_lines, poll
from openai import AsyncAzureOpenAI, AsyncOpenAI

from connector.emulator import Emulator

API_VERSION = "2024-10-21"


async def _batch(client: AsyncOpenAI, endpoint: str, window: str = "24h") -> str:
    lines = openai_lines([("a", "hi"), ("b", "ho")], model="m", endpoint="/v1/chat/completions")
    if endpoint != "/v1/chat/completions":
        lines = lines.replace(b'"/v1/chat/completions"', f'"{endpoint}"'.encode())
    file = await client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
    batch = await client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )
    return batch.id


async def test_each_compat_name_is_its_own_namespace(emu: Emulator, url: str) -> None:
    groq = AsyncOpenAI(api_key="k", base_url=f"{url}/compat/groq/v1", max_retries=0)
    together = AsyncOpenAI(api_key="k", base_url=f"{url}/compat/together/v1", max_retries=0)
    plain = AsyncOpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0)
    batch_id = await _batch(groq, "/v1/chat/completions", window="7d")
    assert [b.id async for b in groq.batches.list()] == [batch_id]
    assert [b.id async for b in together.batches.list()] == []
    assert [b.id async for b in plain.batches.list()] == []
    with pytest.raises(openai.NotFoundError):
        await plain.batches.retrieve(batch_id)
    done = await poll(lambda: groq.batches.retrieve(batch_id), lambda b: b.status == "completed")
    assert done.completion_window == "7d"
    assert done.output_file_id
    assert b'"custom_id"' in (await groq.files.content(done.output_file_id)).content
    stats = emu.stats()
    assert stats["batches_created"]["groq"] == 1
    assert stats["batches_created"].get("together", 0) == 0
    assert stats["batches_created"]["openai"] == 0
    assert {"provider": "groq", "id": batch_id, "state": "completed"}.items() <= next(
        b for b in stats["batches"] if b["id"] == batch_id
    ).items()


async def test_compat_sync_calls_answer_by_endpoint(emu: Emulator, url: str) -> None:
    groq = AsyncOpenAI(api_key="k", base_url=f"{url}/compat/groq/v1", max_retries=0)
    embedded = await groq.embeddings.create(model="e", input="x", encoding_format="float")
    assert embedded.data and isinstance(embedded.data[0].embedding, list)
    chat = await groq.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content
    assert emu.stats()["sync_calls"]["groq"] == 2 and emu.stats()["sync_calls"]["openai"] == 0


async def test_openai_keeps_refusing_windows_other_than_24h(emu: Emulator, url: str) -> None:
    plain = AsyncOpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        await _batch(plain, "/v1/chat/completions", window="7d")


async def test_azure_batch_and_deployment_calls(emu: Emulator, url: str) -> None:
    azure = AsyncAzureOpenAI(
        api_key="k", azure_endpoint=url, api_version=API_VERSION, max_retries=0
    )
    batch_id = await _batch(azure, "/chat/completions")  # Azure spells it without /v1
    done = await poll(lambda: azure.batches.retrieve(batch_id), lambda b: b.status == "completed")
    assert done.request_counts and done.request_counts.completed == 2
    chat = await azure.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.model == "my-deployment" and chat.choices[0].message.content
    stats = emu.stats()
    assert stats["batches_created"]["azure"] == 1 and stats["sync_calls"]["azure"] == 1
    assert stats["batches_created"]["openai"] == 0


async def test_azure_resource_under_a_name(emu: Emulator, url: str) -> None:
    azure = AsyncAzureOpenAI(
        api_key="k", azure_endpoint=f"{url}/azure/eu", api_version=API_VERSION, max_retries=0
    )
    await _batch(azure, "/chat/completions")
    assert emu.stats()["batches_created"]["eu"] == 1


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {"api-key": "k"}, 400),  # no api-version
        (f"?api-version={API_VERSION}", {}, 401),  # no key
        (f"?api-version={API_VERSION}", {"api-key": "k"}, 200),
    ],
)
async def test_azure_requires_api_version_and_key(
    emu: Emulator, url: str, query: str, headers: dict[str, str], status: int
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/openai/batches{query}", headers=headers) as response,
    ):
        assert response.status == status
        body = await response.json()
    if status != 200:
        assert body["error"]["code"] and body["error"]["message"]
