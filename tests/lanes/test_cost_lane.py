"""The deferred lane's cost rules against in-memory tables and a fake provider: cache-aware
closing, cache hints, primer batches, enqueued-token admission, budgets and the records."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connector.config import BatchingSettings, CostSettings, Settings
from connector.costs.flex import ESCALATED_KEY
from connector.lanes.deferred import DeferredLane
from connector.lanes.ledger import BatchPhase, EntryState, Ledger, PendingEntry
from connector.pricing import PriceTable
from connector.providers.base import BatchHandle, Outcome, OutcomeKind, Usage
from connector.summary import cost_report
from tests.lanes.fakes import Clock, FakeOutputs, FakeProvider

PRICES = PriceTable.load()
POLICIES = {
    name: f"Support policy {name}. "
    + "Refunds within 30 days; escalate twice-asked questions. " * 80
    for name in ("a", "b", "c")
}
MODEL = {"openai": "gpt-5-mini", "anthropic": "claude-3-5-haiku-latest"}
ENDPOINT = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


class CachingProvider(FakeProvider):
    """A fake provider whose results report prompt-cache use: the first request of a prefix
    in a batch writes it, the later ones read it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    async def results(self, handle: BatchHandle) -> AsyncIterator[Outcome]:
        seen: set[str] = set()
        for item in self.batches[handle.batch_id]["items"]:
            system = json.dumps(item.body.get("system") or item.body["messages"][0])
            tokens = len(system) // 4
            read = tokens if system in seen else 0
            seen.add(system)
            usage = Usage(
                input_tokens=tokens + 10,
                output_tokens=20,
                cached_tokens=read,
                cache_write_tokens=tokens - read if self.name == "anthropic" else 0,
            )
            yield Outcome(item.custom_id, OutcomeKind.SUCCEEDED, body={"ok": True}, usage=usage)


def body(provider: str, policy: str, question: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {
            "model": MODEL[provider],
            "max_tokens": 20,
            "system": policy,
            "messages": [{"role": "user", "content": question}],
        }
    return {
        "model": MODEL[provider],
        "max_tokens": 20,
        "messages": [{"role": "system", "content": policy}, {"role": "user", "content": question}],
    }


def entry(
    i: int,
    policy: str = "a",
    provider: str = "anthropic",
    tenant: str | None = None,
    deadline: int | None = None,
) -> PendingEntry:
    request = {
        "request_id": f"req-{i}",
        "provider": provider,
        "model": MODEL[provider],
        "endpoint": ENDPOINT[provider],
        "body": json.dumps(body(provider, POLICIES[policy], f"question {i}")),
        "metadata": {"tenant": tenant} if tenant else {},
        "deadline": deadline,
        "reply_topic": None,
        "attempt": 1,
        "created_at": 1_000_000,
    }
    return PendingEntry.of_request(request, ("inference.deferred", 0, i))


class Harness:
    def __init__(
        self, provider: str = "anthropic", budgets: dict | None = None, **cost: Any
    ) -> None:
        batching = BatchingSettings(
            max_requests=4,
            min_batch=1,
            max_wait_s=5,
            max_linger_s=20,
            expected_turnaround_s=60,
            deadline_margin_s=10,
            max_attempts=2,
        )
        self.settings = Settings(
            batching=batching, cost=CostSettings(**cost), poll_initial_s=1, poll_max_s=4
        )
        self.clock = Clock()
        self.provider = CachingProvider(provider)
        self.out = FakeOutputs()
        self.pending: dict = {}
        self.batches: dict = {}
        self.budgets: dict = {} if budgets is None else budgets
        self.lane = self.new_lane()
        self.ledger = Ledger(self.pending, self.batches)

    def new_lane(self) -> DeferredLane:
        async def flush() -> None:
            return None

        return DeferredLane(
            self.settings,
            {self.provider.name: self.provider},
            self.out,
            PRICES,
            self.pending,
            self.batches,
            flush=flush,
            clock=self.clock,
            budgets=self.budgets,
        )

    async def feed(self, *entries: PendingEntry) -> None:
        for e in entries:
            await self.lane.on_request(e, 0)

    async def tick(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        for _ in range(100):
            if not await self.lane.on_tick(0):
                return
        raise AssertionError("a batch stayed busy for 100 ticks in a row")

    def submitted(self) -> list[list[dict[str, Any]]]:
        """The bodies of every provider batch, in submission order."""
        return [[item.body for item in b["items"]] for b in self.provider.batches.values()]

    def phases(self) -> list[str]:
        return sorted(b.phase.value for b in self.ledger.all_batches())


def policy_of(b: dict[str, Any]) -> str:
    system = b.get("system") or b["messages"][0]["content"]
    text = system if isinstance(system, str) else system[0]["text"]
    return text.split(".")[0].removeprefix("Support policy ")


async def test_a_closing_queue_puts_shared_prefixes_into_the_same_batches() -> None:
    h = Harness()
    order = "abcabcabca"  # arrival interleaves three system prompts
    await h.feed(*[entry(i, p) for i, p in enumerate(order)])
    await h.tick(6)
    batches = [[policy_of(b) for b in batch] for batch in h.submitted()]
    assert batches == [["a", "a", "a", "a"], ["b", "b", "b", "c"], ["c", "c"]]
    off = Harness(cache_aware_batching=False)
    await off.feed(*[entry(i, p) for i, p in enumerate(order)])
    await off.tick(6)
    assert [[policy_of(b) for b in batch] for batch in off.submitted()] == [
        list("abca"),
        list("bcab"),
        list("ca"),
    ]


async def test_anthropic_requests_sharing_a_prefix_get_one_breakpoint_and_nothing_else_changes() -> (
    None
):
    h = Harness()
    await h.feed(entry(0, "a"), entry(1, "a"), entry(2, "b"))
    await h.tick(6)
    [sent] = h.submitted()
    marked = [b for b in sent if json.dumps(b).count("cache_control") == 1]
    assert [policy_of(b) for b in marked] == [
        "a",
        "a",
    ]  # b's prefix is not shared: no write premium
    for i, b in enumerate(marked):
        assert b["system"] == [
            {"type": "text", "text": POLICIES["a"], "cache_control": {"type": "ephemeral"}}
        ]
        assert {**b, "system": POLICIES["a"]} == body("anthropic", POLICIES["a"], f"question {i}")
    assert sent[2] == body("anthropic", POLICIES["b"], "question 2")
    stored = [json.loads(e.request["body"]) for e in h.ledger.entries() if e.request]
    assert all(
        "cache_control" not in json.dumps(s) for s in stored
    )  # the caller's request is kept as sent
    off = Harness(anthropic_cache_breakpoints=False)
    await off.feed(entry(0, "a"), entry(1, "a"))
    await off.tick(6)
    assert "cache_control" not in json.dumps(off.submitted())


async def test_openai_requests_are_never_rewritten() -> None:
    h = Harness("openai")
    await h.feed(entry(0, "a", "openai"), entry(1, "a", "openai"))
    await h.tick(6)
    assert h.submitted() == [
        [body("openai", POLICIES["a"], "question 0"), body("openai", POLICIES["a"], "question 1")]
    ]


async def test_a_primer_batch_goes_first_and_its_prefix_waits_for_it_to_end() -> None:
    h = Harness(cache_primer=True, primer_min_saving_usd=0.0)
    await h.feed(*[entry(i, "a") for i in range(3)], entry(3, "b"))
    await h.tick(6)
    # The primer holds a's first request; b is alone (nothing to prime) and goes at once.
    assert [[policy_of(b) for b in batch] for batch in h.submitted()] == [["a"], ["b"]]
    assert h.phases() == ["INTENT", "SUBMITTED", "SUBMITTED"]
    waiting = [b for b in h.ledger.all_batches() if b.phase is BatchPhase.INTENT][0]
    primer = [b for b in h.ledger.all_batches() if b.primer][0]
    assert waiting.waits_for == [primer.batch_id] and waiting.count == 2
    await h.tick(30)
    assert len(h.submitted()) == 2  # still waiting: the primer has not ended
    h.provider.finish_all()
    await h.tick(5)
    await h.tick(1)
    assert [[policy_of(b) for b in batch] for batch in h.submitted()] == [["a"], ["b"], ["a", "a"]]
    # Primer and followers carry the same breakpoint, so the followers read what it wrote.
    assert all("cache_control" in json.dumps(b) for b in h.submitted()[0] + h.submitted()[2])
    assert "cache_control" not in json.dumps(h.submitted()[1])
    # The prefix is warm now: the next close needs no primer.
    await h.feed(entry(10, "a"), entry(11, "a"))
    await h.tick(6)
    assert [len(batch) for batch in h.submitted()] == [1, 1, 2, 2]


async def test_a_primer_is_skipped_when_a_deadline_cannot_wait_for_it() -> None:
    h = Harness(cache_primer=True, primer_min_saving_usd=0.0)
    await h.feed(entry(0, "a"), entry(1, "a", deadline=h.clock.now + 100_000))
    await h.tick(6)
    assert [len(batch) for batch in h.submitted()] == [2]


async def test_batches_wait_in_intent_until_their_tokens_fit_the_limit() -> None:
    one = len(json.dumps(body("openai", POLICIES["a"], "question 10")).encode()) // 3 + 9
    h = Harness("openai", enqueued_token_limits={"openai/gpt-5-mini": 2 * one + 5})
    await h.feed(
        *[entry(i, "a", "openai") for i in range(10, 16)]
    )  # 6 requests: three batches of 2
    await h.tick(6)
    assert [len(b) for b in h.submitted()] == [2]
    assert h.phases() == ["INTENT", "INTENT", "SUBMITTED"]
    h.provider.finish_all()
    await h.tick(5)
    # The oldest waiting batch goes first.
    assert [
        [m["content"] for b in batch for m in b["messages"][1:]] for batch in h.submitted()
    ] == [["question 10", "question 11"], ["question 12", "question 13"]]
    h.provider.finish_all()
    await h.tick(5)
    await h.tick(5)
    assert [len(b) for b in h.submitted()] == [2, 2, 2]
    h.provider.finish_all()
    await h.tick(5)
    assert sorted(r["request_id"] for r in h.out.results) == [f"req-{i}" for i in range(10, 16)]


async def test_over_budget_requests_wait_until_the_reservation_settles() -> None:
    h = Harness(tenant_daily_budget_usd=0.004)
    # Each request reserves about $0.0008 (its input written to the cache, 20 output tokens).
    await h.feed(*[entry(i, "a", tenant="acme") for i in range(8)], entry(8, "a", tenant="globex"))
    await h.tick(6)
    first = sum(len(b) for b in h.submitted())
    assert 1 <= first < 8
    queued = {e.request_id for e in h.ledger.entries() if e.state is EntryState.QUEUED}
    assert queued and "req-8" not in queued  # globex has its own budget
    assert not h.out.failures
    h.provider.finish_all()
    await h.tick(5)
    await h.tick(6)  # settled below the reservation: room for more
    assert sum(len(b) for b in h.submitted()) > first
    [day] = {day for day, _ in h.lane.costs.budgets.book().days}
    acme = h.lane.costs.budgets.book().spend_of(day, "tenant:acme")
    assert 0 < acme.spent <= 0.004


async def test_over_budget_requests_are_dead_lettered_when_so_configured() -> None:
    h = Harness(daily_budget_usd=0.002, over_budget="deadletter")
    await h.feed(*[entry(i, "a") for i in range(6)])
    await h.tick(6)
    refused = [f for f in h.out.failures if f["error_class"] == "budget_exceeded"]
    assert refused and len(refused) + sum(len(b) for b in h.submitted()) == 6


async def test_the_budget_survives_a_restart_through_its_table() -> None:
    h = Harness(daily_budget_usd=0.0025)
    await h.feed(*[entry(i, "a") for i in range(3)])
    await h.tick(6)
    before = sum(len(b) for b in h.submitted())
    h.lane = h.new_lane()  # a restarted worker: same tables, nothing in memory
    await h.feed(*[entry(i, "a") for i in range(3, 6)])
    await h.tick(6)
    assert sum(len(b) for b in h.submitted()) == before  # the reservation is still there
    assert any(e.state is EntryState.QUEUED for e in h.ledger.entries())


async def test_results_carry_tier_cache_use_and_add_up_to_the_report() -> None:
    h = Harness()
    await h.feed(*[entry(i, "abc"[i % 3]) for i in range(9)])
    await h.tick(6)
    h.provider.finish_all()
    await h.tick(5)
    results = h.out.results
    assert len(results) == 9
    for r in results:
        assert r["service_tier"] == "batch" and r["lane"] == "batch"
        usage = r["usage"]
        assert usage["cache_write_tokens"] + usage["cached_tokens"] > 0
        fresh = PRICES.costs(
            "anthropic",
            MODEL["anthropic"],
            Usage(usage["input_tokens"], usage["output_tokens"]),
            "batch",
        ).cost_usd
        assert r["cache_savings_usd"] == pytest.approx(fresh - r["cost_usd"])
        if usage["cached_tokens"]:
            assert r["cost_usd"] < fresh  # a cache read never costs the full input price
    report = cost_report(results)
    assert report.total.cost_usd == pytest.approx(sum(r["cost_usd"] for r in results))
    assert report.total.realtime_cost_usd == pytest.approx(
        sum(r["realtime_cost_usd"] for r in results)
    )
    savings = report.total.savings
    assert savings.cache_usd == pytest.approx(sum(r["cache_savings_usd"] for r in results))
    assert savings.total_usd == pytest.approx(report.total.saving_usd)
    assert savings.flex_usd == 0 and savings.other_usd == pytest.approx(0)


async def test_escalated_requests_are_marked_for_the_realtime_lane() -> None:
    h = Harness()
    await h.feed(entry(0, "a", deadline=h.clock.now + 15_000))
    await h.tick(6)
    [escalated] = h.out.escalated
    assert escalated["metadata"][ESCALATED_KEY] == "true"
