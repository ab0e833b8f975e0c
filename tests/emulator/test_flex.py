"""OpenAI's Flex tier through the real SDK: who may use it, what it reports, when it is full."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from connector.emulator import Emulator

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("requested", "reported"),
    [
        (None, "default"),
        ("auto", "default"),
        ("default", "default"),
        ("flex", "flex"),
        ("fast", "priority"),
    ],
)
async def test_answers_report_the_tier_that_served_them(
    openai_client: AsyncOpenAI, requested: Any, reported: str
) -> None:
    tier: Any = {} if requested is None else {"service_tier": requested}
    chat = await openai_client.chat.completions.create(model="o3", messages=HI, **tier)
    assert chat.service_tier == reported
    response = await openai_client.responses.create(model="gpt-5", input="hi", **tier)
    assert response.service_tier == reported


async def test_flex_on_a_model_without_it_is_refused(openai_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, service_tier="flex"
        )
    assert info.value.body["message"] == "Unsupported service_tier: flex"
    assert info.value.body["param"] == "service_tier"
    bogus: Any = "bogus"
    with pytest.raises(openai.BadRequestError):
        await openai_client.responses.create(model="o3", input="hi", service_tier=bogus)


async def test_the_flex_model_list_is_configurable(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(openai_flex_models=["gpt-4o-mini"])
    chat = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=HI, service_tier="flex"
    )
    assert chat.service_tier == "flex"
    with pytest.raises(openai.BadRequestError):
        await openai_client.chat.completions.create(model="o3", messages=HI, service_tier="flex")


async def test_a_full_flex_tier_answers_429_resource_unavailable(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(flex_429_rate=1.0)
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client.responses.create(model="o4-mini", input="hi", service_tier="flex")
    assert info.value.code == "resource_unavailable"
    assert info.value.body["message"].startswith("Resource Unavailable")
    # The standard tier is not affected: the documented fallback works.
    fallback = await openai_client.responses.create(model="o4-mini", input="hi")
    assert fallback.service_tier == "default"
    assert emu.stats()["flex_calls"] == {"served": 0, "unavailable": 1}


async def flex_outcomes(client: AsyncOpenAI, n: int) -> list[bool]:
    out = []
    for _ in range(n):
        try:
            await client.chat.completions.create(model="o3", messages=HI, service_tier="flex")
            out.append(True)
        except openai.RateLimitError:
            out.append(False)
    return out


async def test_the_share_of_429s_is_seeded_per_call_and_repeatable(
    emu: Emulator, openai_client: AsyncOpenAI
) -> None:
    emu.set_faults(flex_429_rate=0.5, seed=7)
    first = await flex_outcomes(openai_client, 40)
    assert 10 <= first.count(False) <= 30  # the same request is sometimes served, sometimes not
    emu.reset()
    emu.set_faults(flex_429_rate=0.5, seed=7)
    assert await flex_outcomes(openai_client, 40) == first
    emu.reset()
    emu.set_faults(flex_429_rate=0.5, seed=8)
    assert await flex_outcomes(openai_client, 40) != first
    assert emu.stats()["flex_calls"]["served"] + emu.stats()["flex_calls"]["unavailable"] == 40
