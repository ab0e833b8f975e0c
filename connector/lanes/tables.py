"""The lane's Faust tables without Faust's per-call machinery.

A Faust table write goes through sensors, the serializer registry, a future per changelog
record and a RocksDB put of the persisted offset per record; a read goes through sensors and
the registry too. Together that was about a quarter of the worker's CPU. For the RocksDB
store this module does the same work directly: JSON (orjson) encoded once, the bytes put in
the partition's RocksDB and sent to the changelog partition of the current event, and the
persisted offset written once per acknowledged batch of records instead of once per record.

The format is exactly Faust's (``json`` key and value serializers), so Faust's own changelog
recovery restores these tables. Any other store (``memory://``) keeps Faust's own path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import orjson
from faust.stores.base import SerializedStore
from faust.streams import current_event
from faust.types import TP

from connector.transport import RecordBatches

log = logging.getLogger(__name__)


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes of their own size.

    orjson (3.12 and later) returns bytes whose allocation is rounded up to a power of two
    of at least 4 KB and never shrunk. A table write's key and value live on in the
    producer's queue until the changelog acknowledges them (and keys in the store's key
    index), so each ~300 B record held ~4 KB: 40 MB for the 10,000 member writes of one
    batch, and a heap that glibc could not give back. The copy costs well under a
    microsecond.
    """
    return bytes(memoryview(orjson.dumps(value)))


class DirectTable(MutableMapping[str, Any]):
    """A Faust table (str keys, JSON values) read and written without Faust's per-call overhead."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._store: SerializedStore[Any, Any] = table.data
        self._topic = table.changelog_topic
        self._runs: dict[int, OwnRun] = {}  # partition → this worker's acknowledged writes
        self._epoch = 0  # bumped on every rebalance: acknowledgements of before are ignored

    @classmethod
    def wrap(cls, table: Any) -> MutableMapping[str, Any]:
        """``table`` itself unless its store is one this class can drive (RocksDB)."""
        store = getattr(table, "data", None)
        if isinstance(store, SerializedStore) and store._encode_key("probe") == orjson.dumps(
            "probe"
        ):
            return cls(table)
        return table  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        raw = self._store._get(dumps(key))
        if raw is None:
            raise KeyError(key)
        return orjson.loads(raw)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._store._get(dumps(key))
        return default if raw is None else orjson.loads(raw)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The values of ``keys`` (None where missing), in one RocksDB multi-get.

        Like a single read inside an event, it looks in the current event's partition only.
        """
        db = self._partition_db()
        if db is None:
            return [self.get(key) for key in keys]
        raws = db.get([dumps(key) for key in keys])
        return [None if raw is None else orjson.loads(raw) for raw in raws]

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(dumps(key), dumps(value))

    async def put_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Write several values: one RocksDB write batch, their changelog records in a row.

        The changelog records go to the producer as whole record batches, not one Faust
        future each through its buffer. What the buffer still holds is flushed first, so
        the changelog keeps the order in which keys were written.
        """
        db = self._partition_db()
        if db is None:
            for key, value in items:
                self[key] = value
            return
        if not items:
            return
        partition = self._partition()
        encoded = [(dumps(key), dumps(value)) for key, value in items]
        from rocksdict import WriteBatch  # the store is RocksDB (see _partition_db)

        batch = WriteBatch(raw_mode=True)
        for key_bytes, value_bytes in encoded:
            batch.put(key_bytes, value_bytes)
        db.write(batch)
        producer = self.table.app.producer
        await producer.buffer.flush()
        topic = self._topic.get_topic_name()
        batches = RecordBatches.of(producer)
        counts: dict[Any, int] = {}  # a record batch's delivery → how many records it holds
        for key_bytes, value_bytes in encoded:
            delivered = await batches.add(topic, key_bytes, value_bytes, partition)
            counts[delivered] = counts.get(delivered, 0) + 1
        await batches.send()
        epoch = self._epoch
        for delivered, count in counts.items():
            # A batch's delivery carries its base offset; its records follow it one by one.
            delivered.add_done_callback(
                lambda done, n=count: self._note_acked(done, epoch, records=n)
            )

    def _partition(self) -> int:
        event = current_event()
        if event is None:
            raise RuntimeError(
                "tables are written only while processing an event of their partition"
            )
        return int(event.message.partition)

    def _partition_db(self) -> Any:
        """The RocksDB of the current event's partition, when the store is rocksdict's."""
        db_for = getattr(self._store, "_db_for_partition", None)
        if db_for is None or not getattr(self._store, "use_rocksdict", False):
            return None
        if current_event() is None or self.table.is_global or self.table.use_partitioner:
            return None
        return db_for(self._partition())

    def __delitem__(self, key: str) -> None:
        key_bytes = dumps(key)
        self._store._del(key_bytes)
        self._send(key_bytes, None)

    def _write(self, key: bytes, value: bytes) -> None:
        self._store._set(key, value)
        self._send(key, value)

    def _send(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition()
        future = self._topic.send_soon(
            key=key, value=value, partition=partition, key_serializer="raw", value_serializer="raw"
        )
        epoch = self._epoch
        future.add_done_callback(lambda done: self._note_acked(done, epoch))

    def _note_acked(self, future: Any, epoch: int, records: int = 1) -> None:
        if epoch != self._epoch or future.cancelled() or future.exception() is not None:
            return  # the producer logs failures; the persisted offset simply does not advance
        meta = future.result()
        run = self._runs.get(meta.partition)
        if run is None:
            tp = TP(self._topic.get_topic_name(), meta.partition)
            persisted = self._store.persisted_offset(tp)  # where recovery brought the store
            run = self._runs[meta.partition] = OwnRun(-1 if persisted is None else persisted)
        stuck = False
        for offset in range(meta.offset, meta.offset + records):
            stuck = run.add(offset) or stuck
        if stuck:
            log.warning(
                "%s[%d]: offset %d was written by another worker; this store's persisted "
                "offset stays below it, so a restart replays the changelog from there",
                self._topic.get_topic_name(),
                meta.partition,
                run.last + 1,
            )

    def reset(self) -> None:
        """A rebalance: recovery re-bases every partition's persisted offset."""
        self._epoch += 1
        self._runs.clear()

    def checkpoint(self) -> None:
        """Persist how far the store holds the changelog, so a restart replays only what follows."""
        topic = self._topic.get_topic_name()
        for partition, run in self._runs.items():
            if run.moved:
                self._store.set_persisted_offset(TP(topic, partition), run.last)
                run.moved = False

    def __iter__(self) -> Iterator[str]:
        for key in self._store._iterkeys():
            yield orjson.loads(key)

    def __len__(self) -> int:
        return self._store._size()

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        for raw in self._store._itervalues():
            if raw is not None:
                yield orjson.loads(raw)


class OwnRun:
    """How far a changelog partition is known to be in this worker's store.

    After recovery the store holds the changelog up to its persisted offset; from there
    every record this worker writes is in the store too. The persisted offset may advance
    only over an unbroken run of this worker's own acknowledged writes: a record another
    worker wrote in between (a previous owner still finishing after a rebalance) is not in
    this store, and persisting past it would make the next recovery skip it.
    """

    MAX_AHEAD = 10_000  # acknowledgements kept beyond a hole before the run stops tracking

    def __init__(self, base: int) -> None:
        self.last = base  # every offset up to here is in the store
        self.moved = False  # ``last`` advanced since the last checkpoint
        self.stuck = False  # a hole that is not this worker's: ``last`` stays below it
        self._ahead: set[int] = set()

    def add(self, offset: int) -> bool:
        """An acknowledged write at ``offset``; True if this made the run stuck."""
        if self.stuck or offset <= self.last:
            return False
        if offset != self.last + 1:
            self._ahead.add(offset)
            if len(self._ahead) > self.MAX_AHEAD:
                self._ahead.clear()
                self.stuck = True
                return True
            return False
        self.last = offset
        while self.last + 1 in self._ahead:
            self._ahead.remove(self.last + 1)
            self.last += 1
        self.moved = True
        return False
