"""The batch state machine: INTENT → SUBMITTED → ENDED → EMITTED, one provider call at a time.

A batch is durable in INTENT before any provider call. Whoever drives it after a restart
or a rebalance first asks the provider whether an earlier attempt got through (``find``)
and only then submits. Polling backs off exponentially with jitter; a webhook can bring
the next poll forward. Emission streams the results and marks each request done.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from connector import metrics
from connector.config import Settings
from connector.lanes import records
from connector.lanes.assembly import Close, Queued
from connector.lanes.delivery import Delivery
from connector.lanes.index import PartitionIndex
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.lanes.outputs import Outputs
from connector.model import BatchKey
from connector.providers.base import BatchItem, BatchState, Provider, ProviderLimits
from connector.providers.exceptions import BatchNotFound, BatchRejected, ProviderError
from connector.providers.ids import assign_custom_ids
from connector.providers.split import split_batches

log = logging.getLogger(__name__)

# Batch-level errors that say "not now" rather than "never": resubmit the same requests later.
QUOTA_ERRORS = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "RESOURCE_EXHAUSTED", "rate_limit_error"})


@dataclass
class Backoff:
    """In-memory retry/poll schedule of one batch; losing it on restart only costs a call."""

    due_ms: int = 0
    delay_s: float = 0.0

    def push(self, now: int, initial_s: float, max_s: float, hint_s: float | None = None) -> None:
        """Schedule the next call: exponential with jitter, or the provider's hint."""
        self.delay_s = min(max_s, max(initial_s, self.delay_s * 2))
        wait = hint_s if hint_s is not None else self.delay_s * random.uniform(0.8, 1.2)
        self.due_ms = now + int(wait * 1000)


@dataclass(frozen=True, slots=True)
class _Sized:
    """A queued request as the provider splitter sees it."""

    model: str
    endpoint: str
    ref: Queued

    @property
    def size_bytes(self) -> int:
        return self.ref.size


class BatchMachine:
    """Opens batches from closes and drives each one through its phases."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        providers: dict[str, Provider],
        outputs: Outputs,
        delivery: Delivery,
        flush: Callable[[], Any],
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.cfg = settings.batching
        self.ledger = ledger
        self.providers = providers
        self.out = outputs
        self.delivery = delivery
        self._flush = flush
        self.clock = clock
        self._backoff: dict[str, Backoff] = {}
        self._fresh: set[str] = set()  # intents created by this process, never sent yet
        self._cancel_sent: set[str] = set()

    # ---------------------------------------------------------------- opening
    async def open(self, index: PartitionIndex, partition: int, key: BatchKey, close: Close, limits: ProviderLimits) -> None:
        """Turn a close into batches: the provider's own rules (envelopes included) have the last word."""
        queue = index.queued[key]
        split = split_batches([_Sized(key.model, key.endpoint, queue[rid]) for rid in close.request_ids], limits)
        for rejection in split.rejected:
            entry = self.ledger.entry(rejection.request.ref.request_id)
            assert entry is not None
            await self.delivery.fail(index, None, entry, records.OVERSIZE, None, rejection.reason)
        for sized in split.batches:
            ids = tuple(s.ref.request_id for s in sized)
            self._open_one(index, partition, key, Close(ids, close.reason, sum(s.size_bytes for s in sized)))

    def _open_one(self, index: PartitionIndex, partition: int, key: BatchKey, close: Close) -> None:
        """Queued requests become one batch in INTENT: durable before any provider call."""
        queue = index.queued[key]
        now = self.clock()
        batch = BatchRecord(
            batch_id=f"bb-{uuid.uuid4().hex[:24]}",
            batch_key=key,
            partition=partition,
            phase=BatchPhase.INTENT,
            count=len(close.request_ids),
            bytes=close.size,
            close_reason=close.reason,
            opened_at=min(queue[rid].arrived_ms for rid in close.request_ids),
            closed_at=now,
        )
        self.ledger.put_batch(batch)
        index.add_batch(batch)
        for cid, rid in assign_custom_ids(close.request_ids).items():
            entry = self.ledger.entry(rid)
            assert entry is not None
            index.take_queued(key, rid)
            member = entry.batched(batch.batch_id, cid)
            self.ledger.put_entry(member)
            index.add_member(member)
        self._fresh.add(batch.batch_id)
        metrics.BATCH_TRANSITIONS.labels(key.provider, BatchPhase.INTENT).inc()
        log.info("batch %s: %d requests for %s closed by %s", batch.batch_id, batch.count, key, close.reason)

    # ---------------------------------------------------------------- driving
    def poke(self, provider_batch_id: str, batches: Iterable[BatchRecord]) -> bool:
        """Poll this provider batch on the next tick (a webhook said it changed)."""
        for batch in batches:
            if batch.handle and batch.handle.batch_id == provider_batch_id:
                self._backoff[batch.batch_id] = Backoff()
                return True
        return False

    def _due(self, batch_id: str) -> bool:
        backoff = self._backoff.get(batch_id)
        return backoff is None or backoff.due_ms <= self.clock()

    def _defer(self, batch_id: str, hint_s: float | None = None) -> None:
        backoff = self._backoff.setdefault(batch_id, Backoff())
        backoff.push(self.clock(), self.settings.poll_initial_s, self.settings.poll_max_s, hint_s)

    async def drive(self, index: PartitionIndex, batch: BatchRecord) -> None:
        """One step for a batch whose next call is due: submit, poll or emit."""
        if not self._due(batch.batch_id):
            return
        provider = self.providers[batch.provider]
        try:
            if batch.phase is BatchPhase.INTENT:
                await self._submit(index, batch, provider)
            elif batch.phase is BatchPhase.SUBMITTED:
                await self._poll(index, batch, provider)
            else:
                await self._emit(index, batch, provider)
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(batch.provider, batch.phase).inc()
            log.warning("batch %s (%s): %s; will retry", batch.batch_id, batch.phase, exc)
            self._defer(batch.batch_id, getattr(exc, "retry_after", None))

    async def _submit(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> None:
        handle = None
        if batch.batch_id not in self._fresh:
            # A previous attempt (maybe by a worker that died) may have reached the provider.
            since = (batch.intent_at or batch.closed_at) / 1000 - 60
            handle = await provider.find(batch.current_tag, created_after=since, expected_count=batch.count)
            if handle is not None and handle.batch_id in self._adopted(index, batch.batch_id):
                # Anthropic batches carry no tag: never adopt one another batch already owns.
                handle = None
            if handle is not None:
                log.info("batch %s: reconciled with provider batch %s", batch.batch_id, handle.batch_id)
        if handle is None:
            items = self._items(index, batch)
            # The INTENT record must be on the broker before the provider can hold a batch.
            await self._flush()
            self._fresh.discard(batch.batch_id)
            try:
                handle = await provider.submit(batch.current_tag, items)
            except BatchRejected as exc:
                await self.set_phase(index, batch, BatchPhase.FAILED, error_code=exc.code or "rejected", error_message=str(exc))
                return
        self._fresh.discard(batch.batch_id)
        await self.set_phase(
            index, batch, BatchPhase.SUBMITTED, handle=handle, submitted_at=self.clock(), error_code=None, error_message=None
        )
        self._backoff[batch.batch_id] = Backoff()
        self._defer(batch.batch_id)

    @staticmethod
    def _adopted(index: PartitionIndex, except_batch: str) -> set[str]:
        return {b.handle.batch_id for bid, b in index.batches.items() if bid != except_batch and b.handle}

    def _items(self, index: PartitionIndex, batch: BatchRecord) -> list[BatchItem]:
        items = []
        for cid, rid in index.members.get(batch.batch_id, {}).items():
            entry = self.ledger.entry(rid)
            assert entry is not None and entry.request is not None
            req = entry.request
            items.append(BatchItem(custom_id=cid, model=req["model"], endpoint=req["endpoint"], body=json.loads(req["body"])))
        return items

    async def _poll(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> None:
        assert batch.handle is not None
        try:
            status = await provider.poll(batch.handle)
        except BatchNotFound as exc:
            await self.set_phase(index, batch, BatchPhase.FAILED, error_code="not_found", error_message=str(exc))
            await self._emit(index, batch, provider)
            return
        age_s = (self.clock() - (batch.submitted_at or batch.closed_at)) / 1000
        if not status.state.is_final:
            if age_s > self.settings.batch_timeout_s and batch.batch_id not in self._cancel_sent:
                log.warning("batch %s stuck in %s for %.0fs: cancelling", batch.batch_id, status.provider_state, age_s)
                await provider.cancel(batch.handle)
                self._cancel_sent.add(batch.batch_id)
            self._defer(batch.batch_id)
            return
        if (
            status.state is BatchState.FAILED
            and status.error_code in QUOTA_ERRORS
            and batch.quota_retries < self.cfg.max_quota_retries
        ):
            await self._requeue_for_quota(index, batch, status.error_code, status.error_message)
            return
        await self.set_phase(
            index,
            batch,
            BatchPhase.after_provider(status.state),
            ended_at=self.clock(),
            provider_state=status.provider_state,
            error_code=status.error_code,
            error_message=status.error_message,
            succeeded=status.succeeded,
            failed=status.failed,
        )
        await self._emit(index, batch, provider)

    async def _requeue_for_quota(self, index: PartitionIndex, batch: BatchRecord, code: str | None, message: str | None) -> None:
        """An enqueued-token quota clears as other batches finish: same requests, new tag, later."""
        log.warning("batch %s: %s; resubmitting in %.0fs", batch.batch_id, code, self.cfg.quota_backoff_s)
        retries = batch.quota_retries + 1
        await self.set_phase(
            index,
            batch,
            BatchPhase.INTENT,
            tag=f"{batch.batch_id}-q{retries}",
            quota_retries=retries,
            handle=None,
            intent_at=self.clock(),
            error_code=code,
            error_message=message,
        )
        self._fresh.add(batch.batch_id)  # the new tag has never been sent
        self._backoff[batch.batch_id] = Backoff(due_ms=self.clock() + int(self.cfg.quota_backoff_s * 1000))

    async def _emit(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> None:
        """Stream the results out; each request is marked done as its event is produced."""
        members = index.members.get(batch.batch_id, {})
        succeeded = failed = 0
        if batch.phase is not BatchPhase.FAILED and members:
            assert batch.handle is not None
            async for outcome in provider.results(batch.handle):
                entry = self._member(batch, members, outcome.custom_id)
                if entry is None:
                    continue  # already emitted before a restart, escalated, or not ours
                if await self.delivery.outcome(index, batch, entry, outcome):
                    succeeded += 1
                else:
                    failed += 1
        # Requests the provider returned nothing for go through the retry rules.
        reason = records.failure_class_for_batch(batch.phase)
        message = batch.error_message or f"no result for this request in a {batch.phase.lower()} batch"
        for cid in list(members):
            entry = self._member(batch, members, cid)
            if entry is not None:
                await self.delivery.retry_or_fail(index, batch, entry, reason, batch.error_code, message)
                failed += 1
        self._report_systemic(batch, succeeded, failed)
        await self.set_phase(index, batch, BatchPhase.EMITTED, emitted_at=self.clock(), succeeded=succeeded, failed=failed)

    def _report_systemic(self, batch: BatchRecord, succeeded: int, failed: int) -> None:
        total = succeeded + failed
        if total >= self.cfg.systemic_min_requests and failed / total >= self.cfg.systemic_failure_ratio:
            metrics.SYSTEMIC_FAILURES.labels(batch.provider).inc()
            log.error(
                "batch %s (%s): %d of %d requests failed — a systemic problem (quota, model, credentials?)",
                batch.batch_id,
                batch.batch_key,
                failed,
                total,
            )

    def _member(self, batch: BatchRecord, members: dict[str, str], cid: str) -> PendingEntry | None:
        """The live table entry behind a custom id of this batch; the table is the truth."""
        rid = members.get(cid)
        if rid is None:
            return None
        entry = self.ledger.entry(rid)
        if entry is None or entry.state is not EntryState.BATCHED or entry.batch_id != batch.batch_id:
            state = entry.state if entry else None
            log.warning("batch %s: %s is no longer in flight here (%s); skipping it", batch.batch_id, rid, state)
            members.pop(cid, None)
            return None
        return entry

    async def set_phase(self, index: PartitionIndex, batch: BatchRecord, phase: BatchPhase, **changes: Any) -> None:
        """Move a batch to ``phase``: table first, then its lifecycle event."""
        previous = batch.phase
        for name, value in changes.items():
            setattr(batch, name, value)
        batch.phase = phase
        self.ledger.put_batch(batch)
        metrics.BATCH_TRANSITIONS.labels(batch.provider, phase).inc()
        counts = {}
        if phase.has_ended or phase is BatchPhase.EMITTED:
            counts = {"succeeded": batch.succeeded, "failed": batch.failed}
        event = records.batch_event(batch, previous=previous, now=self.clock(), **counts)
        await self.out.batch_event(event)
        if phase is BatchPhase.EMITTED:
            index.retire(batch, self.clock())
            self._backoff.pop(batch.batch_id, None)
            self._cancel_sent.discard(batch.batch_id)
        log.info("batch %s: %s → %s", batch.batch_id, previous, phase)
