from hypothesis import given
from hypothesis import strategies as st

from connector.config import BatchingSettings
from connector.lanes.assembly import (
    BYTES,
    COUNT,
    DEADLINE,
    MAX_LINGER,
    MAX_WAIT,
    Queued,
    must_escalate,
    plan_closes,
)

CFG = BatchingSettings(
    max_requests=10,
    max_bytes=10_000,
    min_batch=3,
    max_wait_s=5,
    max_linger_s=20,
    expected_turnaround_s=60,
    deadline_margin_s=10,
)


def q(i: int, at: int = 0, size: int = 10, deadline: int | None = None) -> Queued:
    return Queued(f"r{i}", at, size, deadline)


def plan(queue, now=0, **kw):
    return plan_closes(
        queue,
        now_ms=now,
        cfg=kw.pop("cfg", CFG),
        limit_requests=kw.pop("lr", 1000),
        limit_bytes=kw.pop("lb", 10**9),
    )


def test_nothing_closes_before_any_timer():
    assert plan([q(i) for i in range(5)], now=1000) == []


def test_full_batches_close_by_count_and_rest_waits():
    closes = plan([q(i) for i in range(25)], now=0)
    assert [c.reason for c in closes] == [COUNT, COUNT]
    assert [len(c.request_ids) for c in closes] == [10, 10]
    assert closes[0].request_ids[0] == "r0" and closes[1].request_ids[0] == "r10"


def test_provider_limit_caps_the_configured_count():
    closes = plan([q(i) for i in range(7)], lr=3)
    assert [len(c.request_ids) for c in closes] == [3, 3]


def test_bytes_close_before_the_next_request_would_overflow():
    closes = plan([q(i, size=4000) for i in range(5)])
    assert [c.reason for c in closes] == [BYTES, BYTES]
    assert all(c.size <= 10_000 for c in closes)


def test_single_request_larger_than_the_byte_cap_still_forms_its_own_batch():
    closes = plan([q(0, size=50_000), q(1)], now=0)
    assert closes[0].request_ids == ("r0",) and closes[0].reason == BYTES


def test_max_wait_needs_min_batch():
    assert plan([q(0), q(1)], now=6000) == []
    closes = plan([q(0), q(1), q(2)], now=6000)
    assert [c.reason for c in closes] == [MAX_WAIT]


def test_linger_closes_small_batches_eventually():
    closes = plan([q(0, at=0), q(1, at=15_000)], now=20_000)
    assert closes[0].reason == MAX_LINGER and closes[0].request_ids == ("r0", "r1")


def test_deadline_closes_early():
    closes = plan([q(0), q(1, deadline=70_000)], now=10_000)
    assert [c.reason for c in closes] == [DEADLINE]
    assert plan([q(0), q(1, deadline=71_000)], now=10_000) == []


def test_force_closes_what_no_timer_would_close_yet():
    closes = plan_closes(
        [q(0), q(1)], now_ms=0, cfg=CFG, limit_requests=1000, limit_bytes=10**9, force="max_pending"
    )
    assert [(c.reason, c.request_ids) for c in closes] == [("max_pending", ("r0", "r1"))]
    timed = plan_closes(
        [q(0), q(1)],
        now_ms=20_000,
        cfg=CFG,
        limit_requests=1000,
        limit_bytes=10**9,
        force="max_pending",
    )
    assert [c.reason for c in timed] == [MAX_LINGER]  # a real reason wins over the forced one


def test_escalation_margin():
    assert must_escalate(100_000, 90_000, CFG)
    assert not must_escalate(100_000, 89_999, CFG)
    assert not must_escalate(None, 10**12, CFG)


@given(
    sizes=st.lists(st.integers(1, 5000), max_size=60),
    lr=st.integers(1, 20),
    now=st.integers(0, 100_000),
)
def test_every_request_in_at_most_one_batch_and_no_batch_over_a_cap(sizes, lr, now):
    queue = [q(i, at=i * 100, size=s) for i, s in enumerate(sizes)]
    closes = plan(queue, now=now, lr=lr)
    ids = [rid for c in closes for rid in c.request_ids]
    assert len(ids) == len(set(ids))
    assert ids == [x.request_id for x in queue[: len(ids)]]  # oldest first, arrival order kept
    for c in closes:
        assert len(c.request_ids) <= min(lr, CFG.max_requests)
        assert c.size <= CFG.max_bytes or len(c.request_ids) == 1
    # what stays queued is never itself a full batch
    rest = queue[len(ids) :]
    assert len(rest) < min(lr, CFG.max_requests) or not rest
