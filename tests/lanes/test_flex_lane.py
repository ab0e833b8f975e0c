"""The realtime lane's tiers against a fake provider: Flex where asked, the standard tier
when Flex has no room before the deadline, and results priced by the tier that served them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.config import BatchingSettings, CostSettings, Settings
from connector.costs.flex import ESCALATED_KEY, TIER_METADATA_KEY
from connector.lanes.realtime import RealtimeLane
from connector.pricing import PriceTable
from connector.providers.base import BatchItem, Outcome, OutcomeKind, Usage
from tests.lanes.fakes import Clock, FakeOutputs, FakeProvider

PRICES = PriceTable.load()
USAGE = Usage(input_tokens=2000, output_tokens=100, cached_tokens=1024)


class TieredProvider(FakeProvider):
    """Answers synchronously; Flex calls fail with 429 while ``flex_busy`` lasts."""

    def __init__(
        self, clock: Clock, flex_busy: int = 0, flex_code: str = "resource_unavailable"
    ) -> None:
        super().__init__()
        self.clock = clock
        self.flex_busy = flex_busy
        self.flex_code = flex_code
        self.calls: list[tuple[str | None, int]] = []  # (service_tier sent, at)

    async def complete(self, item: BatchItem) -> Outcome:
        tier = item.body.get("service_tier")
        self.calls.append((tier, self.clock.now))
        if tier == "flex" and self.flex_busy:
            self.flex_busy -= 1
            kind = (
                OutcomeKind.PERMANENT
                if self.flex_code == "invalid_request_error"
                else OutcomeKind.RETRYABLE
            )
            return Outcome(
                item.custom_id,
                kind,
                error_code=self.flex_code,
                error_message="Resource Unavailable",
            )
        served = "flex" if tier == "flex" else "default"
        return Outcome(
            item.custom_id, OutcomeKind.SUCCEEDED, body={"service_tier": served}, usage=USAGE
        )


class Lane:
    def __init__(self, flex_busy: int = 0, **cost: Any) -> None:
        self.clock = Clock()
        self.provider = TieredProvider(
            self.clock, flex_busy, cost.pop("flex_code", "resource_unavailable")
        )
        self.out = FakeOutputs()
        self.sleeps: list[float] = []
        settings = Settings(
            batching=BatchingSettings(max_attempts=3), cost=CostSettings(**cost), poll_max_s=30
        )

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            self.clock.advance(seconds)

        self.lane = RealtimeLane(
            settings, {"openai": self.provider}, self.out, PRICES, self.clock, sleep
        )

    async def send(
        self,
        model: str = "gpt-5-mini",
        *,
        tier: str | None = None,
        metadata: dict | None = None,
        deadline_s: float | None = None,
        body: dict | None = None,
    ) -> dict[str, Any]:
        request = {
            "request_id": "rt-1",
            "provider": "openai",
            "model": model,
            "endpoint": "/v1/chat/completions",
            "body": json.dumps(
                body or {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            ),
            "metadata": metadata or {},
            "deadline": None if deadline_s is None else self.clock.now + int(deadline_s * 1000),
            "reply_topic": None,
            "attempt": 1,
            "created_at": self.clock.now,
            "service_tier": tier,
        }
        await self.lane.handle(request, None)
        [result] = self.out.results
        return result


def tiers_sent(lane: Lane) -> list[str | None]:
    return [tier for tier, _ in lane.provider.calls]


async def test_a_request_that_opts_in_is_served_and_priced_at_flex() -> None:
    lane = Lane()
    result = await lane.send(tier="flex")
    assert tiers_sent(lane) == ["flex"]
    assert result["service_tier"] == "flex"
    assert result["cost_usd"] == pytest.approx(
        PRICES.costs("openai", "gpt-5-mini", USAGE, "batch").cost_usd
    )
    assert result["realtime_cost_usd"] == pytest.approx(
        PRICES.costs("openai", "gpt-5-mini", USAGE, "standard").realtime_cost_usd
    )
    assert result["cache_savings_usd"] > 0


async def test_the_metadata_key_and_an_escalation_opt_in_too() -> None:
    assert (await Lane().send(metadata={TIER_METADATA_KEY: "flex"}))["service_tier"] == "flex"
    assert (await Lane().send(metadata={ESCALATED_KEY: "true"}, deadline_s=120))[
        "service_tier"
    ] == "flex"
    off = Lane(flex_for_escalations=False)
    assert (await off.send(metadata={ESCALATED_KEY: "true"}, deadline_s=120))[
        "service_tier"
    ] == "standard"


async def test_without_opting_in_or_without_flex_for_the_model_the_standard_tier_serves() -> None:
    plain = Lane()
    result = await plain.send()
    assert tiers_sent(plain) == [None] and result["service_tier"] == "standard"
    assert result["cost_usd"] == pytest.approx(
        PRICES.costs("openai", "gpt-5-mini", USAGE, "standard").cost_usd
    )
    older = Lane()
    assert (await older.send("gpt-4o-mini", tier="flex"))["service_tier"] == "standard"
    assert tiers_sent(older) == [None]


async def test_a_busy_flex_is_tried_again_while_the_deadline_leaves_room() -> None:
    lane = Lane(flex_busy=2)
    result = await lane.send(tier="flex", deadline_s=600)
    assert tiers_sent(lane) == ["flex", "flex", "flex"] and result["service_tier"] == "flex"
    assert len(lane.sleeps) == 2


async def test_a_busy_flex_falls_back_to_the_standard_tier_when_the_deadline_is_near() -> None:
    lane = Lane(flex_busy=5)
    result = await lane.send(
        metadata={ESCALATED_KEY: "true"}, deadline_s=11.5
    )  # 1.5 s of Flex, 10 s reserved
    assert tiers_sent(lane) == ["flex", None]
    assert result["service_tier"] == "standard"
    at_flex, at_standard = (at for _, at in lane.provider.calls)
    assert at_standard - at_flex < 11_500


async def test_no_room_at_all_goes_straight_to_the_standard_tier() -> None:
    lane = Lane()
    assert (await lane.send(tier="flex", deadline_s=10.5))["service_tier"] == "standard"
    assert tiers_sent(lane) == [None]


async def test_flex_attempts_run_out_then_the_standard_tier_answers() -> None:
    lane = Lane(flex_busy=10)
    assert (await lane.send(tier="flex"))["service_tier"] == "standard"
    assert tiers_sent(lane) == ["flex", "flex", "flex", None]


async def test_a_flex_refusal_goes_to_the_standard_tier_at_once() -> None:
    lane = Lane(flex_busy=1, flex_code="invalid_request_error")
    assert (await lane.send(tier="flex"))["service_tier"] == "standard"
    assert tiers_sent(lane) == ["flex", None] and lane.sleeps == []


async def test_a_tier_the_caller_wrote_in_the_body_is_sent_as_written() -> None:
    lane = Lane()
    body = {
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "messages": [{"role": "user", "content": "hi"}],
    }
    result = await lane.send(body=body)
    assert tiers_sent(lane) == ["flex"]
    assert result["service_tier"] == "flex"  # as the provider reported it
