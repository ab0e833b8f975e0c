"""Invariants 1 and 2 of the deferred lane under random interleavings (hypothesis).

Requests arrive (some replayed), ticks pass, batches end in any state, outcomes are mixed,
submit responses get lost and the worker restarts from its tables. Whatever happens, once
the provider settles every request has exactly one final outcome, and no tag was ever
submitted twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from connector.lanes.ledger import PendingEntry
from connector.providers.base import BatchState, OutcomeKind
from tests.lanes.test_deferred_lane import Harness, entry

TEXTS = ["ok", "ok", "ok", "flaky", "bad"]
KINDS = {"flaky": OutcomeKind.RETRYABLE, "bad": OutcomeKind.PERMANENT}


class DeferredLaneMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.h = Harness(max_requests=4, min_batch=2, max_wait_s=3, max_linger_s=6, max_attempts=2)
        self.h.provider.kinds = dict(KINDS)
        self.sent: dict[str, dict] = {}
        self.next_id = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    @rule(text=st.sampled_from(TEXTS), count=st.integers(1, 3), bundled=st.booleans())
    def arrive(self, text, count, bundled):
        bundle = []
        for _ in range(count):
            e = entry(self.next_id, text=f"{text}", rid=f"r{self.next_id}")
            self.next_id += 1
            self.sent[e.request_id] = e
            bundle.append(e)
        if bundled:  # one work event carrying them all, a replay included
            self.run(self.h.lane.on_requests([*bundle, bundle[0]], 0))
        else:
            for e in bundle:
                self.run(self.h.lane.on_request(e, 0))

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def replay(self, data):
        rid = data.draw(st.sampled_from(sorted(self.sent)))
        self.run(self.h.lane.on_request(self.sent[rid], 0))

    def _feed_retries(self):
        while self.h.out.retries:
            req = self.h.out.retries.pop(0)
            e = PendingEntry.of_request(req, ("inference.deferred", 0, 0))
            self.run(self.h.lane.on_request(e, 0))

    @rule(seconds=st.sampled_from([0.5, 2, 5]))
    def tick(self, seconds):
        self.run(self.h.tick(seconds))
        self._feed_retries()

    @rule(
        state=st.sampled_from(
            [
                BatchState.ENDED,
                BatchState.ENDED,
                BatchState.EXPIRED,
                BatchState.CANCELLED,
                BatchState.FAILED,
            ]
        )
    )
    def provider_finishes(self, state):
        self.h.provider.final_state = state
        for batch in self.h.provider.batches.values():
            if batch["state"] is BatchState.RUNNING:
                batch["state"] = state

    @rule()
    def lose_next_submit_response(self):
        self.h.provider.lose_submit_response = True

    @rule()
    def restart(self):
        self.h.lane = self.h.new_lane()

    @invariant()
    def never_two_provider_batches_for_one_tag(self):
        tags = Counter(b["tag"] for b in self.h.provider.batches.values())
        assert all(n == 1 for n in tags.values()), tags

    @invariant()
    def never_two_outcomes_for_one_request(self):
        ids = [r["request_id"] for r in self.h.out.results] + [
            f["request_id"] for f in self.h.out.failures
        ]
        assert len(ids) == len(set(ids)), Counter(ids).most_common(3)

    def teardown_check(self):
        self.h.provider.lose_submit_response = False
        self.h.provider.final_state = BatchState.ENDED
        for _ in range(60):
            for batch in self.h.provider.batches.values():
                if batch["state"] is BatchState.RUNNING:
                    batch["state"] = BatchState.ENDED
            self.run(self.h.tick(3))
            self._feed_retries()
        results = {r["request_id"] for r in self.h.out.results}
        failures = {f["request_id"] for f in self.h.out.failures}
        assert results | failures == set(self.sent)
        assert not results & failures
        assert all(self.sent[rid].request["body"] == '{"text": "ok"}' for rid in results - failures)


class CompletingMachine(DeferredLaneMachine):
    def teardown(self) -> None:
        try:
            self.teardown_check()
        finally:
            super().teardown()


TestDeferredLaneInvariants = CompletingMachine.TestCase
TestDeferredLaneInvariants.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
