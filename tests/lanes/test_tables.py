"""The RocksDB tables' persisted offsets: only as far as the store holds the changelog."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
from types import SimpleNamespace

import orjson
import pytest
import rocksdict

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


class ThreadNoting:
    """A partition's rocksdict database that notes on which thread it is read."""

    def __init__(self, db, gate=None) -> None:
        self.db, self.gate = db, gate
        self.read_on: list[str] = []

    def get(self, keys):
        self.read_on.append(threading.current_thread().name)
        if self.gate is not None:
            self.read_on.append("loop ran meanwhile" if self.gate.wait(10) else "loop blocked")
        return self.db.get(keys)


@pytest.fixture
def rocks_table(monkeypatch, tmp_path):
    event = SimpleNamespace(message=SimpleNamespace(partition=0))
    monkeypatch.setattr(tables, "current_event", lambda: event)
    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    for key, value in {"a": {"n": 1}, "b": {"n": 2}}.items():
        db[dumps(key)] = dumps(value)
    noting = ThreadNoting(db)
    store = SimpleNamespace(use_rocksdict=True, _db_for_partition=lambda partition: noting)
    direct = DirectTable(
        SimpleNamespace(data=store, changelog_topic=None, is_global=False, use_partitioner=False)
    )
    yield direct, noting
    db.close()


async def test_read_many_reads_rocksdb_on_another_thread_while_the_loop_goes_on(rocks_table):
    direct, db = rocks_table
    gate = db.gate = threading.Event()

    async def open_gate():
        gate.set()  # runs only if the event loop is free while the read waits for it

    opened = asyncio.ensure_future(open_gate())
    assert await direct.read_many(["b", "missing", "a"]) == [{"n": 2}, None, {"n": 1}]
    await opened
    assert db.read_on[0].startswith("table-read") and db.read_on[1] == "loop ran meanwhile"


async def test_read_many_and_get_many_read_the_same(rocks_table):
    direct, db = rocks_table
    keys = ["a", "missing", "b", "a"]
    assert await direct.read_many(keys) == direct.get_many(keys)
    assert db.read_on[1] == threading.current_thread().name  # get_many: on the loop's thread
