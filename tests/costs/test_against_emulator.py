"""The cost rules end to end: the lanes, the real SDK adapters and the provider emulator.

No broker: the lanes run on in-memory tables and record what they emit, so these tests
look at what reached the provider and what came back, in real time (the emulator's batches
take a fraction of a second).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from connector.config import BatchingSettings, CostSettings, ProviderSettings, Settings
from connector.emulator import Emulator, EmulatorConfig
from connector.lanes.deferred import DeferredLane, now_ms
from connector.lanes.ledger import PendingEntry
from connector.lanes.realtime import RealtimeLane
from connector.pricing import PriceTable
from connector.providers.anthropic_batch import AnthropicBatchProvider
from connector.providers.base import Provider
from connector.providers.gemini_batch import GeminiBatchProvider
from connector.providers.openai_batch import OpenAIBatchProvider
from connector.summary import cost_report
from tests.lanes.fakes import FakeOutputs

PRICES = PriceTable.load()
POLICY = "Support policy. " + "A refund is due within 30 days when the parcel never arrived. " * 180
TARGETS = {
    "openai": ("gpt-4o-mini", "/v1/chat/completions"),
    "anthropic": ("claude-3-5-haiku-latest", "/v1/messages"),
    "gemini": ("gemini-2.5-flash", "generateContent"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served() -> AsyncIterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorConfig(processing_seconds=0.2))
    async with emulator.serve() as url:
        yield emulator, url


@pytest.fixture
def emulator(served: tuple[Emulator, str]) -> Emulator:
    emu, _ = served
    emu.reset()
    emu.set_faults(processing_seconds=0.2)
    return emu


def adapters(url: str) -> dict[str, Provider]:
    fast = {"max_retries": 0, "timeout_s": 10}
    return {
        "openai": OpenAIBatchProvider(ProviderSettings(base_url=f"{url}/v1", **fast)),
        "anthropic": AnthropicBatchProvider(ProviderSettings(base_url=url, **fast)),
        "gemini": GeminiBatchProvider(ProviderSettings(base_url=url, **fast)),
    }


def body(provider: str, system: str, text: str, model: str | None = None) -> dict[str, Any]:
    model = model or TARGETS[provider][0]
    if provider == "anthropic":
        return {
            "model": model,
            "max_tokens": 20,
            "system": system,
            "messages": [{"role": "user", "content": text}],
        }
    if provider == "gemini":
        return {
            "systemInstruction": {"parts": [{"text": system}]},
            "contents": [{"role": "user", "parts": [{"text": text}]}],
        }
    return {
        "model": model,
        "max_tokens": 20,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
    }


def request(i: int, provider: str, system: str = POLICY, **extra: Any) -> dict[str, Any]:
    model, endpoint = TARGETS[provider]
    return {
        "request_id": f"{provider}-{i}",
        "provider": provider,
        "model": model,
        "endpoint": endpoint,
        "body": json.dumps(body(provider, system, f"Ticket {i}: where is my parcel?")),
        "metadata": {},
        "deadline": None,
        "reply_topic": None,
        "attempt": 1,
        "created_at": now_ms(),
        **extra,
    }


class Run:
    """A deferred lane on one work partition, ticked until every request has its outcome."""

    def __init__(
        self, url: str, *, max_requests: int = 50, quota_retries: int = 6, **cost: Any
    ) -> None:
        batching = BatchingSettings(
            max_requests=max_requests,
            max_quota_retries=quota_retries,
            min_batch=1,
            max_wait_s=0.2,
            max_linger_s=1,
            expected_turnaround_s=30,
            quota_backoff_s=0.5,
        )
        settings = Settings(
            batching=batching, cost=CostSettings(**cost), poll_initial_s=0.1, poll_max_s=0.3
        )
        self.providers = adapters(url)
        self.out = FakeOutputs()
        self.pending: dict = {}
        self.batches: dict = {}

        async def flush() -> None:
            return None

        self.lane = DeferredLane(
            settings, self.providers, self.out, PRICES, self.pending, self.batches, flush=flush
        )

    async def through(
        self, requests: list[dict[str, Any]], bound_s: float = 60
    ) -> list[dict[str, Any]]:
        for i, req in enumerate(requests):
            await self.lane.on_request(
                PendingEntry.of_request(req, ("inference.deferred", 0, i)), 0
            )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + bound_s
        while (
            len(self.out.results) + len(self.out.failures) < len(requests) and loop.time() < give_up
        ):
            await self.lane.on_tick(0)
            await asyncio.sleep(0.05)
        for provider in self.providers.values():
            await provider.aclose()
        assert not self.out.failures, self.out.failures[:1]
        return self.out.results


def _failed_for_quota(emulator: Emulator) -> list[dict[str, Any]]:
    return [b for b in emulator.stats()["batches"] if b["state"] == "failed"]


async def test_with_admission_no_batch_fails_on_the_enqueued_token_limit(
    emulator: Emulator, served
) -> None:
    _, url = served
    limit = 12_000  # tokens: each request is about 3,000, so at most four in flight at once
    emulator.set_faults(openai_enqueued_token_limit={"gpt-4o-mini": limit}, processing_seconds=0.3)
    run = Run(url, max_requests=2, enqueued_token_limits={"openai/gpt-4o-mini": limit})
    results = await run.through([request(i, "openai") for i in range(12)])
    assert len(results) == 12
    assert _failed_for_quota(emulator) == []
    assert emulator.stats()["batches_created"]["openai"] == 6


async def test_without_admission_the_same_workload_hits_the_limit(
    emulator: Emulator, served
) -> None:
    """The control: the emulator does fail what admission holds back."""
    _, url = served
    # Batches take 2 s: however slow this machine, three of them are in flight at once.
    emulator.set_faults(openai_enqueued_token_limit={"gpt-4o-mini": 12_000}, processing_seconds=2.0)
    run = Run(url, max_requests=2, quota_retries=100)
    results = await run.through([request(i, "openai") for i in range(12)])
    assert len(results) == 12  # quota-failed batches were resubmitted later
    assert _failed_for_quota(emulator) != []


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_shared_system_prompt_is_read_from_the_cache_and_priced_so(
    emulator: Emulator, served, provider: str
) -> None:
    _, url = served
    run = Run(url)
    results = await run.through([request(i, provider) for i in range(20)])
    cached = [r for r in results if r["usage"]["cached_tokens"] > 0]
    assert len(cached) >= 19  # all but the first request of the first batch
    report = cost_report(results)
    assert report.total.saving_pct is not None and report.total.saving_pct >= 65
    for r in results:
        assert r["service_tier"] == "batch"
        assert r["cache_savings_usd"] == pytest.approx(report_cache_saving(r))
    assert report.total.savings.cache_usd > 0
    assert report.total.savings.total_usd == pytest.approx(report.total.saving_usd)


def report_cache_saving(result: dict[str, Any]) -> float:
    """What the result's tokens would cost uncached at the batch price, minus what they cost."""
    from connector.providers.base import Usage

    u = result["usage"]
    uncached = PRICES.costs(
        result["provider"], result["model"], Usage(u["input_tokens"], u["output_tokens"]), "batch"
    )
    return uncached.cost_usd - result["cost_usd"]


async def test_without_breakpoints_anthropic_caches_nothing(emulator: Emulator, served) -> None:
    _, url = served
    results = await Run(url, anthropic_cache_breakpoints=False).through(
        [request(i, "anthropic") for i in range(5)]
    )
    assert all(r["usage"]["cached_tokens"] == 0 for r in results)
    assert cost_report(results).total.saving_pct == pytest.approx(50, abs=0.5)


async def test_the_realtime_lane_serves_flex_and_falls_back_when_it_is_busy(
    emulator: Emulator, served
) -> None:
    _, url = served
    settings = Settings(batching=BatchingSettings(max_attempts=2), poll_max_s=0.2)
    out = FakeOutputs()
    providers = adapters(url)
    lane = RealtimeLane(settings, providers, out, PRICES, clock=now_ms)
    flex_request = {
        **request(1, "openai"),
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "body": json.dumps(body("openai", "short", "hi", "gpt-5-mini")),
    }
    await lane.handle(flex_request, None)
    emulator.set_faults(flex_429_rate=1.0)
    # Room for two Flex attempts (max_attempts) before the deadline, then the standard tier.
    await lane.handle({**flex_request, "request_id": "busy", "deadline": now_ms() + 30_000}, None)
    await providers["openai"].aclose()
    served_flex, fell_back = out.results
    assert served_flex["service_tier"] == "flex" and fell_back["service_tier"] == "standard"
    assert served_flex["cost_usd"] == pytest.approx(served_flex["realtime_cost_usd"] / 2)
    assert fell_back["cost_usd"] == pytest.approx(fell_back["realtime_cost_usd"])
    assert emulator.stats()["flex_calls"] == {"openai": {"served": 1, "unavailable": 2}}


async def test_a_primer_batch_warms_the_cache_for_the_rest(emulator: Emulator, served) -> None:
    _, url = served
    run = Run(url, cache_primer=True, primer_min_saving_usd=0.0)
    results = await run.through([request(i, "anthropic") for i in range(6)])
    primer, rest = (b for b in emulator.stats()["batches"] if b["provider"] == "anthropic")
    assert (primer["total"], rest["total"]) == (1, 5)
    by_id = {r["request_id"]: r["usage"] for r in results}
    assert by_id["anthropic-0"]["cache_write_tokens"] > 0  # the primer wrote the prefix
    assert all(
        by_id[f"anthropic-{i}"]["cached_tokens"] > 0 for i in range(1, 6)
    )  # the rest read it
