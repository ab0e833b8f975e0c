"""The bodies of the worker's Faust agents; ``connector.app`` only wires them to topics.

``Intake`` reads both input topics, dead-letters what cannot enter a lane and forwards
valid deferred requests to the work topic, re-keyed by batch key. ``WorkLoop`` runs the
deferred lane on the work topic's events (requests and ticks).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from connector import metrics
from connector.lanes import records
from connector.lanes.deferred import DeferredLane, now_ms
from connector.lanes.intake import Rejected, admit
from connector.lanes.ledger import PendingEntry, Source, WorkEvent
from connector.lanes.outputs import Outputs
from connector.lanes.realtime import RealtimeLane
from connector.serde import Codec

log = logging.getLogger(__name__)


class _Sender(Protocol):
    async def send(self, *, key: Any = None, value: Any = None, partition: int | None = None) -> Any: ...


def _source(event: Any) -> Source:
    msg = event.message
    return (msg.topic, msg.partition, msg.offset)


class Intake:
    """Admits raw input records: dead-letters the bad ones, routes the good ones to their lane."""

    def __init__(
        self,
        codec: Codec,
        outputs: Outputs,
        deferred: DeferredLane,
        realtime: RealtimeLane,
        work: _Sender,
        reply_allowlist: frozenset[str],
        max_body: dict[str, int],
        shards_per_key: int,
    ) -> None:
        self.codec = codec
        self.out = outputs
        self.deferred = deferred
        self.realtime = realtime
        self.work = work
        self.allow = reply_allowlist
        self.max_body = max_body
        self.shards = shards_per_key
        self.resumed: set[int] = set()  # input partitions read since the last assignment

    async def reject(self, rejected: Rejected, source: Source) -> None:
        """Dead-letter one input record with the reason it cannot enter a lane."""
        log.warning("dead-lettering %s from %s/%d@%d: %s", rejected.error_class, *source, rejected.message)
        failure = records.failure_record(
            error_class=rejected.error_class,
            message=rejected.message,
            now=now_ms(),
            request=rejected.request,
            raw_value=rejected.raw,
            source=source,
        )
        await self.out.failure(failure)
        metrics.FAILURES.labels(rejected.error_class).inc()

    async def deferred_stream(self, events: AsyncIterator[Any]) -> None:
        """The ``ingest`` agent: inference.deferred → work topic."""
        async for event in events:
            source = _source(event)
            if source[1] not in self.resumed:
                self.resumed.add(source[1])
                log.info("intake: reading %s[%d] from offset %d", *source)
            request = admit(self.codec, event.value, source[0], self.allow, self.max_body)
            if isinstance(request, Rejected):
                await self.reject(request, source)
                continue
            await self.deferred.wait_for_room()
            entry = PendingEntry.of_request(request, source, self.shards)
            await self.work.send(key=str(entry.batch_key).encode(), value=WorkEvent(entry).to_json())

    async def realtime_stream(self, events: AsyncIterator[Any]) -> None:
        """The ``realtime`` agent: inference.realtime → synchronous calls → results."""
        async for event in events:
            source = _source(event)
            request = admit(self.codec, event.value, source[0], self.allow, {})
            if isinstance(request, Rejected):
                await self.reject(request, source)
                continue
            metrics.REQUESTS_IN.labels("realtime").inc()
            await self.realtime.handle(request, source)


class WorkLoop:
    """The ``work`` agent: one partition's requests and ticks, in order."""

    def __init__(self, deferred: DeferredLane) -> None:
        self.deferred = deferred

    async def run(self, events: AsyncIterator[Any]) -> None:
        """Process work topic events until the stream ends."""
        async for event in events:
            partition = event.message.partition
            work = WorkEvent.from_json(event.value)
            try:
                if work.entry is not None:
                    await self.deferred.make_room(partition)
                    await self.deferred.on_request(work.entry, partition)
                else:
                    await self.deferred.on_tick(partition)
            except Exception:
                # A bug must not stall the partition forever; the state is in the tables
                # and the next tick picks the work up again.
                log.exception("work partition %d: event failed", partition)
