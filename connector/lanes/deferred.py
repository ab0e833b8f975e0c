"""The deferred lane: requests → provider batches → one result or dead letter each.

All state lives in two changelog-backed tables (see :mod:`connector.lanes.ledger`), written
only while the work agent processes an event of the partition that owns the key (Faust
writes a table change to the changelog partition of the current event). Per-partition
indexes (:mod:`connector.lanes.index`) are derived in memory and rebuilt after every
rebalance. Provider I/O happens on tick events, one partition at a time, so there is never
more than one actor per batch.

This module admits requests, closes batches when they are due, escalates requests whose
deadline is near and applies back-pressure; :mod:`connector.lanes.batches` drives each
batch and :mod:`connector.lanes.delivery` gives each request its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import Any

from connector import metrics
from connector.config import Settings
from connector.lanes import records
from connector.lanes.assembly import MAX_PENDING, Close, must_escalate, plan_closes
from connector.lanes.batches import BatchMachine
from connector.lanes.cost_control import CostControl
from connector.lanes.delivery import Delivery, DeliveryFailed
from connector.lanes.index import PartitionIndex
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.lanes.outputs import Outputs
from connector.model import BatchKey
from connector.pricing import PriceTable
from connector.providers.base import Provider

log = logging.getLogger(__name__)


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of every timestamp in the records."""
    return int(time.time() * 1000)


class DeferredLane:
    """Admits requests, closes batches and keeps the partitions' indexes; one per worker."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        outputs: Outputs,
        prices: PriceTable,
        pending: MutableMapping[str, Any],
        batches: MutableMapping[str, Any],
        flush: Callable[[], Any],
        clock: Callable[[], int] = now_ms,
        budgets: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.batching
        self.providers = providers
        self.ledger = Ledger(
            pending,
            batches,
            pending_store=getattr(pending, "data", None),
            batches_store=getattr(batches, "data", None),
        )
        self.clock = clock
        self.costs = CostControl(settings, prices, budgets)
        self.delivery = Delivery(self.ledger, outputs, prices, self.cfg, clock, self.costs)
        self.machine = BatchMachine(
            settings, self.ledger, providers, outputs, self.delivery, flush, clock, self.costs
        )
        self.machine.peers = self._all_batches
        self._parts: dict[int, PartitionIndex] = {}
        self.dedupe_window_ms = int(settings.dedupe_window_s * 1000)

    # ---------------------------------------------------------------- indexes
    def reset(self) -> None:
        """Forget every derived index (on rebalance): they are rebuilt from the tables."""
        self._parts.clear()
        self.machine.reset()
        self.costs.reset()
        self.ledger.reset()

    def poke(self, provider_batch_id: str) -> bool:
        """Poll this provider batch on the next tick (a webhook said it changed)."""
        return self.machine.poke(provider_batch_id, self._all_batches())

    def _all_batches(self) -> Iterator[BatchRecord]:
        """Every batch not yet EMITTED on the partitions this worker owns."""
        return (b for part in self._parts.values() for b in part.batches.values())

    def live_requests(self) -> int:
        """Requests queued or in flight on every partition this worker owns."""
        return sum(p.live() for p in self._parts.values())

    def has_room(self) -> bool:
        """Whether this worker may take more requests (``max_pending_requests`` bounds memory)."""
        return self.live_requests() < self.settings.max_pending_requests

    def _part(self, p: int) -> PartitionIndex:
        part = self._parts.get(p)
        if part is None:
            part = self._parts[p] = PartitionIndex.rebuild(p, self.ledger)
        return part

    # ---------------------------------------------------------------- requests
    async def on_request(self, entry: PendingEntry, p: int) -> None:
        """Admit one request to partition ``p`` (see :meth:`on_requests`)."""
        await self.on_requests([entry], p)

    async def on_requests(self, entries: Sequence[PendingEntry], p: int) -> None:
        """Admit a bundle of requests to partition ``p``: one read, one write for them all.

        A request id seen before is new work only with a higher attempt, or as a replay of
        a dead letter (``replay_of``) once its earlier run is done. Anything else, the same
        request_id sent twice with different bodies included, is a replay: ignored (the
        first one gets the one outcome). A request whose admission fails is dead-lettered;
        the rest of the bundle goes on. If the write itself fails, the bundle raises and is
        handled again: its requests are then replays, rewritten and queued where missing.
        """
        part = self._part(p)
        ids = [entry.request_id for entry in entries]
        known = dict(zip(ids, self.ledger.entries_of(ids), strict=True))
        writes: dict[str, PendingEntry] = {}
        fresh: dict[str, PendingEntry] = {}  # to queue, in arrival order
        for entry in entries:
            rid = entry.request_id
            existing = writes.get(rid) or known[rid]
            if existing and (entry.repeats(existing) or existing.state is not EntryState.DONE):
                metrics.DUPLICATES.inc()
                if existing.state is EntryState.QUEUED and entry.repeats(existing):
                    # Rewrite it: a crash may have kept this write in the local store only.
                    writes.setdefault(rid, existing)
                    if existing.partition == p and rid not in part.queued.get(
                        existing.batch_key, {}
                    ):
                        fresh.setdefault(rid, existing)  # an earlier try failed to write
                continue
            try:
                queued = self.costs.profiled(entry.queued(p, self.clock()))
            except Exception as exc:  # noqa: BLE001 - this request is broken, not the bundle
                await self._reject_failed(entry, p, exc)
                known[rid] = self.ledger.entry(rid)  # its dead letter's done marker
                continue
            writes[rid] = fresh[rid] = queued
        await self.ledger.put_entries(list(writes.values()))
        for entry in fresh.values():
            try:
                part.add_queued(entry)
                metrics.labelled(metrics.REQUESTS_IN, "deferred").inc()
                await self._close_due(part, p, entry.batch_key, full_only=True)
            except Exception as exc:  # noqa: BLE001 - this request is broken, not the bundle
                await self._reject_failed(entry, p, exc)

    async def _reject_failed(self, entry: PendingEntry, p: int, exc: Exception) -> None:
        log.error("work partition %d: admitting %s failed", p, entry.request_id, exc_info=exc)
        await self.reject(entry, p, exc)

    async def reject(self, entry: PendingEntry, p: int, exc: Exception) -> None:
        """Dead-letter a request that could not be admitted (``internal_error``)."""
        part = self._part(p)
        sent = await self.delivery.fail(
            None, entry, records.INTERNAL_ERROR, None, records.exception_message(exc)
        )
        await self.delivery.settle(part, [sent])

    # ---------------------------------------------------------------- ticks
    async def on_tick(self, p: int) -> bool:
        """The periodic work of partition ``p``; True if some batch has more to do at once.

        Escalations, closes and every batch step are isolated from each other: one that
        fails is logged (and retried by the next tick), the rest go on.
        """
        part = self._part(p)
        await self._escalate_due(part)
        # A full worker sends what it has queued now, so requests move on and room frees up.
        force = None if self.has_room() else MAX_PENDING
        for key in list(part.queued):
            try:
                await self._close_due(part, p, key, full_only=False, force=force)
            except Exception:  # noqa: BLE001 - the next tick tries this key again
                log.exception("partition %d: closing %s failed", p, key)
        # Batches are independent: their provider calls overlap instead of queueing.
        due = [b for b in list(part.batches.values()) if self.machine.due(b.batch_id)]
        steps = await _bounded_gather(
            (self.machine.drive(part, b) for b in due), self.settings.batch_concurrency
        )
        busy = any(steps)
        part.purge(self.ledger, self.clock() - self.dedupe_window_ms)
        self.ledger.checkpoint()
        self._observe()
        return busy

    async def _escalate_due(self, part: PartitionIndex) -> None:
        now = self.clock()
        sent = []
        for rid, deadline in list(part.deadlines.items()):
            if not must_escalate(deadline, now, self.cfg):
                continue
            part.deadlines.pop(rid, None)
            entry = self.ledger.entry(rid)
            if entry and entry.state is not EntryState.DONE:
                sent.append(await self.delivery.escalate(entry))
        try:
            await self.delivery.settle(part, sent)
        except DeliveryFailed as exc:
            log.warning("escalations: %s", exc)
            for item in sent:  # those not acknowledged are escalated again at the next tick
                if (
                    item.entry.deadline is not None
                    and self.ledger.entry(item.entry.request_id) == item.entry
                ):
                    part.deadlines[item.entry.request_id] = item.entry.deadline

    async def _close_due(
        self,
        part: PartitionIndex,
        p: int,
        key: BatchKey,
        *,
        full_only: bool,
        force: str | None = None,
    ) -> None:
        queue = part.queued.get(key)
        if not queue:
            part.drop_queue(key)
            return
        limits = self.providers[key.provider].limits
        if full_only and not (
            len(queue) >= min(self.cfg.max_requests, limits.max_requests)
            or part.queued_bytes.get(key, 0) > min(self.cfg.max_bytes, limits.max_bytes)
        ):
            return  # the common arrival: nothing is full, no need to plan
        if full_only and self.costs.closes_at_tick(queue.values(), len(queue), limits.max_requests):
            return  # shared prefixes: the next tick closes them, grouped
        if not full_only and force is None and self._nothing_due(part, queue, key, limits):
            return  # planning walks the whole queue: skip it on ticks that cannot close
        closes = plan_closes(
            self.costs.closing_order(list(queue.values())),
            now_ms=self.clock(),
            cfg=self.cfg,
            limit_requests=limits.max_requests,
            limit_bytes=limits.max_bytes,
            force=force,
        )
        for close in closes:
            if full_only and close.reason not in ("count", "bytes"):
                continue
            close = await self._within_budget(part, key, close)
            if close.request_ids:
                await self.machine.open(part, p, key, close, limits)

    def _nothing_due(
        self, part: PartitionIndex, queue: dict[str, Any], key: BatchKey, limits: Any
    ) -> bool:
        """True when no close of ``queue`` can be due now (cheap: the oldest request and sizes)."""
        if part.deadlines or len(queue) >= min(self.cfg.max_requests, limits.max_requests):
            return False
        if part.queued_bytes.get(key, 0) > min(self.cfg.max_bytes, limits.max_bytes):
            return False
        waited_ms: int = (
            self.clock() - next(iter(queue.values())).arrived_ms
        )  # queues keep arrival order
        return waited_ms < 1000 * min(self.cfg.max_wait_s, self.cfg.max_linger_s)

    async def _within_budget(self, part: PartitionIndex, key: BatchKey, close: Close) -> Close:
        """The part of a close the budgets let go; the rest waits, or is dead-lettered."""
        queue = part.queued[key]
        verdict = self.costs.budget_verdict([queue[rid] for rid in close.request_ids], self.clock())
        refused = verdict.never + (
            verdict.over if self.settings.cost.over_budget == "deadletter" else []
        )
        if not refused and not verdict.over:
            return close
        sent = []
        for rid in refused:
            entry = self.ledger.entry(rid)
            assert entry is not None
            message = (
                "its estimated cost does not fit the daily budget of its tenant or the overall one"
            )
            sent.append(
                await self.delivery.fail(None, entry, records.BUDGET_EXCEEDED, None, message)
            )
        await self.delivery.settle(part, sent)
        held = len(verdict.over) if self.settings.cost.over_budget == "hold" else 0
        if held:
            log.debug("%s: %d requests held until the budget has room", key, held)
        admitted = set(verdict.admitted)
        ids = tuple(rid for rid in close.request_ids if rid in admitted)
        return Close(ids, close.reason, sum(queue[rid].size for rid in ids))

    def _observe(self) -> None:
        parts = self._parts.values()
        metrics.labelled(metrics.PENDING, EntryState.QUEUED).set(
            sum(sum(map(len, p.queued.values())) for p in parts)
        )
        metrics.labelled(metrics.PENDING, EntryState.BATCHED).set(sum(p.in_flight() for p in parts))
        counts: dict[BatchPhase, int] = {}
        oldest = None
        for part in parts:
            for batch in part.batches.values():
                counts[batch.phase] = counts.get(batch.phase, 0) + 1
                oldest = batch.closed_at if oldest is None else min(oldest, batch.closed_at)
        for phase in BatchPhase:
            if phase is not BatchPhase.EMITTED:
                metrics.labelled(metrics.BATCHES, phase).set(counts.get(phase, 0))
        metrics.OLDEST_BATCH_AGE.set(0 if oldest is None else (self.clock() - oldest) / 1000)


async def _bounded_gather(steps: Iterable[Awaitable[bool]], limit: int) -> list[bool]:
    """Run the steps with at most ``limit`` at a time; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(step: Awaitable[bool]) -> bool:
        async with gate:
            return await step

    return list(await asyncio.gather(*(run(step) for step in steps)))
