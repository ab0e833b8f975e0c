"""The real ``anthropic`` SDK against the emulator: Message Batches and Messages."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from anthropic import AsyncAnthropic
from emulator_helpers import parse_jsonl, poll

from connector.emulator import Emulator


def requests(n: int, prompt: str = "hello", **params) -> list[dict]:
    return [
        {
            "custom_id": f"req-{i}",
            "params": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": prompt}],
                **params,
            },
        }
        for i in range(n)
    ]


async def wait_ended(client: AsyncAnthropic, batch_id: str):
    return await poll(
        lambda: client.messages.batches.retrieve(batch_id), lambda b: b.processing_status == "ended"
    )


async def collect(client: AsyncAnthropic, batch_id: str) -> dict[str, object]:
    return {r.custom_id: r.result async for r in await client.messages.batches.results(batch_id)}


async def test_full_lifecycle_and_results(
    emu: Emulator, url: str, anthropic_client: AsyncAnthropic
) -> None:
    items = requests(4)
    items[1]["params"]["messages"][0]["content"] = "EMULATOR_FAIL:overloaded"
    batch = await anthropic_client.messages.batches.create(requests=items)
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 4
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(24 * 3600)

    ended = await wait_ended(anthropic_client, batch.id)
    assert ended.ended_at is not None
    assert ended.results_url == f"{url}/v1/messages/batches/{batch.id}/results"
    assert ended.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 3,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }

    results = await collect(anthropic_client, batch.id)
    assert set(results) == {"req-0", "req-1", "req-2", "req-3"}
    assert (
        results["req-1"].type == "errored"
        and results["req-1"].error.error.type == "overloaded_error"
    )
    ok = results["req-0"]
    assert ok.type == "succeeded" and ok.message.content[0].text.startswith("Emulated answer")
    assert ok.message.usage.input_tokens > 0 and 20 <= ok.message.usage.output_tokens <= 200
    assert ok.message.id != results["req-2"].message.id
    assert (
        emu.stats()["batches_created"]["anthropic"] == 1
        and emu.stats()["requests_submitted"]["anthropic"] == 4
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda items: items[0].update(custom_id="has space"),
        lambda items: items[0].update(custom_id="x" * 65),
        lambda items: items[1].update(custom_id=items[0]["custom_id"]),
        lambda items: items[0]["params"].update(stream=True),
    ],
    ids=["bad-char", "too-long", "duplicate", "stream"],
)
async def test_invalid_batches_are_rejected_with_400(
    emu: Emulator, anthropic_client: AsyncAnthropic, mutate
) -> None:
    items = requests(2)
    mutate(items)
    with pytest.raises(anthropic.BadRequestError) as info:
        await anthropic_client.messages.batches.create(requests=items)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert emu.stats()["batches_created"]["anthropic"] == 0


async def test_too_large_batch_is_rejected_with_413(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(anthropic_max_bytes=2000)
    with pytest.raises(anthropic.APIStatusError) as info:
        await anthropic_client.messages.batches.create(requests=requests(3, prompt="x" * 1000))
    assert info.value.status_code == 413 and info.value.body["error"]["type"] == "request_too_large"


async def test_cancel_yields_canceled_results(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(processing_seconds=3)  # the cancel must arrive before the batch ends
    batch = await anthropic_client.messages.batches.create(requests=requests(4))
    canceling = await anthropic_client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = await wait_ended(anthropic_client, batch.id)
    assert ended.request_counts.canceled == 4
    assert {r.type for r in (await collect(anthropic_client, batch.id)).values()} == {"canceled"}


async def test_expired_batch_has_partial_results(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(batch_outcome="expired")
    batch = await anthropic_client.messages.batches.create(requests=requests(4))
    ended = await wait_ended(anthropic_client, batch.id)
    assert ended.request_counts.succeeded == 2 and ended.request_counts.expired == 2
    types = sorted(r.type for r in (await collect(anthropic_client, batch.id)).values())
    assert types == ["expired", "expired", "succeeded", "succeeded"]


async def test_failed_outcome_errors_every_request(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(batch_outcome="failed")
    batch = await anthropic_client.messages.batches.create(requests=requests(2))
    ended = await wait_ended(anthropic_client, batch.id)
    assert ended.request_counts.errored == 2


async def test_error_rate_fails_the_same_requests_every_time(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(error_rate=0.5, error_kinds=["rate_limit"], seed=3)
    first = await anthropic_client.messages.batches.create(requests=requests(20))
    second = await anthropic_client.messages.batches.create(requests=requests(20))
    await wait_ended(anthropic_client, second.id)
    errored_a = {
        k for k, r in (await collect(anthropic_client, first.id)).items() if r.type == "errored"
    }
    errored_b = {
        k for k, r in (await collect(anthropic_client, second.id)).items() if r.type == "errored"
    }
    assert errored_a == errored_b and 0 < len(errored_a) < 20


async def test_malformed_lines_in_results_stream(
    emu: Emulator, url: str, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(malformed_lines=1)
    batch = await anthropic_client.messages.batches.create(requests=requests(2))
    ended = await wait_ended(anthropic_client, batch.id)
    async with httpx.AsyncClient() as http:
        text = (await http.get(ended.results_url)).text
    good, bad = parse_jsonl(text)
    assert len(good) == 2 and len(bad) == 1
    with pytest.raises(json.JSONDecodeError):
        await collect(anthropic_client, batch.id)


async def test_list_paginates_with_after_and_before_ids(anthropic_client: AsyncAnthropic) -> None:
    ids = [
        (await anthropic_client.messages.batches.create(requests=requests(1))).id for _ in range(5)
    ]
    newest_first = ids[::-1]
    page = await anthropic_client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert page.first_id == newest_first[0] and page.last_id == newest_first[1]
    assert [
        b.id async for b in await anthropic_client.messages.batches.list(limit=2)
    ] == newest_first
    before = await anthropic_client.messages.batches.list(before_id=newest_first[3], limit=2)
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more


async def test_http_500_then_success_with_sdk_retries(emu: Emulator, url: str) -> None:
    emu.set_faults(
        http_errors=[
            {
                "path_regex": "^/v1/messages/batches$",
                "method": "POST",
                "status": 500,
                "count": 1,
                "retry_after": 0.01,
            }
        ]
    )
    client = AsyncAnthropic(api_key="sk-ant-test", base_url=url, max_retries=2)
    batch = await client.messages.batches.create(requests=requests(1))
    assert batch.id.startswith("msgbatch_")
    assert emu.stats()["batches_created"]["anthropic"] == 1


async def test_injected_overload_has_anthropic_error_body(
    emu: Emulator, anthropic_client: AsyncAnthropic
) -> None:
    emu.set_faults(http_errors=[{"path_regex": "^/v1/messages$", "status": 503, "count": 1}])
    with pytest.raises(anthropic.APIStatusError) as info:
        await anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 503 and info.value.body["error"]["type"] == "overloaded_error"


async def test_sync_messages(emu: Emulator, anthropic_client: AsyncAnthropic) -> None:
    msg = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text.startswith("Emulated answer") and msg.stop_reason == "end_turn"
    with pytest.raises(anthropic.RateLimitError) as info:
        await anthropic_client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "EMULATOR_FAIL:rate_limit"}],
        )
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert emu.stats()["sync_calls"]["anthropic"] == 2
