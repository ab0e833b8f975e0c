"""The realtime lane against fakes: results, retries with backoff, failures by class."""

from __future__ import annotations

import asyncio

import pytest

from connector.config import BatchingSettings, Settings
from connector.lanes.outputs import TooLarge
from connector.lanes.realtime import RealtimeLane, RecentIds
from connector.pricing import PriceTable
from connector.providers.base import BatchItem, Outcome, OutcomeKind, Usage
from tests.lanes.fakes import Clock, FakeOutputs, FakeProvider
from tests.lanes.test_intake import request


class ScriptedProvider(FakeProvider):
    """Answers each synchronous call with the next outcome kind of a script."""

    def __init__(self, *kinds: OutcomeKind, retry_after: float | None = None) -> None:
        super().__init__()
        self.script = list(kinds)
        self.retry_after = retry_after
        self.calls = 0

    async def complete(self, item: BatchItem) -> Outcome:
        self.calls += 1
        kind = self.script.pop(0) if self.script else OutcomeKind.SUCCEEDED
        if kind is OutcomeKind.SUCCEEDED:
            return Outcome(item.custom_id, kind, body={"ok": True}, usage=Usage(100, 10))
        return Outcome(
            item.custom_id,
            kind,
            error_code=f"code_{kind.value}",
            error_message="nope",
            retry_after=self.retry_after,
        )


def lane(provider, out=None, attempts=3):
    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)

    settings = Settings(batching=BatchingSettings(max_attempts=attempts))
    lane = RealtimeLane(
        settings,
        {"openai": provider},
        out or FakeOutputs(),
        PriceTable.load(),
        clock=Clock(),
        sleep=sleep,
    )
    return lane, sleeps


async def test_a_success_is_a_realtime_result_at_the_standard_price():
    out = FakeOutputs()
    rt, _ = lane(ScriptedProvider(), out)
    await rt.handle(request(), ("inference.realtime", 0, 1))
    (result,) = out.results
    assert result["lane"] == "realtime" and result["request_id"] == "r-1"
    assert result["cost_usd"] == pytest.approx(result["realtime_cost_usd"])


async def test_retryable_failures_are_retried_honouring_retry_after_then_succeed():
    out = FakeOutputs()
    provider = ScriptedProvider(OutcomeKind.RETRYABLE, OutcomeKind.RETRYABLE, retry_after=7.0)
    rt, sleeps = lane(provider, out)
    await rt.handle(request(), None)
    assert provider.calls == 3 and sleeps == [7.0, 7.0] and len(out.results) == 1


async def test_attempts_run_out_into_a_retries_exhausted_dead_letter_with_the_source():
    out = FakeOutputs()
    rt, _ = lane(ScriptedProvider(*[OutcomeKind.RETRYABLE] * 5), out, attempts=2)
    await rt.handle(request(), ("inference.realtime", 3, 9))
    (failure,) = out.failures
    assert (
        failure["error_class"] == "retries_exhausted" and failure["error_code"] == "code_retryable"
    )
    assert (failure["source_topic"], failure["source_partition"], failure["source_offset"]) == (
        "inference.realtime",
        3,
        9,
    )


async def test_a_permanent_failure_is_provider_rejected_at_once():
    out = FakeOutputs()
    provider = ScriptedProvider(OutcomeKind.PERMANENT)
    rt, _ = lane(provider, out)
    await rt.handle(request(), None)
    assert provider.calls == 1 and [f["error_class"] for f in out.failures] == ["provider_rejected"]


async def test_a_result_too_large_for_its_topic_becomes_an_oversize_dead_letter():
    out = FakeOutputs()

    async def too_large(record, reply_topic=None):
        raise TooLarge("inference.results", 5_000_000, 4_000_000)

    out.result = too_large
    rt, _ = lane(ScriptedProvider(), out)
    await rt.handle(request(), None)
    assert [f["error_class"] for f in out.failures] == ["oversize"]


async def test_an_unacknowledged_result_is_sent_again_not_turned_into_a_dead_letter(monkeypatch):
    from connector.lanes import outputs

    monkeypatch.setattr(outputs, "RESEND_INITIAL_S", 0.001)
    out = FakeOutputs()
    original = out.result
    refusals = {"left": 2}

    async def broker_refuses_twice(record, reply_topic=None):
        if refusals["left"]:
            refusals["left"] -= 1
            future = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("broker away"))
            return future
        return await original(record, reply_topic)

    out.result = broker_refuses_twice
    rt, _ = lane(ScriptedProvider(), out)
    await rt.handle(request(), None)
    assert len(out.results) == 1 and not out.failures


async def test_the_same_request_id_again_is_a_replay_and_gets_no_second_answer():
    provider = ScriptedProvider()
    out = FakeOutputs()
    rt, _ = lane(provider, out)
    await rt.handle(request(body='{"messages": [{"role": "user", "content": "FIRST"}]}'), None)
    await rt.handle(request(body='{"messages": [{"role": "user", "content": "SECOND"}]}'), None)
    assert provider.calls == 1 and len(out.results) == 1
    await rt.handle(request(attempt=2), None)  # a higher attempt is new work
    replay = request(attempt=2, metadata={"batchbridge.replay_of": "dl-1"})
    await rt.handle(replay, None)  # so is the replay of a dead letter
    await rt.handle(replay, None)
    assert provider.calls == 3 and len(out.results) == 3


def test_recent_ids_forget_after_the_window_and_past_their_bound():
    recent = RecentIds(window_ms=1000, max_ids=3)
    assert not recent.repeats(request(request_id="a"), now=0)
    assert recent.repeats(request(request_id="a"), now=999)
    assert not recent.repeats(request(request_id="a"), now=1000)  # the window has passed
    for rid in "bcd":
        assert not recent.repeats(request(request_id=rid), now=1500)
    assert len(recent) == 3
    assert not recent.repeats(request(request_id="a"), now=1600)  # evicted as the oldest
    assert recent.repeats(request(request_id="d"), now=1600)
