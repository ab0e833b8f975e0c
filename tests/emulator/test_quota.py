"""OpenAI's enqueued-token limit through the real SDK: batches in flight per model, and the
batch that would pass the limit failing after upload."""

from __future__ import annotations

import openai
import pytest
from emulator_helpers import Clock, openai_lines
from openai import AsyncOpenAI

from connector.emulator import Emulator

PROCESSING_SECONDS = 10.0


@pytest.fixture(autouse=True)
def slow_batches(emu: Emulator, clock: Clock) -> None:
    """Batches take 10 s of the frozen clock: none ends while a test looks."""
    emu.set_faults(processing_seconds=PROCESSING_SECONDS)


async def submit(client: AsyncOpenAI, model: str = "gpt-4o-mini") -> openai.types.Batch:
    content = openai_lines([(f"r{i}", f"question number {i}") for i in range(20)], model=model)
    uploaded = await client.files.create(file=("in.jsonl", content), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def status_after_validation(
    client: AsyncOpenAI, clock: Clock, batch_id: str
) -> openai.types.Batch:
    clock.now += 0.3 * PROCESSING_SECONDS  # past validating, before the batch ends
    return await client.batches.retrieve(batch_id)


async def test_a_batch_over_its_models_enqueued_limit_fails_after_upload(
    emu: Emulator, openai_client: AsyncOpenAI, clock: Clock
) -> None:
    first = await submit(openai_client)
    enqueued = emu.stats()["openai_enqueued_tokens"]
    size = enqueued["gpt-4o-mini"]
    assert list(enqueued) == ["gpt-4o-mini"] and size > 0

    emu.set_faults(openai_enqueued_token_limit={"gpt-4o-mini": 2 * size - 1})
    over = await submit(openai_client)
    assert over.status == "validating"  # accepted, as OpenAI accepts it, then failed
    failed = await status_after_validation(openai_client, clock, over.id)
    assert failed.status == "failed" and failed.failed_at is not None
    assert [e.model_dump() for e in failed.errors.data] == [
        {
            "code": "token_limit_exceeded",
            "line": None,
            "message": f"Enqueued token limit reached for gpt-4o-mini in organization "
            f"org-emulator. Limit: {2 * size - 1:,} enqueued tokens. Please try again once "
            "some in_progress batches have been completed.",
            "param": None,
        }
    ]
    # A failed batch holds nothing; another model has no limit.
    assert emu.stats()["openai_enqueued_tokens"] == {"gpt-4o-mini": size}
    other = await submit(openai_client, model="gpt-4o")
    assert (await status_after_validation(openai_client, clock, other.id)).status == "in_progress"
    assert (await openai_client.batches.retrieve(first.id)).status == "in_progress"


async def test_a_batch_fits_exactly_and_room_returns_when_batches_end(
    emu: Emulator, openai_client: AsyncOpenAI, clock: Clock
) -> None:
    first = await submit(openai_client)
    size = emu.stats()["openai_enqueued_tokens"]["gpt-4o-mini"]
    emu.set_faults(openai_enqueued_token_limit={"gpt-4o-mini": 2 * size})
    fits = await submit(openai_client)
    assert (await status_after_validation(openai_client, clock, fits.id)).status == "in_progress"
    assert emu.stats()["openai_enqueued_tokens"] == {"gpt-4o-mini": 2 * size}
    third = await submit(openai_client)
    assert (await status_after_validation(openai_client, clock, third.id)).status == "failed"

    clock.now += PROCESSING_SECONDS  # both batches in flight have ended
    assert (await openai_client.batches.retrieve(first.id)).status == "completed"
    assert emu.stats()["openai_enqueued_tokens"] == {}
    again = await submit(openai_client)
    assert (await status_after_validation(openai_client, clock, again.id)).status == "in_progress"


async def test_the_old_all_or_nothing_fault_still_fails_every_batch(
    emu: Emulator, openai_client: AsyncOpenAI, clock: Clock
) -> None:
    emu.set_faults(openai_token_limit=True)
    batch = await submit(openai_client)
    failed = await status_after_validation(openai_client, clock, batch.id)
    assert failed.errors.data[0].code == "token_limit_exceeded"
    assert "Limit: 90,000 enqueued tokens" in (failed.errors.data[0].message or "")
