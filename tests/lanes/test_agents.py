"""The agents' bodies against fakes: intake bundles and rejections, resends, back-pressure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from connector.lanes import agents, outputs
from connector.lanes.agents import InputThrottle, Intake, WorkLoop, work_partition
from connector.lanes.ledger import WorkEvent
from connector.lanes.outputs import deliver_all
from connector.model import BatchKey
from connector.schemas import REQUEST
from connector.serde import AvroCodec
from tests.lanes.fakes import FakeOutputs, delivered
from tests.lanes.test_intake import request

TOPIC = "inference.deferred"


class FakeConsumer:
    def __init__(self, assigned):
        self.assigned = set(assigned)
        self._paused_partitions = set()

    def assignment(self):
        return set(self.assigned)

    def pause_partitions(self, tps):
        self._paused_partitions |= set(tps)

    def resume_partitions(self, tps):
        self._paused_partitions -= set(tps)


class TP(tuple):
    @property
    def topic(self):
        return self[0]

    @property
    def partition(self):
        return self[1]


class FakeThread:
    """Faust's consumer thread: runs calls against the aiokafka consumer."""

    def __init__(self):
        self.aio = SimpleNamespace(paused=set())
        self.aio.pause = lambda *tps: self.aio.paused.update(tps)
        self.aio.resume = lambda *tps: self.aio.paused.difference_update(tps)

    def _ensure_consumer(self):
        return self.aio

    async def call_thread(self, fun, *args):
        return await fun(*args)


def throttle(room, assigned=(), paused=()):
    consumer = FakeConsumer(TP(a) for a in assigned)
    consumer._paused_partitions = {TP(p) for p in paused}
    consumer._thread = FakeThread()
    app = SimpleNamespace(rebalancing=False, in_recovery=False, consumer=consumer)
    return InputThrottle(app, TOPIC, lambda: room[0], frozenset({"work"})), app, consumer


async def test_a_full_worker_pauses_its_input_partitions_in_aiokafka_and_resumes_them():
    room = [False]
    t, _, consumer = throttle(room, assigned=((TOPIC, 0), (TOPIC, 1), ("other", 0)))
    await t.check()
    assert {(tp.topic, tp.partition) for tp in consumer._thread.aio.paused} == {
        (TOPIC, 0),
        (TOPIC, 1),
    }
    assert not consumer._paused_partitions  # Faust's own pause is never used for this
    room[0] = True
    await t.check()
    assert not consumer._thread.aio.paused


async def test_the_throttle_keeps_out_of_rebalances():
    t, app, consumer = throttle([False], assigned=((TOPIC, 0),))
    app.rebalancing = True
    await t.check()
    assert not consumer._thread.aio.paused


async def test_stream_partitions_faust_left_paused_are_resumed_after_two_checks_changelogs_never():
    t, _, consumer = throttle([True], paused=((TOPIC, 0), ("work", 1), ("bb-pending-changelog", 1)))
    await t.check()
    assert len(consumer._paused_partitions) == 3  # could be a passing state: wait one check
    await t.check()
    assert consumer._paused_partitions == {TP(("bb-pending-changelog", 1))}


def test_work_partitions_are_stable_and_spread():
    keys = [BatchKey("openai", f"m-{i}", "/v1/chat/completions") for i in range(200)]
    first = [work_partition(k, 8) for k in keys]
    assert first == [work_partition(k, 8) for k in keys]
    assert len(set(first)) == 8


class FakeWork:
    def __init__(self, fail_first=0):
        self.sent = []
        self.fail_first = fail_first

    async def send(self, *, key=None, value=None, partition=None):
        if self.fail_first:
            self.fail_first -= 1
            future = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("broker away"))
            return future
        self.sent.append((partition, value))
        return delivered()


def event(value, offset=0):
    return SimpleNamespace(
        value=value, message=SimpleNamespace(topic=TOPIC, partition=0, offset=offset)
    )


def intake(work, limit=1_000_000):
    return Intake(
        AvroCodec(),
        FakeOutputs(),
        None,
        None,
        work,
        partitions=4,
        reply_allowlist=frozenset(),
        max_body={},
        endpoints={"openai": frozenset({"/v1/chat/completions"})},
        shards_per_key=1,
        work_limit=limit,
    )


async def test_intake_bundles_valid_requests_per_work_partition_and_dead_letters_the_rest(
    monkeypatch,
):
    monkeypatch.setattr(outputs, "RESEND_INITIAL_S", 0.001)
    codec = AvroCodec()
    work = FakeWork(fail_first=1)  # the first forward fails and is sent again
    i = intake(work)
    events = [
        event(codec.encode(REQUEST, request(request_id=f"r-{n}"), TOPIC), n) for n in range(5)
    ]
    events.append(event(b"\x00garbage", 5))
    await i.forward(events)
    assert [f["error_class"] for f in i.out.failures] == ["decode_error"]
    entries = [e for _, value in work.sent for e in WorkEvent.from_json(value).entries]
    assert sorted(e.request_id for e in entries) == [f"r-{n}" for n in range(5)]
    assert len(work.sent) == 1  # one key, one partition, one bundle


async def test_intake_refuses_a_request_that_does_not_fit_the_state_as_oversize():
    codec = AvroCodec()
    i = intake(FakeWork(), limit=100)
    await i.forward([event(codec.encode(REQUEST, request(), TOPIC))])
    assert [f["error_class"] for f in i.out.failures] == ["oversize"]


async def test_deliver_all_gives_up_on_nothing(monkeypatch):
    monkeypatch.setattr(outputs, "RESEND_INITIAL_S", 0.001)
    work = FakeWork(fail_first=3)
    await deliver_all([lambda: work.send(value=1)], "records")
    assert work.sent == [(None, 1)]


async def test_the_work_loop_asks_for_another_tick_while_a_batch_is_busy_and_hands_on_bundles():
    nudged, bundles = [], []

    class Lane:
        async def on_tick(self, p):
            return p == 1

        async def on_requests(self, entries, p):
            bundles.append((list(entries), p))

    async def nudge(p):
        nudged.append(p)

    loop = WorkLoop(Lane(), nudge)
    await loop.handle(WorkEvent(), 0)
    await loop.handle(WorkEvent(), 1)
    assert nudged == [1]
    from tests.lanes.test_deferred_lane import entry

    await loop.handle(WorkEvent((entry(1), entry(2))), 0)
    assert bundles == [([entry(1), entry(2)], 0)]


@pytest.mark.parametrize("size", [10, 300])
def test_bundles_stay_within_the_limit(size):
    from tests.lanes.test_deferred_lane import entry

    entries = [(entry(i), size) for i in range(20)]
    chunks = agents._chunks(entries, 1000)
    assert [e for c in chunks for e in c] == [e for e, _ in entries]
    assert all(len(c) * (size + 2) <= 1000 or len(c) == 1 for c in chunks)


async def test_a_bundle_whose_dead_letters_cannot_be_delivered_is_tried_again_then_left_unfinished(
    monkeypatch,
):
    from tests.lanes.test_deferred_lane import entry

    monkeypatch.setattr(agents, "WORK_RETRY_S", 0.001)
    admitted = []

    class Lane:
        fails = 2

        async def on_requests(self, entries, p):
            for e in entries:
                if e == entry(1) and Lane.fails:
                    Lane.fails -= 1  # its dead letter could not be delivered
                    raise DeliveryError("broker unreachable")
                admitted.append(e.request_id)

    class DeliveryError(Exception):
        pass

    async def nudge(p):
        pass

    bundle = WorkEvent((entry(0), entry(1), entry(2))).to_json()
    loop = WorkLoop(Lane(), nudge)
    # Two failed attempts, then every request of the bundle is admitted: the event is done.
    assert await loop.process(0, bundle, message=None) is True
    assert entry(2).request_id in admitted and entry(1).request_id in admitted

    Lane.fails = 10
    assert await loop.process(0, bundle, message=None) is False  # stays unacknowledged

    # A partition that moved to another worker is not retried here.
    Lane.fails = 10
    moved = WorkLoop(Lane(), nudge, is_current=lambda message: False)
    assert await moved.process(0, bundle, message=None) is False
    # A tick that fails is done: the next tick does its work.
    assert await moved.process(0, WorkEvent().to_json(), message=None) is True


async def test_a_busy_partition_has_one_follow_up_tick_on_its_way_however_many_ticks_come():
    nudged = []

    class Busy:
        async def on_tick(self, p):
            return True

    async def nudge(p):
        nudged.append(p)

    loop = WorkLoop(Busy(), nudge)
    await loop.handle(WorkEvent(), 0)  # a timer tick starts the chain
    await loop.handle(WorkEvent(), 0)  # more timer ticks during the emission start none
    await loop.handle(WorkEvent(), 0)
    assert nudged == [0]
    await loop.handle(WorkEvent(follow_up=True), 0)  # the follow-up came back: the next one
    assert nudged == [0, 0]
    loop.reset()  # a rebalance: the follow-up on its way may never come back here
    await loop.handle(WorkEvent(), 0)
    assert nudged == [0, 0, 0]
