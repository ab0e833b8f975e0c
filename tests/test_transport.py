"""The connector's Faust transport: what it refuses to commit, and verified end offsets."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from connector import transport
from connector.transport import (
    Consumer,
    DrainingBuffer,
    RecordBatches,
    VerifiedEndsConsumerThread,
    finish,
)


def test_the_consumer_never_acknowledges_a_message_no_stream_processed():
    skipped = SimpleNamespace(tracked=False, acked=False)
    assert Consumer.ack(SimpleNamespace(), skipped) is False and not skipped.acked


class SlowProbe:
    """A probe consumer whose fetches come back empty ``silent`` times before they answer."""

    def __init__(self, true_ends: dict[tuple[str, int], int], silent: int) -> None:
        self.now = 0.0  # the clock the transport reads; each fetch window moves it on
        self.true_ends = true_ends
        self.silent = silent
        self.seeks: dict[tuple[str, int], int] = {}
        self.fetches = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list) -> None:
        self.assigned = partitions

    def seek(self, tp, offset: int) -> None:
        self.seeks[(tp.topic, tp.partition)] = offset

    async def getmany(self, timeout_ms: int) -> dict:
        self.fetches += 1
        self.now += timeout_ms / 1000
        if self.fetches <= self.silent:
            return {}
        return {tp: ["record"] for tp in self.assigned}

    def highwater(self, tp) -> int | None:
        return self.true_ends[(tp.topic, tp.partition)] if self.fetches > self.silent else None


async def test_end_offsets_are_verified_however_long_the_probe_takes(monkeypatch):
    probe = SlowProbe({("c", 0): 25, ("c", 1): 3}, silent=240)  # 2 minutes of empty fetches
    monkeypatch.setattr(transport, "monotonic", lambda: probe.now)
    thread = SimpleNamespace(transport=None, _create_client_consumer=lambda _: probe)
    # tansu reports the base offset of the last record batch + 1; partition 2 is empty.
    reported = {TP("c", 0): 1, TP("c", 1): 3, TP("c", 2): 0}
    ends = await VerifiedEndsConsumerThread._true_ends(thread, reported)
    assert ends == {TP("c", 0): 25, TP("c", 1): 3, TP("c", 2): 0}
    assert probe.seeks == {("c", 0): 0, ("c", 1): 2} and probe.stopped
    assert probe.fetches == 241  # it waited for the answer instead of using the short end


def _message(offset: int) -> Message:
    message = Message("t", 0, offset, 0.0, 0, [], None, b"v", None)
    message.tracked = True  # a stream took it
    return message


def test_only_a_message_its_agent_finished_is_acknowledged(monkeypatch):
    acked: list[int] = []
    monkeypatch.setattr(
        faust_aiokafka.Consumer, "ack", lambda self, m: acked.append(m.offset) or True
    )
    consumer = Consumer.__new__(Consumer)  # ack needs none of the consumer's state
    cancelled, done = _message(1), _message(2)
    finish(done)
    # A stream acknowledges in a finally, also when its agent was cancelled mid-message.
    assert consumer.ack(cancelled) is False
    assert consumer.ack(done) is True and acked == [2]
    assert consumer.ack(done) is False  # finished once, acknowledged once


def test_finish_ignores_what_is_no_message():
    finish(SimpleNamespace())  # test doubles of events carry plain objects


class SlowChannel:
    """A channel that takes longer to publish a message than Faust's flush waits."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut, wait: bool = False) -> None:
        await asyncio.sleep(0.3)
        self.published.append(fut.n)


async def test_a_full_flush_waits_until_the_buffer_is_empty():
    channel = SlowChannel()
    buffer = DrainingBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    await buffer.start()
    try:
        for n in range(3):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))
        await buffer.flush()
        # Faust's own flush returns after 0.1 s without a message sent: here, none was yet.
        assert channel.published == [0, 1, 2] and buffer.size == 0 and not buffer.sending
    finally:
        await buffer.stop()


TP0 = TP("inference.deferred", 0)


def test_a_record_fetched_past_one_never_delivered_is_read_again():
    guard = transport.ReadGuard()
    guard.assigned(TP0, 7)  # committed offset: the next to read is 7
    assert guard.check(TP0, 7) is None
    assert guard.check(TP0, 9) == 8  # 8 was fetched and dropped: read from 8 again
    guard.seeked(TP0, 8)
    assert [guard.check(TP0, o) for o in (8, 9, 10)] == [None, None, None]
    assert guard.expected[TP0] == 11


def test_the_first_record_after_an_assignment_cannot_be_skipped_either():
    guard = transport.ReadGuard()
    guard.assigned(TP0, 7)
    assert guard.check(TP0, 8) == 7


def test_a_gap_still_there_when_read_again_is_real_and_let_through():
    guard = transport.ReadGuard()
    guard.assigned(TP0, 7)
    assert guard.check(TP0, 10) == 7
    guard.seeked(TP0, 7)
    assert guard.check(TP0, 10) is None  # 7..9 are absent (compacted, transaction markers)
    assert guard.expected[TP0] == 11
    assert guard.check(TP0, 13) == 11  # the next jump is checked again


def test_records_read_before_pass_and_do_not_move_the_expected_offset():
    guard = transport.ReadGuard()
    guard.assigned(TP0, 7)
    guard.check(TP0, 7)
    guard.check(TP0, 8)
    assert guard.check(TP0, 5) is None and guard.expected[TP0] == 9


def test_without_a_committed_offset_the_first_record_sets_the_floor():
    guard = transport.ReadGuard()
    guard.assigned(TP0, None)
    assert guard.check(TP0, 4) is None
    assert guard.head(TP0, None) == 4 and guard.expected[TP0] == 5
    assert guard.head(TP0, 9) == 9  # a commit since: the committed offset is the head


def test_records_a_fetch_returned_but_did_not_deliver_are_read_again():
    """The last records of a quiet partition: no later record would show the jump."""
    tp1 = TP("inference.deferred", 1)
    guard = transport.ReadGuard()
    guard.assigned(TP0, 9)
    guard.assigned(tp1, 4)
    assert guard.check(tp1, 4) is None and guard.check(tp1, 5) is None  # both delivered
    # The fetch held TP0's 9 (dropped: flow stopped) and tp1's 4..5 (delivered).
    assert guard.undelivered({TP0: 9, tp1: 5}) == {TP0: 9}
    assert guard.undelivered({tp1: 3}) == {}  # records read before: nothing to read again
    guard.seeked(TP0, 9)
    assert guard.check(TP0, 9) is None and guard.undelivered({TP0: 9}) == {}


def test_a_revoked_partition_is_forgotten():
    guard = transport.ReadGuard()
    guard.assigned(TP0, 7)
    guard.forget({TP0})
    assert guard.head(TP0, None) is None and guard.check(TP0, 30) is None


def test_a_commit_waits_for_the_message_at_its_head():
    # Committed 7 means 7 is the next to process: 8 and 9 finished, 7 has not.
    assert transport.commit_blocked(lowest_acked=8, head=7)
    assert not transport.commit_blocked(lowest_acked=7, head=7)
    assert not transport.commit_blocked(lowest_acked=8, head=None)


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.records, self.closed = capacity, [], False

    def append(self, *, timestamp, key, value, headers):
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def close(self):
        self.closed = True


class BatchProducer:
    """aiokafka's producer as RecordBatches uses it: builders of 3 records, 2 partitions."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list]] = []
        self.deliveries: list[asyncio.Future] = []
        self._metadata = SimpleNamespace(
            partitions_for_topic=lambda t: {0, 1}, available_partitions_for_topic=lambda t: {0, 1}
        )
        self.client = SimpleNamespace(_wait_on_metadata=self._metadata_ready)
        self._partitioner = lambda key, all_, available: len(key or b"") % len(all_)

    async def _metadata_ready(self, topic):
        return None

    def create_batch(self):
        return FakeBuilder(3)

    async def send_batch(self, builder, topic, *, partition):
        assert builder.closed, "an open builder would linger"
        self.sent.append((topic, partition, builder.records))
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]


async def test_record_batches_send_whole_batches_per_partition_and_resolve_each_record():
    producer = BatchProducer()
    batches = RecordBatches(producer)
    futures = [await batches.add("t", b"k" * (i % 2 + 1), b"v%d" % i) for i in range(8)]
    # Each partition got 4 records: a full builder of 3 went out as the 4th arrived.
    assert sorted((p, len(r)) for _, p, r in producer.sent) == [(0, 3), (1, 3)]
    await batches.send()
    assert sorted((p, len(r)) for _, p, r in producer.sent) == [(0, 1), (0, 3), (1, 1), (1, 3)]
    assert not any(f.done() for f in futures)
    for delivery in producer.deliveries[:-1]:
        delivery.set_result("ok")
    producer.deliveries[-1].set_exception(ConnectionError("broker gone"))
    await asyncio.sleep(0)
    failed = [f for f in futures if f.exception() is not None]
    assert failed and all(isinstance(f.exception(), ConnectionError) for f in failed)
    assert sum(f.result() == "ok" for f in futures if f.exception() is None) == 8 - len(failed)
    # Every record sent, in the order added within its partition.
    by_partition = {}
    for _, p, records in producer.sent:
        by_partition.setdefault(p, []).extend(v for _, v in records)
    assert by_partition[1] == [b"v0", b"v2", b"v4", b"v6"]  # 1-byte keys
    assert by_partition[0] == [b"v1", b"v3", b"v5", b"v7"]


async def test_record_batches_abandoned_fail_their_records_instead_of_hanging():
    batches = RecordBatches(BatchProducer())
    future = await batches.add("t", None, b"v", partition=0)
    batches.abandon(RuntimeError("crashed"))
    assert isinstance(future.exception(), RuntimeError)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_is_aiokafkas_for_every_key(key):
    assert transport.murmur2(key) == aiokafka_murmur2(key)


@pytest.mark.parametrize("partitions", [1, 2, 3, 12, 100])
async def test_keyed_records_go_to_the_partition_aiokafkas_default_partitioner_picks(partitions):
    producer = BatchProducer()
    everything = set(range(partitions))
    producer._metadata = SimpleNamespace(
        partitions_for_topic=lambda t: everything, available_partitions_for_topic=lambda t: {0}
    )
    producer._partitioner = DefaultPartitioner()
    batches = RecordBatches(producer)
    keys = [f"req-{i}".encode() for i in range(300)] + [str(uuid.uuid4()).encode()]
    for key in keys:
        chosen = await batches._partition("t", key)
        assert chosen == producer._partitioner(key, sorted(everything), [0])


async def test_another_partitioner_is_asked_itself():
    batches = RecordBatches(BatchProducer())  # its partitioner: key length modulo 2
    assert [await batches._partition("t", b"k" * n) for n in (1, 2, 3)] == [1, 0, 1]


def _seeking_consumer(flow_control: Any, *, flow_active: bool) -> Consumer:
    """A consumer with just what ``perform_seek`` reads (no stream partitions assigned)."""
    consumer = Consumer.__new__(Consumer)
    consumer.__dict__.update(
        app=SimpleNamespace(
            flow_control=flow_control, topics=SimpleNamespace(acks_enabled_for=lambda t: True)
        ),
        flow_active=flow_active,
        assignment=lambda: set(),
        _committed_offset={},
    )
    return consumer


async def test_records_fetched_while_recovery_seeks_survive_the_queue_clear_after_it(
    monkeypatch,
):
    """Faust's recovery: resume the stream partitions, seek, then clear every stream queue.

    A record the running fetcher delivers during the seek must not land in a queue before
    that clear (it was lost: the position had moved past it).
    """
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    flow_control = FlowControlEvent(initially_suspended=False)  # as after the recovery loop
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow_control, clear_on_resume=True)
    delivered: list[asyncio.Task[None]] = []

    async def on_message(record: str) -> None:  # Faust's conductor: wait for flow, then queue
        await flow_control.acquire()
        queue.put_nowait(record)

    async def faust_perform_seek(self) -> None:  # the seek, with a record arriving during it
        delivered.append(asyncio.ensure_future(on_message("k-after")))
        await asyncio.sleep(0.01)

    monkeypatch.setattr(faust_aiokafka.Consumer, "perform_seek", faust_perform_seek)
    await _seeking_consumer(flow_control, flow_active=True).perform_seek()
    flow_control.resume()  # what Faust's recovery does right after the seek
    await asyncio.gather(*delivered)
    assert list(queue._queue) == ["k-after"]  # type: ignore[attr-defined]


async def test_a_seek_the_fetcher_makes_while_the_flow_is_stopped_holds_nothing(monkeypatch):
    from mode.utils.queues import FlowControlEvent

    async def faust_perform_seek(self) -> None:
        pass

    monkeypatch.setattr(faust_aiokafka.Consumer, "perform_seek", faust_perform_seek)
    flow_control = FlowControlEvent(initially_suspended=False)  # as after the recovery loop
    await _seeking_consumer(flow_control, flow_active=False).perform_seek()
    assert flow_control.is_active()
