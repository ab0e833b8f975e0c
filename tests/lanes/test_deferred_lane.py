"""The deferred lane's state machine against in-memory tables and a fake provider.

The same code runs inside the Faust agent; here every edge is a fake, so every path is
fast and deterministic. The broker-backed tests live in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.config import BatchingSettings, Settings
from connector.lanes import batches
from connector.lanes.deferred import DeferredLane
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.model import BatchKey
from connector.pricing import PriceTable
from connector.providers.base import BatchState, OutcomeKind
from tests.lanes.fakes import Clock, FakeOutputs, FakeProvider

KEY = "openai|gpt-4o-mini|/v1/chat/completions"


def request(
    i: int,
    *,
    attempt: int = 1,
    deadline: int | None = None,
    text: str | None = None,
    rid: str | None = None,
):
    body = json.dumps({"text": text or f"t{i}"})
    return {
        "request_id": rid or f"req-{i}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "body": body,
        "metadata": {},
        "deadline": deadline,
        "reply_topic": None,
        "attempt": attempt,
        "created_at": 1_000_000,
    }


def entry(i: int, **kw) -> PendingEntry:
    return PendingEntry.of_request(request(i, **kw), ("inference.deferred", 0, i))


class Harness:
    def __init__(self, **batching):
        cfg = dict(
            max_requests=10,
            min_batch=3,
            max_wait_s=5,
            max_linger_s=20,
            expected_turnaround_s=60,
            deadline_margin_s=10,
            max_attempts=2,
        )
        cfg.update(batching)
        self.settings = Settings(
            batching=BatchingSettings(**cfg), poll_initial_s=1, poll_max_s=4, dedupe_window_s=100
        )
        self.clock = Clock()
        self.provider = FakeProvider()
        self.out = FakeOutputs()
        self.pending: dict = {}
        self.batches: dict = {}
        self.flushes = 0
        self.lane = self.new_lane()
        self.ledger = Ledger(self.pending, self.batches)

    def records(self) -> list[BatchRecord]:
        return list(self.ledger.all_batches())

    def reasons(self) -> list[str]:
        return [b.close_reason for b in self.records()]

    def new_lane(self) -> DeferredLane:
        async def flush():
            self.flushes += 1

        return DeferredLane(
            self.settings,
            {"openai": self.provider},
            self.out,
            PriceTable.load(),
            self.pending,
            self.batches,
            flush=flush,
            clock=self.clock,
        )

    async def feed(self, *entries, p=0):
        for e in entries:
            await self.lane.on_request(e, p)

    async def tick(self, seconds=0.0, p=0):
        """One timer tick, and the immediate follow-up ticks the work loop sends while a batch is busy."""
        self.clock.advance(seconds)
        for _ in range(100):
            if not await self.lane.on_tick(p):
                return
        raise AssertionError("a batch stayed busy for 100 ticks in a row")

    def outcome_ids(self):
        return sorted(
            [r["request_id"] for r in self.out.results]
            + [f["request_id"] for f in self.out.failures]
        )


async def test_count_close_submit_poll_emit_end_to_end():
    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    assert [b.phase for b in h.records()] == [BatchPhase.INTENT]
    await h.tick()
    assert h.provider.submits == 1 and h.flushes >= 1
    h.provider.finish_all()
    await h.tick(5)
    assert sorted(r["request_id"] for r in h.out.results) == sorted(f"req-{i}" for i in range(10))
    assert all(r["lane"] == "batch" and r["provider_batch_id"] == "batch_1" for r in h.out.results)
    assert all(r["cost_usd"] == pytest.approx(r["realtime_cost_usd"] / 2) for r in h.out.results)
    assert all(e.state is EntryState.DONE for e in h.ledger.entries())
    assert [e["state"] for e in h.out.events] == ["SUBMITTED", "ENDED", "EMITTED"]
    assert h.records()[0].phase is BatchPhase.EMITTED


BUNDLES = st.lists(
    st.tuples(st.integers(0, 13), st.integers(1, 2), st.booleans()), min_size=1, max_size=30
)


@settings(max_examples=150, deadline=None)
@given(arrivals=BUNDLES, done_first=st.lists(st.integers(0, 13), max_size=4))
def test_a_bundle_is_admitted_exactly_as_its_requests_one_by_one(arrivals, done_first):
    """Replays, higher attempts and count closes inside one bundle: the same tables, batches
    and outcomes as admitting each request on its own."""

    async def run(bundled: bool) -> Harness:
        h = Harness()
        for i in done_first:  # earlier runs already done: a replay, or new work (attempt 2)
            h.pending[f"req-{i}"] = entry(i).queued(0, 0).done("result", 0).to_json()
        entries = [entry(i, attempt=a, text="x" if other else None) for i, a, other in arrivals]
        if bundled:
            await h.lane.on_requests(entries, 0)
        else:
            await h.feed(*entries)
        return h

    def seen(h: Harness) -> str:
        """Its tables, outcomes and queue, batch ids (random) numbered in creation order."""
        text = repr((h.pending, h.batches, h.out.results, h.out.failures, h.lane._part(0).queued))
        for n, batch_id in enumerate(h.batches):
            text = text.replace(batch_id, f"batch-{n}")
        return text

    assert seen(asyncio.run(run(True))) == seen(asyncio.run(run(False)))


async def test_a_request_whose_admission_fails_is_dead_lettered_and_the_bundle_goes_on(
    monkeypatch,
):
    h = Harness()
    profiled = h.lane.costs.profiled

    def broken(e):
        if e.request_id == "req-1":
            raise ValueError("cannot profile")
        return profiled(e)

    monkeypatch.setattr(h.lane.costs, "profiled", broken)
    await h.lane.on_requests([entry(0), entry(1), entry(2), entry(1)], 0)
    assert [f["request_id"] for f in h.out.failures] == ["req-1"]  # once, not per copy
    assert h.out.failures[0]["error_class"] == "internal_error"
    assert {e.request_id: e.state for e in h.ledger.entries()} == {
        "req-0": EntryState.QUEUED,
        "req-1": EntryState.DONE,
        "req-2": EntryState.QUEUED,
    }
    assert list(h.lane._part(0).queued[BatchKey.parse(KEY)]) == ["req-0", "req-2"]


async def test_a_bundle_whose_write_failed_half_way_is_queued_when_handled_again(monkeypatch):
    """The store took the entries but the changelog send raised: the bundle is handled again,
    and its requests, replays now, are rewritten and queued (not left in the table only)."""
    h = Harness()
    write = h.lane.ledger.put_entries
    calls = []

    async def half_way(entries):
        calls.append([e.request_id for e in entries])
        await write(entries)
        if len(calls) == 1:
            raise ConnectionError("changelog send failed")

    monkeypatch.setattr(h.lane.ledger, "put_entries", half_way)
    bundle = [entry(i) for i in range(3)]
    with pytest.raises(ConnectionError):
        await h.lane.on_requests(bundle, 0)
    assert not h.lane._part(0).queued  # written, not queued
    await h.lane.on_requests(bundle, 0)
    assert calls[1] == ["req-0", "req-1", "req-2"]  # rewritten
    assert list(h.lane._part(0).queued[BatchKey.parse(KEY)]) == ["req-0", "req-1", "req-2"]
    await h.lane.on_requests(bundle, 0)  # a third time: queued already, not twice
    assert h.lane._part(0).queued_bytes[BatchKey.parse(KEY)] == sum(e.size for e in bundle)
    await h.tick(21)
    h.provider.finish_all()
    await h.tick(5)
    assert h.outcome_ids() == ["req-0", "req-1", "req-2"]


async def test_a_batch_larger_than_a_member_chunk_is_closed_and_submitted_whole(monkeypatch):
    from connector.lanes import batches

    monkeypatch.setattr(batches, "MEMBER_CHUNK", 3)
    h = Harness()
    writes = []
    put = h.lane.ledger.put_entries

    async def counted(entries):
        writes.append(len(entries))
        await put(entries)

    monkeypatch.setattr(h.lane.ledger, "put_entries", counted)
    await h.feed(*[entry(i) for i in range(10)])
    assert writes[-4:] == [3, 3, 3, 1]  # the close: its members in chunks
    assert {e.state for e in h.ledger.entries()} == {EntryState.BATCHED}
    await h.tick()
    assert h.provider.submits == 1
    (submitted,) = h.provider.batches.values()
    assert len(submitted["items"]) == 10
    h.provider.finish_all()
    await h.tick(5)
    assert h.outcome_ids() == sorted(f"req-{i}" for i in range(10))


async def test_replayed_request_is_not_added_twice():
    h = Harness()
    await h.feed(entry(1), entry(1), entry(2))
    assert len(h.pending) == 2
    await h.tick(21)
    h.provider.finish_all()
    await h.tick(5)
    await h.feed(entry(1))  # replay after done: still a duplicate of attempt 1
    assert h.outcome_ids() == ["req-1", "req-2"]
    assert sum(1 for b in h.provider.batches.values() for _ in b["items"]) == 2


async def test_time_windows_wait_and_linger():
    h = Harness()
    await h.feed(entry(1), entry(2))
    await h.tick(6)
    assert not h.batches  # below min_batch, not lingered yet
    await h.tick(15)
    assert h.reasons() == ["max_linger"]
    h2 = Harness()
    await h2.feed(entry(1), entry(2), entry(3))
    await h2.tick(4)
    assert not h2.batches
    await h2.tick(1.1)
    assert h2.reasons() == ["max_wait"]


async def test_retryable_goes_back_with_next_attempt_then_dead_letters():
    h = Harness()
    h.provider.kinds = {"flaky": OutcomeKind.RETRYABLE, "bad": OutcomeKind.PERMANENT}
    await h.feed(entry(1, text="flaky"), entry(2, text="bad"), entry(3))
    await h.tick(21)
    h.provider.finish_all()
    await h.tick(2)
    assert [r["request_id"] for r in h.out.results] == ["req-3"]
    assert [f["error_class"] for f in h.out.failures] == ["provider_rejected"]
    assert [(r["request_id"], r["attempt"]) for r in h.out.retries] == [("req-1", 2)]
    retry = entry(1, attempt=2, text="flaky")
    await h.feed(retry)  # a higher attempt is not a duplicate
    await h.tick(21)
    h.provider.finish_all()
    await h.tick(2)
    last = h.out.failures[-1]
    assert (
        last["request_id"] == "req-1"
        and last["error_class"] == "retries_exhausted"
        and last["attempts"] == 2
    )
    assert last["source_topic"] == "inference.deferred"


@pytest.mark.parametrize(
    "state,error_class",
    [
        (BatchState.EXPIRED, "expired"),
        (BatchState.CANCELLED, "cancelled"),
        (BatchState.FAILED, "batch_failed"),
    ],
)
async def test_unfinished_requests_of_a_bad_batch_follow_the_retry_rules(state, error_class):
    h = Harness(max_attempts=1)
    h.provider.final_state = state
    await h.feed(*[entry(i) for i in range(4)])
    await h.tick(21)
    first = next(iter(h.provider.batches.values()))["items"][0].custom_id
    h.provider.omit = {
        item.custom_id for item in next(iter(h.provider.batches.values()))["items"]
    } - {first}
    h.provider.finish_all()
    await h.tick(2)
    if state is BatchState.FAILED:
        assert not h.out.results  # a failed batch has no results to read
        assert len(h.out.failures) == 4
    else:
        assert len(h.out.results) == 1 and len(h.out.failures) == 3
    assert {f["error_class"] for f in h.out.failures} == {error_class}
    assert h.outcome_ids() == [f"req-{i}" for i in range(4)]


async def test_a_batch_the_provider_refuses_to_create_dead_letters_as_provider_rejected():
    h = Harness(max_attempts=2)
    h.provider.refuse_submits = True
    await h.feed(*[entry(i) for i in range(3)])
    await h.tick(21)
    await h.tick(2)
    assert [(r["request_id"], r["attempt"]) for r in h.out.retries] == [
        (f"req-{i}", 2) for i in range(3)
    ]
    await h.feed(*[entry(i, attempt=2) for i in range(3)])
    await h.tick(21)
    await h.tick(2)
    assert {f["error_class"] for f in h.out.failures} == {"provider_rejected"}
    assert {f["error_code"] for f in h.out.failures} == {"NOT_FOUND"} and h.provider.submits == 0
    assert sorted(f["request_id"] for f in h.out.failures) == [f"req-{i}" for i in range(3)]


async def test_deadline_closes_early_and_escalates_when_batch_is_late():
    h = Harness()
    now = h.clock()
    await h.feed(entry(1, deadline=now + 59_000), entry(2))
    await h.tick(0)
    assert h.reasons() == ["deadline"]
    await h.tick(50)  # the batch is still running 10 s before the deadline
    assert [r["request_id"] for r in h.out.escalated] == ["req-1"]
    h.provider.finish_all()
    await h.tick(5)
    assert [r["request_id"] for r in h.out.results] == ["req-2"]  # the late batch answer is dropped


async def test_restart_mid_flight_reconciles_instead_of_resubmitting():
    h = Harness()
    h.provider.lose_submit_response = True  # the batch exists, but we never heard back
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    assert h.provider.submits == 1
    h.lane = h.new_lane()  # a new process: indexes rebuilt from the tables
    await h.tick(10)
    assert h.provider.submits == 1  # found by tag, not submitted again
    h.provider.finish_all()
    await h.tick(10)
    assert h.outcome_ids() == sorted(f"req-{i}" for i in range(10))


async def test_restart_during_emission_resumes_and_repeats_at_most_the_unacknowledged_chunk():
    h = Harness()
    h.settings.emit_chunk = 3
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.finish_all()

    class Crash(BaseException):  # not an Exception: the process dies here
        pass

    original = h.out.result

    async def crash_on_the_eighth(record, reply_topic=None):
        if len(h.out.results) == 7:
            raise Crash
        return await original(record, reply_topic)

    h.out.result = crash_on_the_eighth
    with pytest.raises(Crash):
        await h.tick(5)
    h.out.result = original
    h.lane = h.new_lane()
    await h.tick(5)
    ids = [r["request_id"] for r in h.out.results]
    assert sorted(set(ids)) == sorted(f"req-{i}" for i in range(10))
    # Two chunks of three were acknowledged and marked done before the crash: only the
    # third chunk, sent but never settled, is emitted twice.
    assert len(ids) - len(set(ids)) == 1


async def test_a_request_the_provider_lists_twice_in_one_step_gets_one_outcome():
    h = Harness()
    await h.feed(*[entry(i) for i in range(4)])
    await h.tick(21)
    h.provider.finish_all()
    listed = h.provider.results

    async def every_line_twice(handle):
        async for outcome in listed(handle):
            yield outcome
            yield outcome

    h.provider.results = every_line_twice
    await h.tick(5)
    assert h.outcome_ids() == sorted(f"req-{i}" for i in range(4))


async def test_a_step_cut_off_by_a_base_exception_reads_the_results_again(monkeypatch):
    monkeypatch.setattr(batches, "EMIT_SLICE", 2)
    h = Harness(max_requests=6)
    await h.feed(*[entry(i) for i in range(6)])
    await h.tick()
    h.provider.finish_all()
    sending = h.out.result

    class Cancelled(BaseException):  # like asyncio.CancelledError: not caught by the step
        pass

    async def cut_off_at_req_2(record, reply_topic=None):
        if record["request_id"] == "req-2":
            raise Cancelled
        return await sending(record, reply_topic)

    h.out.result = cut_off_at_req_2
    with pytest.raises(Cancelled):
        await h.tick(5)
    assert all(e.state is EntryState.BATCHED for e in h.ledger.entries())  # nothing settled
    h.out.result = sending
    await h.tick(5)
    # The outcomes the cut-off step had taken (req-3, req-2) are results, not retries.
    assert sorted(set(r["request_id"] for r in h.out.results)) == [f"req-{i}" for i in range(6)]
    assert h.out.retries == []


async def test_a_request_is_done_only_after_its_outcome_is_acknowledged():
    h = Harness()
    await h.feed(*[entry(i) for i in range(4)])
    await h.tick(21)
    h.provider.finish_all()
    original = h.out.result

    async def broker_refuses(record, reply_topic=None):
        await original(record, reply_topic)
        future = asyncio.get_running_loop().create_future()
        future.set_exception(ConnectionError("broker gone"))
        return future

    h.out.result = broker_refuses
    await h.tick(5)
    assert all(e.state is EntryState.BATCHED for e in h.ledger.entries())  # nothing marked done
    h.out.result = original
    await h.tick(5)  # the failed step backed off; the next one delivers again
    await h.tick(5)
    assert all(e.state is EntryState.DONE for e in h.ledger.entries())
    assert {r["request_id"] for r in h.out.results} == {f"req-{i}" for i in range(4)}


async def test_an_outcome_that_cannot_be_built_dead_letters_that_request_only():
    h = Harness()
    await h.feed(*[entry(i) for i in range(4)])
    await h.tick(21)
    h.provider.finish_all()
    original = h.out.result

    async def bug_for_req_2(record, reply_topic=None):
        if record["request_id"] == "req-2":
            raise KeyError("boom")
        return await original(record, reply_topic)

    h.out.result = bug_for_req_2
    await h.tick(5)
    assert sorted(r["request_id"] for r in h.out.results) == ["req-0", "req-1", "req-3"]
    assert [(f["request_id"], f["error_class"]) for f in h.out.failures] == [
        ("req-2", "internal_error")
    ]
    assert "KeyError" in h.out.failures[0]["error_message"]


async def test_a_batch_that_keeps_failing_stops_neither_others_nor_itself_forever():
    h = Harness(max_batch_failures=3, max_attempts=2)
    await h.feed(*[entry(i) for i in range(20)])  # two full batches
    await h.tick()
    h.provider.finish_all()
    bad = h.records()[0].handle.batch_id
    original = h.provider.results

    def results(handle):
        if handle.batch_id == bad:
            raise RuntimeError("parser bug")
        return original(handle)

    h.provider.results = results
    for _ in range(10):
        await h.tick(10)
    outcomes = {r["request_id"] for r in h.out.results} | {r["request_id"] for r in h.out.retries}
    assert outcomes == {f"req-{i}" for i in range(20)}
    retried = [r for r in h.out.retries]
    assert len(retried) == 10 and {r["attempt"] for r in retried} == {2}
    assert {b.phase for b in h.records()} == {BatchPhase.EMITTED}


async def test_rebalance_forgets_what_this_process_submitted_so_reconcile_runs_first():
    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    h.provider.fail_next_submits = 1
    h.lane.reset()  # partitions revoked and assigned again before the first submit
    found = []
    original = h.provider.find

    async def find(tag, **kw):
        found.append(tag)
        return await original(tag, **kw)

    h.provider.find = find
    await h.tick()
    assert found  # an intent this process created is no longer trusted to be unsent


async def test_reconcile_passes_what_the_attempt_carried_even_after_escalations():
    h = Harness()
    now = h.clock()
    await h.feed(entry(0, deadline=now + 200_000), *[entry(i) for i in range(1, 10)])
    h.provider.lose_submit_response = True
    await h.tick()
    seen = {}

    async def find(tag, *, created_after=None, expected_count=None, custom_ids=None):
        seen.update(count=expected_count, ids=custom_ids)
        return None

    h.provider.find = find
    await h.tick(195)  # req-0 is escalated, then the batch is reconciled
    assert [r["request_id"] for r in h.out.escalated] == ["req-0"]
    assert seen["count"] == 10 and len(seen["ids"]) == 10 and "req-0" in seen["ids"]


async def test_a_transient_not_found_on_poll_is_retried_before_the_batch_counts_as_lost():
    from connector.providers.exceptions import BatchNotFound

    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    original = h.provider.poll
    misses = {"left": 2}

    async def flaky_poll(handle):
        if misses["left"]:
            misses["left"] -= 1
            raise BatchNotFound("not found", provider="openai", status=404)
        return await original(handle)

    h.provider.poll = flaky_poll
    h.provider.finish_all()
    for _ in range(4):
        await h.tick(5)
    assert len(h.out.results) == 10 and not h.out.retries


async def test_submit_outage_backs_off_and_retries_with_reconcile():
    h = Harness()
    h.provider.fail_next_submits = 2
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    await h.tick(0.1)  # still backing off: no new call
    assert h.provider.submits == 0
    for _ in range(6):
        await h.tick(5)
    assert h.provider.submits == 1


async def test_done_markers_are_purged_after_the_dedupe_window():
    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.finish_all()
    await h.tick(2)
    assert len(h.pending) == 10
    await h.tick(101)
    assert not h.pending and not h.batches


async def test_a_full_worker_has_no_room_and_sends_what_it_has_queued():
    h = Harness()  # min_batch 3, max_wait 5 s: nothing would close on its own yet
    h.settings.max_pending_requests = 3
    await h.feed(entry(1), entry(2))
    assert h.lane.has_room()
    await h.feed(entry(3))
    assert not h.lane.has_room() and h.lane.live_requests() == 3
    await h.tick()
    assert h.reasons() == ["max_pending"]  # closed under pressure and submitted at once
    assert h.provider.submits == 1
    h.provider.finish_all()
    await h.tick(5)
    assert len(h.out.results) == 3 and h.lane.has_room()


async def test_webhook_poke_makes_the_next_tick_poll_at_once():
    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.finish_all()
    await h.tick(0.1)  # the first poll is not due yet
    assert not h.out.results
    assert not h.lane.poke("batch_unknown")
    assert h.lane.poke("batch_1")
    await h.tick(0.1)
    assert len(h.out.results) == 10


async def test_stuck_batch_is_cancelled_after_the_timeout_and_its_requests_retried():
    h = Harness(max_attempts=2)
    h.settings.batch_timeout_s = 30
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.omit = {
        item.custom_id for item in h.provider.batches["batch_1"]["items"]
    }  # nothing finished
    for _ in range(10):
        await h.tick(4)
    assert next(iter(h.provider.batches.values()))["state"] is BatchState.CANCELLED
    await h.tick(4)
    assert len(h.out.retries) == 10 and {r["attempt"] for r in h.out.retries} == {2}


async def test_reconcile_never_adopts_a_provider_batch_another_batch_owns():
    from connector.providers.base import BatchHandle

    h = Harness()
    await h.feed(*[entry(i) for i in range(20)])  # two full batches
    await h.tick()
    assert h.provider.submits == 2
    owned, lost = sorted(h.records(), key=lambda b: b.handle.batch_id)
    h.provider.batches.pop(lost.handle.batch_id)
    h.ledger.put_batch(
        replace(lost, phase=BatchPhase.INTENT, handle=None)
    )  # as if SUBMITTED never landed

    async def tagless_find(
        tag, **kw
    ):  # a heuristic match (Anthropic has no tags) on the wrong batch
        return BatchHandle("openai", owned.handle.batch_id, tag)

    h.provider.find = tagless_find
    h.lane = h.new_lane()
    await h.tick()
    assert h.provider.submits == 3
    assert h.ledger.batch(lost.batch_id).handle.batch_id != owned.handle.batch_id


async def test_quota_failed_batch_is_resubmitted_later_under_a_new_tag_without_using_attempts():
    h = Harness(quota_backoff_s=30, max_quota_retries=1)
    h.provider.final_state, h.provider.final_error = BatchState.FAILED, "token_limit_exceeded"
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.finish_all()
    await h.tick(2)
    batch = h.records()[0]
    assert batch.phase is BatchPhase.INTENT and batch.tag.endswith("-q1")
    await h.tick(10)
    assert h.provider.submits == 1  # still waiting for the quota to clear
    h.provider.final_state = BatchState.ENDED
    await h.tick(25)
    assert h.provider.submits == 2
    assert h.provider.batches["batch_2"]["tag"] == batch.tag
    h.provider.finish_all()
    await h.tick(5)
    assert len(h.out.results) == 10 and not h.out.retries and not h.out.failures


async def test_quota_retries_are_bounded_then_requests_follow_the_retry_rules():
    h = Harness(quota_backoff_s=1, max_quota_retries=1, max_attempts=1)
    h.provider.final_state, h.provider.final_error = BatchState.FAILED, "token_limit_exceeded"
    await h.feed(*[entry(i) for i in range(10)])
    for _ in range(8):
        await h.tick(2)
        h.provider.finish_all()
    assert h.provider.submits == 2
    assert len(h.out.failures) == 10 and {f["error_class"] for f in h.out.failures} == {
        "batch_failed"
    }
    assert {f["error_code"] for f in h.out.failures} == {"token_limit_exceeded"}


async def test_mostly_failed_batch_is_reported_as_systemic(caplog):
    from connector import metrics

    h = Harness(max_attempts=1)
    h.provider.kinds = {f"t{i}": OutcomeKind.PERMANENT for i in range(8)}
    before = metrics.SYSTEMIC_FAILURES.labels("openai")._value.get()
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    h.provider.finish_all()
    with caplog.at_level("ERROR"):
        await h.tick(2)
    assert metrics.SYSTEMIC_FAILURES.labels("openai")._value.get() == before + 1
    assert "8 of 10 requests failed" in caplog.text
    emitted = [e for e in h.out.events if e["state"] == "EMITTED"][0]
    assert (emitted["succeeded"], emitted["failed"]) == (2, 8)


async def test_shards_of_one_model_batch_separately_under_the_real_model():
    h = Harness(min_batch=1, max_wait_s=1)
    await h.feed(
        *[replace(entry(i), batch_key=BatchKey.parse(f"{KEY}|{i % 2 + 1}")) for i in range(4)]
    )
    await h.tick(2)
    assert sorted(str(b.batch_key) for b in h.records()) == [f"{KEY}|1", f"{KEY}|2"]
    assert {b.batch_key.model for b in h.records()} == {"gpt-4o-mini"}
    h.provider.finish_all()
    await h.tick(2)
    assert len(h.out.results) == 4


async def test_provider_rules_have_the_last_word_envelopes_included():
    from connector.providers.base import ProviderLimits
    from connector.providers.limits import ENVELOPE_BYTES

    h = Harness(min_batch=1, max_wait_s=1)
    body = entry(0).size
    # Three bodies fit the provider's byte limit, three bodies plus their envelopes do not.
    h.provider.limits = ProviderLimits(
        1000, 3 * body + 2 * ENVELOPE_BYTES, True, 64, r"[a-zA-Z0-9_-]{1,64}"
    )
    await h.feed(entry(1), entry(2), entry(3))
    await h.tick(2)
    assert sorted(b.count for b in h.records()) == [1, 2]
    h.provider.limits = ProviderLimits(
        1000, body + ENVELOPE_BYTES - 1, True, 64, r"[a-zA-Z0-9_-]{1,64}"
    )
    await h.feed(entry(4))
    await h.tick(2)
    assert [(f["request_id"], f["error_class"]) for f in h.out.failures] == [("req-4", "oversize")]


async def test_a_member_the_table_no_longer_holds_in_flight_is_skipped_not_fatal():
    h = Harness()
    await h.feed(*[entry(i) for i in range(10)])
    await h.tick()
    # The table says req-3 is done (e.g. emitted by an earlier owner) while the index still lists it.
    h.ledger.put_entry(h.ledger.entry("req-3").done("result", h.clock()))
    h.provider.omit = {"req-4"}  # and one request has no result line
    h.provider.finish_all()
    await h.tick(5)
    assert sorted(r["request_id"] for r in h.out.results) == sorted(
        f"req-{i}" for i in range(10) if i not in (3, 4)
    )
    assert [r["request_id"] for r in h.out.retries] == ["req-4"]
    assert h.records()[0].phase is BatchPhase.EMITTED


@pytest.mark.parametrize("retry_after,first_try_s", [(None, 60), (5.0, 5)])
async def test_a_quota_refusal_at_create_waits_for_the_quota_backoff_or_its_retry_after(
    retry_after, first_try_s
):
    from connector.providers.exceptions import QuotaExceeded

    h = Harness(quota_backoff_s=60)
    await h.feed(*[entry(i) for i in range(10)])
    original = h.provider.submit
    refusals = {"left": 1}

    async def refuse_once(tag, items):
        if refusals["left"]:
            refusals["left"] -= 1
            raise QuotaExceeded(
                "enqueued token limit",
                provider="openai",
                status=429,
                code="token_limit_exceeded",
                retry_after=retry_after,
            )
        return await original(tag, items)

    h.provider.submit = refuse_once
    await h.tick()
    await h.tick(first_try_s - 1)
    assert h.provider.submits == 0  # still waiting for the quota
    await h.tick(2)
    assert h.provider.submits == 1 and h.records()[0].phase is BatchPhase.SUBMITTED


async def test_a_replayed_dead_letter_runs_again_once_and_only_after_its_first_run_ended():
    h = Harness(min_batch=1, max_wait_s=1)
    h.provider.kinds = {"t1": OutcomeKind.PERMANENT}
    await h.feed(entry(1))
    replay = PendingEntry.of_request(
        dict(request(1), metadata={"batchbridge.replay_of": "inference.deadletter:0:7"}),
        ("inference.deferred", 0, 9),
    )
    await h.feed(replay)  # the first run is still live: the replay is ignored
    await h.tick(2)
    h.provider.finish_all()
    await h.tick(2)
    assert [f["request_id"] for f in h.out.failures] == ["req-1"]
    h.provider.kinds = {}
    await h.feed(replay, replay)  # now it runs again, once
    await h.tick(2)
    h.provider.finish_all()
    await h.tick(2)
    assert [r["request_id"] for r in h.out.results] == ["req-1"]
    assert sum(len(b["items"]) for b in h.provider.batches.values()) == 2
