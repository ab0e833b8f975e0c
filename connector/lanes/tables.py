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


class DirectTable(MutableMapping[str, Any]):
    """A Faust table (str keys, JSON values) read and written without Faust's per-call overhead."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._store: SerializedStore[Any, Any] = table.data
        self._topic = table.changelog_topic
        self._acked: dict[int, int] = {}  # partition → highest acknowledged changelog offset

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
        raw = self._store._get(orjson.dumps(key))
        if raw is None:
            raise KeyError(key)
        return orjson.loads(raw)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._store._get(orjson.dumps(key))
        return default if raw is None else orjson.loads(raw)

    def get_many(self, keys: Sequence[str]) -> list[Any]:
        """The values of ``keys`` (None where missing), in one RocksDB multi-get.

        Like a single read inside an event, it looks in the current event's partition only.
        """
        db = self._partition_db()
        if db is None:
            return [self.get(key) for key in keys]
        raws = db.get([orjson.dumps(key) for key in keys])
        return [None if raw is None else orjson.loads(raw) for raw in raws]

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(orjson.dumps(key), orjson.dumps(value))

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
        encoded = [(orjson.dumps(key), orjson.dumps(value)) for key, value in items]
        from rocksdict import WriteBatch  # the store is RocksDB (see _partition_db)

        batch = WriteBatch(raw_mode=True)
        for key_bytes, value_bytes in encoded:
            batch.put(key_bytes, value_bytes)
        db.write(batch)
        producer = self.table.app.producer
        await producer.buffer.flush()
        topic = self._topic.get_topic_name()
        batches = RecordBatches.of(producer)
        last: Any = None
        for key_bytes, value_bytes in encoded:
            last = await batches.add(topic, key_bytes, value_bytes, partition)
        await batches.send()
        # One partition, in order: the last batch's (base) offset is acknowledged only after
        # every record before it; persisting it may replay a few records more, never fewer.
        last.add_done_callback(self._note_acked)

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
        key_bytes = orjson.dumps(key)
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
        future.add_done_callback(self._note_acked)

    def _note_acked(self, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the producer logs it; the offset simply does not advance
        meta = future.result()
        if meta.offset > self._acked.get(meta.partition, -1):
            self._acked[meta.partition] = meta.offset

    def checkpoint(self) -> None:
        """Persist the acknowledged changelog offsets, so a restart replays only what follows."""
        topic = self._topic.get_topic_name()
        for partition, offset in self._acked.items():
            self._store.set_persisted_offset(TP(topic, partition), offset)
        self._acked.clear()

    def __iter__(self) -> Iterator[str]:
        for key in self._store._iterkeys():
            yield orjson.loads(key)

    def __len__(self) -> int:
        return self._store._size()

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        for raw in self._store._itervalues():
            if raw is not None:
                yield orjson.loads(raw)
