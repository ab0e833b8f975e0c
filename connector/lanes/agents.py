"""The bodies of the worker's Faust agents; ``connector.app`` only wires them to topics.

``Intake`` reads both input topics, dead-letters what cannot enter a lane and forwards
valid deferred requests to the work topic, bundled per work partition of their batch key.
``WorkLoop`` runs the deferred lane on the work topic's events (requests and ticks).
``InputThrottle`` is the back-pressure: it pauses the input partitions while the worker is
full, so no event is ever held waiting for room (which would stall the other topics, the
work topic's ticks included, and rebalances).

No record can crash an agent: every exception while admitting or handling one record
becomes that record's dead letter, and sending it is retried until the broker takes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from aiokafka import TopicPartition

from connector import metrics
from connector.lanes import records
from connector.lanes.deferred import DeferredLane, now_ms
from connector.lanes.intake import Rejected, admit
from connector.lanes.ledger import PendingEntry, Source, WorkEvent
from connector.lanes.outputs import Outputs, deliver_all
from connector.lanes.realtime import RealtimeLane
from connector.model import BatchKey
from connector.serde import Codec
from connector.transport import finish

log = logging.getLogger(__name__)

# A bundle of requests whose handling raised is tried this often, WORK_RETRY_S, 2x, 4x apart.
WORK_ATTEMPTS = 4
WORK_RETRY_S = 0.5
# A follow-up tick not back after this long is taken as lost, and another one is sent.
FOLLOW_UP_LOST_S = 10.0


class _Sender(Protocol):
    async def send(
        self, *, key: Any = None, value: Any = None, partition: int | None = None
    ) -> Any: ...


def work_partition(key: BatchKey, partitions: int) -> int:
    """The work partition of a batch key: stable across processes and restarts."""
    return zlib.crc32(str(key).encode("utf-8", "surrogatepass")) % partitions


def _source(event: Any) -> Source:
    msg = event.message
    return (msg.topic, msg.partition, msg.offset)


class InTransit:
    """Requests this worker forwarded to work partitions it owns, not yet admitted there.

    The lane counts a request only once the work agent admits it; until then intake would
    see room that is already spoken for and forward the whole backlog. Bundles for work
    partitions another worker owns are that worker's to bound.
    """

    def __init__(self) -> None:
        self.count = 0
        self.owned: frozenset[int] = frozenset()

    def reset(self, owned: frozenset[int]) -> None:
        """A rebalance: what was in transit is admitted or replayed by the new owners."""
        self.owned, self.count = owned, 0

    def forwarded(self, partition: int, n: int) -> None:
        """``n`` requests went to work partition ``partition``."""
        if partition in self.owned:
            self.count += n

    def admitted(self, n: int) -> None:
        """The work agent admitted ``n`` forwarded requests."""
        self.count = max(0, self.count - n)


class Intake:
    """Admits raw input records: dead-letters the bad ones, routes the good ones to their lane."""

    def __init__(
        self,
        codec: Codec,
        outputs: Outputs,
        deferred: DeferredLane,
        realtime: RealtimeLane,
        work: _Sender,
        *,
        partitions: int,
        reply_allowlist: frozenset[str],
        max_body: dict[str, int],
        endpoints: dict[str, frozenset[str]],
        shards_per_key: int,
        work_limit: int,
        in_transit: InTransit | None = None,
    ) -> None:
        self.codec = codec
        self.out = outputs
        self.deferred = deferred
        self.realtime = realtime
        self.work = work
        self.partitions = partitions
        self.allow = reply_allowlist
        self.max_body = max_body
        self.endpoints = endpoints
        self.shards = shards_per_key
        self.work_limit = work_limit  # bytes of one work topic record
        self.in_transit = in_transit or InTransit()
        self.resumed: set[int] = set()  # input partitions read since the last assignment

    def rejection(
        self, rejected: Rejected, source: Source
    ) -> Callable[[], Awaitable[Awaitable[Any]]]:
        """The send of one input record's dead letter."""
        log.warning(
            "dead-lettering %s from %s/%d@%d: %s", rejected.error_class, *source, rejected.message
        )
        metrics.labelled(metrics.FAILURES, rejected.error_class).inc()
        failure = records.failure_record(
            error_class=rejected.error_class,
            message=rejected.message,
            now=now_ms(),
            request=rejected.request,
            raw_value=rejected.raw,
            source=source,
        )
        return lambda: self.out.failure(failure)

    def _entry(self, value: Any, source: Source) -> tuple[PendingEntry, int] | Rejected:
        """The request's entry and its size as JSON in the work topic and the table, or why not."""
        request = admit(self.codec, value, source[0], self.allow, self.max_body, self.endpoints)
        if isinstance(request, Rejected):
            return request
        try:
            entry = PendingEntry.of_request(request, source, self.shards)
            size = len(orjson.dumps(entry.to_json()))
        except Exception as exc:  # noqa: BLE001 - one record's problem, not the agent's
            return Rejected(records.INTERNAL_ERROR, records.exception_message(exc), request, None)
        if size > self.work_limit:
            message = (
                f"request takes {size} bytes in the connector's state; at most {self.work_limit}"
            )
            return Rejected(records.OVERSIZE, message, request, None)
        return entry, size

    async def deferred_stream(self, batches: AsyncIterable[Sequence[Any]]) -> None:
        """The ``ingest`` agent: inference.deferred → work topic, one bundle per work partition."""
        async for events in batches:
            await self.forward(events)

    async def forward(self, events: Sequence[Any]) -> None:
        """Admit a buffer of input events and deliver everything they became."""
        bundles: dict[int, list[tuple[PendingEntry, int]]] = defaultdict(list)
        sends: list[Callable[[], Awaitable[Awaitable[Any]]]] = []
        for event in events:
            source = _source(event)
            if source[1] not in self.resumed:
                self.resumed.add(source[1])
                log.info("intake: reading %s[%d] from offset %d", *source)
            admitted = self._entry(event.value, source)
            if isinstance(admitted, Rejected):
                sends.append(self.rejection(admitted, source))
            else:
                bundles[work_partition(admitted[0].batch_key, self.partitions)].append(admitted)
        for partition, entries in bundles.items():
            self.in_transit.forwarded(partition, len(entries))
            for chunk in _chunks(entries, self.work_limit):
                sends.append(self._bundle_send(WorkEvent(tuple(chunk)).to_json(), partition))
        await deliver_all(sends, "input records")

    def _bundle_send(
        self, value: dict[str, Any], partition: int
    ) -> Callable[[], Awaitable[Awaitable[Any]]]:
        return lambda: self.work.send(key=None, value=value, partition=partition)

    async def realtime_stream(self, events: AsyncIterable[Any]) -> None:
        """The ``realtime`` agent: inference.realtime → synchronous calls → results."""
        async for event in events:
            source = _source(event)
            request = admit(self.codec, event.value, source[0], self.allow, {}, self.endpoints)
            await self._answer(request, source)
            finish(event.message)

    async def _answer(self, request: dict[str, Any] | Rejected, source: Source) -> None:
        """One realtime record's outcome, delivered."""
        if isinstance(request, Rejected):
            await deliver_all([self.rejection(request, source)], "dead letters")
            return
        metrics.labelled(metrics.REQUESTS_IN, "realtime").inc()
        try:
            await self.realtime.handle(request, source)
        except Exception as exc:  # noqa: BLE001 - this request's problem, not the agent's
            log.exception("realtime %s failed", request.get("request_id"))
            rejected = Rejected(
                records.INTERNAL_ERROR, records.exception_message(exc), request, None
            )
            await deliver_all([self.rejection(rejected, source)], "dead letters")


def _chunks(entries: list[tuple[PendingEntry, int]], limit: int) -> list[list[PendingEntry]]:
    """Bundles of entries (with their JSON sizes) that stay within ``limit`` bytes each."""
    chunks: list[list[PendingEntry]] = [[]]
    size = 0
    for entry, entry_size in entries:
        if chunks[-1] and size + entry_size + 2 > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry_size + 2
    return chunks


class WorkLoop:
    """The ``work`` agent: one partition's requests and ticks, in order.

    While a batch has more to do (an emission under way), each tick asks for a follow-up
    tick — but only one is ever on its way per partition. Without that limit every timer
    tick during a long emission started another chain of follow-ups, and each request event
    of the partition queued behind one emission step per chain.
    """

    def __init__(
        self,
        deferred: DeferredLane,
        nudge: Callable[[int], Awaitable[Any]],
        in_transit: InTransit | None = None,
        is_current: Callable[[Any], bool] = lambda message: True,
    ) -> None:
        self.deferred = deferred
        self._nudge = nudge  # send this partition a follow-up tick (``follow_up=True``) at once
        self.in_transit = in_transit or InTransit()
        self.is_current = is_current  # the message's partition is still this worker's
        self._following: dict[int, float] = {}  # partition → when its follow-up tick was sent

    def reset(self) -> None:
        """A rebalance: follow-up ticks on their way may never come back to this worker."""
        self._following.clear()

    def _awaits_follow_up(self, partition: int) -> bool:
        sent = self._following.get(partition)
        return sent is not None and time.monotonic() - sent < FOLLOW_UP_LOST_S

    async def run(self, events: AsyncIterable[Any]) -> None:
        """Process work topic events until the stream ends."""
        async for event in events:
            if await self.process(event.message.partition, event.value, event.message):
                finish(event.message)

    async def process(self, partition: int, value: Any, message: Any) -> bool:
        """One work event, retried while its requests may not all be admitted; True when done.

        A tick that fails is done: the next one does its work. A bundle of requests that
        fails (its dead letters could not be delivered, say) is handled again, each
        request at most once; if it still fails, or the partition moved to another worker,
        it stays unacknowledged and the partition's next owner reads it again.
        """
        try:
            work = WorkEvent.from_json(value)
        except Exception:  # noqa: BLE001 - not a work event of any version: nothing to do
            log.exception("work partition %d: unreadable work event skipped", partition)
            return True
        for attempt in range(WORK_ATTEMPTS):
            try:
                await self.handle(work, partition)
                return True
            except Exception:  # noqa: BLE001 - the state is in the tables; retried below
                log.exception(
                    "work partition %d: event failed (attempt %d)", partition, attempt + 1
                )
            if work.is_tick:
                return True
            if attempt + 1 < WORK_ATTEMPTS and self.is_current(message):
                await asyncio.sleep(WORK_RETRY_S * 2**attempt)
            else:
                break
        log.error(
            "work partition %d: %d requests not admitted; left for the partition's next owner",
            partition,
            len(work.entries),
        )
        return False

    async def handle(self, work: WorkEvent, partition: int) -> None:
        """One work event: admit its requests, or do the partition's periodic work."""
        if work.is_tick:
            if work.follow_up:
                self._following.pop(partition, None)
            if await self.deferred.on_tick(partition) and not self._awaits_follow_up(partition):
                # An emission is under way: continue right after.
                self._following[partition] = time.monotonic()
                try:
                    await self._nudge(partition)
                except BaseException:
                    self._following.pop(partition, None)
                    raise
            return
        self.in_transit.admitted(len(work.entries))
        await self.deferred.on_requests(work.entries, partition)


class InputThrottle:
    """Back-pressure: stop fetching the input while the worker is full, fetch again when not.

    The input partitions are paused in aiokafka itself, inside Faust's consumer thread.
    There a pause discards what was fetched for the partition without moving its position,
    so nothing is skipped. Faust's own ``pause_partitions`` is unsafe for this: a pause that
    lands while a fetch is handed over from the consumer thread makes Faust drop the
    records, and its gap handling then acknowledges the missing offsets, so they are never
    read again. Holding an input event instead stalls every other topic behind Faust's full
    stream buffer, the work topic and its ticks included.

    The throttle also un-sticks stream partitions Faust left paused: when a recovery finds
    that another rebalance has begun, Faust returns without resuming what it paused, and
    if no further rebalance follows those partitions stay paused for good (a worker idle
    with requests waiting, logging nothing). Stream topics only, never changelogs, only
    outside rebalances, and only when the same partitions are paused at two checks.
    """

    def __init__(
        self, app: Any, topic: str, has_room: Callable[[], bool], streams: frozenset[str]
    ) -> None:
        self.app = app
        self.topic = topic
        self.has_room = has_room
        self.streams = streams | {topic}
        self.paused: set[Any] = set()
        self._stuck: set[Any] = set()

    def forget(self) -> None:
        """A rebalance: aiokafka's assignment, pauses included, starts over."""
        self.paused.clear()
        self._stuck.clear()

    async def check(self) -> None:
        """Pause or resume this worker's input partitions as its room says."""
        if self.app.rebalancing or self.app.in_recovery:
            self._stuck.clear()
            return  # Faust owns the consumer until recovery ends
        consumer = self.app.consumer
        self._unstick(consumer)
        if self.has_room():
            if self.paused:
                await self._in_consumer_thread("resume", self.paused)
                log.info("room again: resumed %d input partitions", len(self.paused))
                self.paused.clear()
            return
        mine = {tp for tp in consumer.assignment() if tp.topic == self.topic} - self.paused
        if mine:
            await self._in_consumer_thread("pause", mine)
            self.paused |= mine
            log.info("worker full: paused %d input partitions until requests finish", len(mine))

    async def _in_consumer_thread(self, action: str, tps: set[Any]) -> None:
        thread = self.app.consumer._thread
        targets = [TopicPartition(tp.topic, tp.partition) for tp in tps]

        async def call() -> None:
            getattr(thread._ensure_consumer(), action)(*targets)

        await thread.call_thread(call)

    def _unstick(self, consumer: Any) -> None:
        stuck = {
            tp for tp in getattr(consumer, "_paused_partitions", ()) if tp.topic in self.streams
        }
        if stuck and stuck <= self._stuck:  # the same at two checks in a row: not a passing state
            log.warning(
                "stream partitions left paused after a rebalance: resuming %s", sorted(stuck)
            )
            consumer.resume_partitions(stuck)
            stuck = set()
        self._stuck = stuck
