"""The RocksDB tables' persisted offsets: only as far as the store holds the changelog."""

from __future__ import annotations

import gc
import tracemalloc
from types import SimpleNamespace

import orjson
import pytest

from connector.lanes import tables
from connector.lanes.tables import DirectTable, OwnRun, dumps


def test_the_run_advances_over_this_workers_writes_in_any_order():
    run = OwnRun(base=9)
    for offset in (11, 10, 13, 12):
        run.add(offset)
    assert run.last == 13 and run.moved and not run.stuck


def test_a_record_another_worker_wrote_in_between_holds_the_run_below_it():
    run = OwnRun(base=9)
    run.add(10)
    for offset in (12, 13, 14):  # 11 is not ours
        run.add(offset)
    assert run.last == 10


def test_a_hole_that_never_fills_stops_tracking_instead_of_growing(monkeypatch):
    monkeypatch.setattr(OwnRun, "MAX_AHEAD", 3)
    run = OwnRun(base=-1)
    run.add(0)
    assert [run.add(o) for o in (2, 3, 4, 5)] == [False, False, False, True]
    assert run.stuck and run.last == 0
    run.add(1)  # too late: the run stays where it was
    assert run.last == 0


class FakeStore:
    def __init__(self, persisted: int | None) -> None:
        self.persisted = {0: persisted}
        self.data: dict[bytes, bytes | None] = {}

    def _encode_key(self, key):
        return b'"' + key.encode() + b'"'

    def persisted_offset(self, tp):
        return self.persisted.get(tp.partition)

    def set_persisted_offset(self, tp, offset):
        self.persisted[tp.partition] = offset

    def _set(self, key, value):
        self.data[key] = value


class FakeFuture:
    def __init__(self, partition: int, offset: int) -> None:
        self.meta = SimpleNamespace(partition=partition, offset=offset)
        self.callbacks = []

    def add_done_callback(self, callback):
        self.callbacks.append(callback)

    def cancelled(self):
        return False

    def exception(self):
        return None

    def result(self):
        return self.meta

    def ack(self):
        for callback in self.callbacks:
            callback(self)


class FakeChangelog:
    def __init__(self) -> None:
        self.sent: list[FakeFuture] = []
        self.next_offset = 0

    def get_topic_name(self):
        return "pending-changelog"

    def send_soon(self, **kwargs):
        future = FakeFuture(kwargs["partition"], self.next_offset)
        self.next_offset += 1
        self.sent.append(future)
        return future


@pytest.fixture
def table(monkeypatch):
    event = SimpleNamespace(message=SimpleNamespace(partition=0))
    monkeypatch.setattr(tables, "current_event", lambda: event)
    store, changelog = FakeStore(persisted=4), FakeChangelog()
    changelog.next_offset = 5
    direct = DirectTable(SimpleNamespace(data=store, changelog_topic=changelog))
    return direct, store, changelog


def test_a_checkpoint_persists_the_offset_of_the_last_write_the_store_holds_with_all_before(table):
    direct, store, changelog = table
    direct["a"] = {"n": 1}
    direct["b"] = {"n": 2}
    changelog.next_offset += 1  # another worker's record lands at 7
    direct["c"] = {"n": 3}
    for future in changelog.sent:
        future.ack()
    direct.checkpoint()
    assert store.persisted[0] == 6  # not 8: the record at 7 is not in this store


def test_acknowledgements_from_before_a_rebalance_are_ignored(table):
    direct, store, changelog = table
    direct["a"] = {"n": 1}
    direct.reset()
    store.persisted[0] = 20  # recovery brought the store further
    changelog.sent[0].ack()
    direct.checkpoint()
    assert store.persisted[0] == 20


def test_a_record_batchs_delivery_counts_for_every_record_in_it(table):
    direct, store, changelog = table
    direct._note_acked(FakeFuture(0, 5), direct._epoch, records=3)  # offsets 5, 6, 7
    direct.checkpoint()
    assert store.persisted[0] == 7


def _held_bytes(make: object) -> int:
    """Bytes still allocated while 1,000 values made by ``make`` are held."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [make(i) for i in range(1_000)]  # type: ignore[operator]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 1_000
    return after - before


def test_dumps_is_orjson_bytes_of_their_own_size() -> None:
    value = {"request_id": "r-1", "state": "batched", "size": 31}
    assert dumps(value) == orjson.dumps(value)
    # A changelog record waits in the producer's queue until acknowledged: each one must
    # cost about its length, not orjson's 4 KB buffer (3.12 and later never shrink it).
    held = _held_bytes(lambda i: dumps({"request_id": f"r-{i}", "state": "batched"}))
    assert held < 1_000 * 200
