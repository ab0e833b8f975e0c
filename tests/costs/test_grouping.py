"""Cache-aware closing order and primer batches, over any queue."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.config import BatchingSettings
from connector.costs.primer import plan_primer, worth_priming
from connector.costs.profile import RequestProfile
from connector.lanes.assembly import Queued, group_by_prefix, plan_closes

PREFIXES = [None, "p1", "p2", "p3"]
queues = st.lists(
    st.tuples(st.sampled_from(PREFIXES), st.none() | st.integers(min_value=0, max_value=100)),
    max_size=40,
).map(
    lambda raw: [
        Queued(
            f"r{i}",
            i,
            10,
            deadline,
            RequestProfile(prefix=prefix, prefix_tokens=2000) if prefix else None,
        )
        for i, (prefix, deadline) in enumerate(raw)
    ]
)


def prefix(q: Queued) -> str | None:
    return q.profile.prefix if q.profile else None


@given(queues)
def test_grouping_keeps_every_request_and_each_groups_order(queue: list[Queued]) -> None:
    grouped = group_by_prefix(queue)
    assert sorted(q.request_id for q in grouped) == sorted(q.request_id for q in queue)
    assert grouped[:1] == queue[:1]  # the oldest request stays first
    for p in PREFIXES[1:]:
        members = [q for q in grouped if prefix(q) == p]
        assert members == [q for q in queue if prefix(q) == p]  # arrival order inside a group
        if members:  # side by side
            start = grouped.index(members[0])
            assert grouped[start : start + len(members)] == members


@given(queues)
def test_groups_follow_the_arrival_of_their_oldest_request(queue: list[Queued]) -> None:
    grouped = group_by_prefix(queue)
    firsts = []
    for q in grouped:
        key = prefix(q) or q.request_id
        if key not in firsts:
            firsts.append(key)
    arrival = []
    for q in queue:
        key = prefix(q) or q.request_id
        if key not in arrival:
            arrival.append(key)
    assert firsts == arrival


@given(queues, st.integers(min_value=1, max_value=12))
def test_full_batches_cut_from_the_grouped_queue_hold_whole_runs(
    queue: list[Queued], cap: int
) -> None:
    """Each prefix is split over at most as many batches as its size needs, plus one."""
    cfg = BatchingSettings(
        max_requests=cap, min_batch=1, max_wait_s=1, max_linger_s=1, expected_turnaround_s=0
    )
    closes = plan_closes(
        group_by_prefix(queue), now_ms=10_000, cfg=cfg, limit_requests=10**6, limit_bytes=10**9
    )
    assert sorted(r for c in closes for r in c.request_ids) == sorted(q.request_id for q in queue)
    of = {q.request_id: prefix(q) for q in queue}
    for p in PREFIXES[1:]:
        size = sum(1 for q in queue if prefix(q) == p)
        batches = sum(1 for c in closes if any(of[r] == p for r in c.request_ids))
        assert batches <= -(-size // cap) + 1


def test_the_cost_rule() -> None:
    assert not worth_priming(1, 1.0, 0.0)  # alone: nothing to read
    assert worth_priming(11, 0.01, 0.1) and not worth_priming(10, 0.01, 0.1)


@given(
    queues,
    st.sets(st.sampled_from(PREFIXES[1:])),
    st.sets(st.sampled_from(PREFIXES[1:])),
    st.integers(0, 100),
)
def test_a_primer_holds_the_first_request_of_each_prefix_worth_it(
    queue: list[Queued], warm: set[str], unworthy: set[str], latest_start: int
) -> None:
    primer, waiting, rest = plan_primer(
        queue,
        worth=lambda profile, n: n >= 2 and profile.prefix not in unworthy,
        warm=warm,
        latest_start_ms=latest_start,
    )
    assert sorted(primer + waiting + rest) == sorted(q.request_id for q in queue)
    order = [q.request_id for q in queue]
    for part in (primer, waiting, rest):
        assert part == [r for r in order if r in part]
    by_id = {q.request_id: q for q in queue}
    primed = [prefix(by_id[r]) for r in primer]
    assert len(primed) == len(set(primed))  # one per prefix
    assert {prefix(by_id[r]) for r in waiting} <= set(primed)  # only primed prefixes wait
    assert not {prefix(by_id[r]) for r in rest} & set(primed)
    for p in primed:
        group = [q for q in queue if prefix(q) == p]
        assert p is not None and p not in warm and p not in unworthy and len(group) >= 2
        assert by_id[primer[primed.index(p)]] is group[0]
        assert all(q.deadline_ms is None or q.deadline_ms >= latest_start for q in group)
    for p in PREFIXES[1:]:
        group = [q for q in queue if prefix(q) == p]
        urgent = any(q.deadline_ms is not None and q.deadline_ms < latest_start for q in group)
        if len(group) >= 2 and p not in warm and p not in unworthy and not urgent:
            assert p in primed
