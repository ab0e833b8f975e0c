"""The deferred lane: requests → provider batches → one result or dead letter each.

All state lives in two changelog-backed tables, written only while the work agent
processes an event of the partition that owns the key (Faust writes a table change to the
changelog partition of the current event):

``pending``  request_id → one entry per request: the request, its batch key, the owning
             partition, and its state (queued → batched → done).
``batches``  batch_id → the batch record: OPEN → INTENT → SUBMITTED → ENDED → EMITTED
             (or FAILED / EXPIRED / CANCELLED before EMITTED).

Per-partition indexes (queue per batch key, members per batch) are derived in memory and
rebuilt from the tables after every rebalance. Provider I/O happens on tick events, one
partition at a time, so there is never more than one actor per batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector import metrics
from connector.config import Settings
from connector.lanes import records
from connector.lanes.assembly import MAX_PENDING, Close, Queued, must_escalate, plan_closes
from connector.lanes.outputs import Outputs
from connector.model import BatchKey
from connector.pricing import PriceTable
from connector.providers.base import (
    BatchHandle,
    BatchItem,
    BatchState,
    Outcome,
    OutcomeKind,
    Provider,
    ProviderLimits,
)
from connector.providers.exceptions import BatchNotFound, BatchRejected, ProviderError
from connector.providers.ids import assign_custom_ids
from connector.providers.split import split_batches

log = logging.getLogger(__name__)

# Entry states in the pending table.
QUEUED = "queued"
BATCHED = "batched"
DONE = "done"

# Batch states in the batches table.
INTENT = "INTENT"
SUBMITTED = "SUBMITTED"
ENDED = "ENDED"
FAILED = "FAILED"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"
EMITTED = "EMITTED"
# Batch-level errors that say "not now" rather than "never": resubmit the same requests later.
QUOTA_ERRORS = frozenset({"token_limit_exceeded", "rate_limit_exceeded", "RESOURCE_EXHAUSTED", "rate_limit_error"})
FINAL_PROVIDER_STATES = {
    BatchState.ENDED: ENDED,
    BatchState.FAILED: FAILED,
    BatchState.EXPIRED: EXPIRED,
    BatchState.CANCELLED: CANCELLED,
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Backoff:
    """In-memory retry/poll schedule of one batch; losing it on restart only costs a call."""

    due_ms: int = 0
    delay_s: float = 0.0

    def push(self, now: int, initial_s: float, max_s: float, hint_s: float | None = None) -> None:
        self.delay_s = min(max_s, max(initial_s, self.delay_s * 2))
        wait = hint_s if hint_s is not None else self.delay_s * random.uniform(0.8, 1.2)
        self.due_ms = now + int(wait * 1000)


@dataclass
class _Partition:
    """What this worker derives from the tables for one partition it owns."""

    queued: dict[str, dict[str, Queued]] = field(default_factory=dict)  # batch key → rid → ref
    queued_bytes: dict[str, int] = field(default_factory=dict)  # batch key → sum of sizes
    members: dict[str, dict[str, str]] = field(default_factory=dict)  # batch id → custom id → rid
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch id → record (not EMITTED)
    done: deque[tuple[int, str]] = field(default_factory=deque)  # (done at, rid), oldest first
    emitted: deque[tuple[int, str]] = field(default_factory=deque)  # (emitted at, batch id)
    deadlines: dict[str, int] = field(default_factory=dict)  # rid → deadline, live entries only

    def live(self) -> int:
        return sum(len(q) for q in self.queued.values()) + sum(len(m) for m in self.members.values())


class DeferredLane:
    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        outputs: Outputs,
        prices: PriceTable,
        pending: Any,
        batches: Any,
        flush: Callable[[], Any],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.cfg = settings.batching
        self.providers = providers
        self.out = outputs
        self.prices = prices
        self.pending = pending
        self.batches = batches
        self._flush = flush
        self.clock = clock
        self._parts: dict[int, _Partition] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._fresh: set[str] = set()  # intents created by this process, never sent yet
        self._cancel_sent: set[str] = set()
        self.dedupe_window_ms = int(settings.dedupe_window_s * 1000)

    # ---------------------------------------------------------------- indexes
    def reset(self) -> None:
        """Forget every derived index (on rebalance): they are rebuilt from the tables."""
        self._parts.clear()

    def poke(self, provider_batch_id: str) -> bool:
        """Poll this provider batch on the next tick (a webhook said it changed)."""
        for part in self._parts.values():
            for batch_id, batch in part.batches.items():
                if (batch.get("handle") or {}).get("batch_id") == provider_batch_id:
                    self._backoff[batch_id] = _Backoff()
                    return True
        return False

    def live_requests(self) -> int:
        return sum(p.live() for p in self._parts.values())

    def _part(self, p: int) -> _Partition:
        part = self._parts.get(p)
        if part is None:
            part = self._parts[p] = self._rebuild(p)
        return part

    def _rebuild(self, p: int) -> _Partition:
        part = _Partition()
        for batch_id, batch in list(self.batches.items()):
            if batch and batch.get("p") == p:
                if batch["state"] == EMITTED:
                    part.emitted.append((batch.get("emitted_at") or 0, batch_id))
                else:
                    part.batches[batch_id] = batch
                    part.members.setdefault(batch_id, {})
        done = []
        for rid, entry in list(self.pending.items()):
            if not entry or entry.get("p") != p:
                continue
            if entry["state"] == QUEUED:
                self._index_queued(part, entry)
            elif entry["state"] == BATCHED and entry.get("batch") in part.batches:
                part.members[entry["batch"]][entry["cid"]] = rid
                if entry.get("deadline") is not None:
                    part.deadlines[rid] = entry["deadline"]
            else:
                done.append((entry.get("at", 0), rid))
        part.done.extend(sorted(done))
        part.emitted = deque(sorted(part.emitted))
        for queue in part.queued.values():
            ordered = sorted(queue.values(), key=lambda q: q.arrived_ms)
            queue.clear()
            queue.update((q.request_id, q) for q in ordered)
        log.info("partition %d: %d queued, %d batches in flight", p, sum(map(len, part.queued.values())), len(part.batches))
        return part

    @staticmethod
    def _index_queued(part: _Partition, entry: dict[str, Any]) -> None:
        ref = Queued(entry["rid"], entry["at"], entry["size"], entry.get("deadline"))
        part.queued.setdefault(entry["key"], {})[entry["rid"]] = ref
        part.queued_bytes[entry["key"]] = part.queued_bytes.get(entry["key"], 0) + ref.size
        if ref.deadline_ms is not None:
            part.deadlines[ref.request_id] = ref.deadline_ms

    # ---------------------------------------------------------------- requests
    async def on_request(self, entry: dict[str, Any], p: int) -> None:
        part = self._part(p)
        rid = entry["rid"]
        existing = self.pending.get(rid)
        if existing and existing.get("attempt", 1) >= entry["attempt"]:
            metrics.DUPLICATES.inc()
            return
        entry = dict(entry, p=p, state=QUEUED, at=self.clock())
        self.pending[rid] = entry
        self._index_queued(part, entry)
        metrics.REQUESTS_IN.labels("deferred").inc()
        await self._close_due(part, p, entry["key"], full_only=True)

    # ---------------------------------------------------------------- ticks
    async def on_tick(self, p: int) -> None:
        part = self._part(p)
        await self._escalate_due(part)
        for key in list(part.queued):
            await self._close_due(part, p, key, full_only=False)
        for batch_id in list(part.batches):
            batch = part.batches.get(batch_id)
            if batch is not None:
                await self._drive(part, batch)
        self._purge(part)
        self._observe()

    async def _escalate_due(self, part: _Partition) -> None:
        now = self.clock()
        for rid, deadline in list(part.deadlines.items()):
            if not must_escalate(deadline, now, self.cfg):
                continue
            entry = self.pending.get(rid)
            part.deadlines.pop(rid, None)
            if not entry or entry["state"] == DONE:
                continue
            await self.out.escalate(entry["req"])
            metrics.ESCALATIONS.inc()
            self._forget(part, entry)
            self._mark_done(part, entry, "escalated")

    async def _close_due(self, part: _Partition, p: int, key: str, *, full_only: bool, force: str | None = None) -> None:
        queue = part.queued.get(key)
        if not queue:
            self._drop_queue(part, key)
            return
        limits = self.providers[BatchKey.parse(key).provider].limits
        if full_only and not (
            len(queue) >= min(self.cfg.max_requests, limits.max_requests)
            or part.queued_bytes.get(key, 0) > min(self.cfg.max_bytes, limits.max_bytes)
        ):
            return  # the common arrival: nothing is full, no need to plan
        closes = plan_closes(
            list(queue.values()),
            now_ms=self.clock(),
            cfg=self.cfg,
            limit_requests=limits.max_requests,
            limit_bytes=limits.max_bytes,
            force=force,
        )
        for close in closes:
            if full_only and close.reason not in ("count", "bytes"):
                continue
            await self._open_valid_batches(part, p, key, close, limits)

    async def _open_valid_batches(self, part: _Partition, p: int, key: str, close: Close, limits: ProviderLimits) -> None:
        """The provider's own rules (envelope bytes included) have the last word on a close."""
        bk = BatchKey.parse(key)
        queue = part.queued[key]
        split = split_batches([_Sized(bk.model, bk.endpoint, queue[rid]) for rid in close.request_ids], limits)
        for rejection in split.rejected:
            entry = self.pending[rejection.request.ref.request_id]
            await self._fail(part, None, entry, records.OVERSIZE, None, rejection.reason)
        for batch in split.batches:
            ids = tuple(s.ref.request_id for s in batch)
            self._open_batch(part, p, key, Close(ids, close.reason, sum(s.size_bytes for s in batch)))

    def _open_batch(self, part: _Partition, p: int, key: str, close: Close) -> None:
        """Turn queued requests into a batch in INTENT: durable before any provider call."""
        bk = BatchKey.parse(key)
        batch_id = f"bb-{uuid.uuid4().hex[:24]}"
        cids = assign_custom_ids(close.request_ids)
        queue = part.queued[key]
        opened = min(queue[rid].arrived_ms for rid in close.request_ids)
        now = self.clock()
        batch = {
            "id": batch_id,
            "key": key,
            "provider": bk.provider,
            "model": bk.model,
            "endpoint": bk.endpoint,
            "p": p,
            "state": INTENT,
            "count": len(close.request_ids),
            "bytes": close.size,
            "reason": close.reason,
            "opened_at": opened,
            "closed_at": now,
            "handle": None,
        }
        self.batches[batch_id] = batch
        members = part.members.setdefault(batch_id, {})
        for cid, rid in cids.items():
            entry = self.pending[rid]
            self.pending[rid] = dict(entry, state=BATCHED, batch=batch_id, cid=cid)
            members[cid] = rid
            part.queued_bytes[key] -= queue.pop(rid).size
        if not queue:
            self._drop_queue(part, key)
        part.batches[batch_id] = batch
        self._fresh.add(batch_id)
        metrics.BATCH_TRANSITIONS.labels(bk.provider, INTENT).inc()
        log.info("batch %s: %d requests for %s closed by %s", batch_id, batch["count"], key, close.reason)

    # ---------------------------------------------------------------- batches
    def _due(self, batch_id: str) -> bool:
        backoff = self._backoff.get(batch_id)
        return backoff is None or backoff.due_ms <= self.clock()

    def _defer(self, batch_id: str, hint_s: float | None = None) -> None:
        backoff = self._backoff.setdefault(batch_id, _Backoff())
        backoff.push(self.clock(), self.settings.poll_initial_s, self.settings.poll_max_s, hint_s)

    async def _drive(self, part: _Partition, batch: dict[str, Any]) -> None:
        if not self._due(batch["id"]):
            return
        provider = self.providers[batch["provider"]]
        try:
            if batch["state"] == INTENT:
                await self._submit(part, batch, provider)
            elif batch["state"] == SUBMITTED:
                await self._poll(part, batch, provider)
            else:
                await self._emit(part, batch, provider)
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(batch["provider"], batch["state"]).inc()
            log.warning("batch %s (%s): %s; will retry", batch["id"], batch["state"], exc)
            self._defer(batch["id"], getattr(exc, "retry_after", None))

    async def _submit(self, part: _Partition, batch: dict[str, Any], provider: Provider) -> None:
        batch_id = batch["id"]
        tag = batch.get("tag") or batch_id
        handle = None
        if batch_id not in self._fresh:
            # A previous attempt (maybe by a worker that died) may have reached the provider.
            handle = await provider.find(
                tag, created_after=batch.get("intent_at", batch["closed_at"]) / 1000 - 60, expected_count=batch["count"]
            )
            if handle is not None and handle.batch_id in self._adopted(batch_id):
                # Anthropic batches carry no tag: never adopt one another batch already owns.
                handle = None
            if handle is not None:
                log.info("batch %s: reconciled with provider batch %s", batch_id, handle.batch_id)
        if handle is None:
            items = self._items(part, batch)
            # The INTENT record must be on the broker before the provider can hold a batch.
            await self._flush()
            self._fresh.discard(batch_id)
            try:
                handle = await provider.submit(tag, items)
            except BatchRejected as exc:
                await self._set_state(part, batch, FAILED, error_code=exc.code or "rejected", error_message=str(exc))
                return
        self._fresh.discard(batch_id)
        await self._set_state(
            part, batch, SUBMITTED, handle=_handle_dict(handle), submitted_at=self.clock(), error_code=None, error_message=None
        )
        self._backoff[batch_id] = _Backoff()
        self._defer(batch_id)

    def _adopted(self, except_batch: str) -> set[str]:
        return {
            (b.get("handle") or {}).get("batch_id")
            for part in self._parts.values()
            for batch_id, b in part.batches.items()
            if batch_id != except_batch and b.get("handle")
        }

    def _items(self, part: _Partition, batch: dict[str, Any]) -> list[BatchItem]:
        items = []
        for cid, rid in part.members.get(batch["id"], {}).items():
            req = self.pending[rid]["req"]
            items.append(BatchItem(custom_id=cid, model=req["model"], endpoint=req["endpoint"], body=json.loads(req["body"])))
        return items

    async def _poll(self, part: _Partition, batch: dict[str, Any], provider: Provider) -> None:
        handle = _handle(batch)
        try:
            status = await provider.poll(handle)
        except BatchNotFound as exc:
            await self._set_state(part, batch, FAILED, error_code="not_found", error_message=str(exc))
            await self._emit(part, batch, provider)
            return
        age_s = (self.clock() - (batch.get("submitted_at") or batch["closed_at"])) / 1000
        if not status.state.is_final:
            if age_s > self.settings.batch_timeout_s and batch["id"] not in self._cancel_sent:
                log.warning("batch %s stuck in %s for %.0fs: cancelling", batch["id"], status.provider_state, age_s)
                await provider.cancel(handle)
                self._cancel_sent.add(batch["id"])
            self._defer(batch["id"])
            return
        quota_retries = batch.get("quota_retries", 0)
        if status.state is BatchState.FAILED and status.error_code in QUOTA_ERRORS and quota_retries < self.cfg.max_quota_retries:
            # An enqueued-token quota clears as other batches finish: same requests, new tag, later.
            log.warning("batch %s: %s; resubmitting in %.0fs", batch["id"], status.error_code, self.cfg.quota_backoff_s)
            await self._set_state(
                part,
                batch,
                INTENT,
                tag=f"{batch['id']}-q{quota_retries + 1}",
                quota_retries=quota_retries + 1,
                handle=None,
                intent_at=self.clock(),
                error_code=status.error_code,
                error_message=status.error_message,
            )
            self._fresh.add(batch["id"])  # the new tag has never been sent
            self._backoff[batch["id"]] = _Backoff(due_ms=self.clock() + int(self.cfg.quota_backoff_s * 1000))
            return
        await self._set_state(
            part,
            batch,
            FINAL_PROVIDER_STATES[status.state],
            ended_at=self.clock(),
            provider_state=status.provider_state,
            error_code=status.error_code,
            error_message=status.error_message,
            succeeded=status.succeeded,
            failed=status.failed,
        )
        await self._emit(part, batch, provider)

    async def _emit(self, part: _Partition, batch: dict[str, Any], provider: Provider) -> None:
        """Stream the results out; each request is marked done as its event is produced."""
        members = part.members.get(batch["id"], {})
        succeeded = failed = 0
        if batch["state"] != FAILED and members:
            async for outcome in provider.results(_handle(batch)):
                entry = self._member(batch, members, outcome.custom_id)
                if entry is None:
                    continue  # already emitted before a restart, escalated, or not ours
                await self._deliver(part, batch, entry, outcome)
                succeeded += outcome.kind is OutcomeKind.SUCCEEDED
                failed += outcome.kind is not OutcomeKind.SUCCEEDED
        # Requests the provider returned nothing for go through the retry rules.
        reason = records.failure_class_for_batch(batch["state"])
        message = batch.get("error_message") or f"no result for this request in a {batch['state'].lower()} batch"
        for cid in list(members):
            entry = self._member(batch, members, cid)
            if entry is not None:
                await self._retry_or_fail(part, batch, entry, reason, batch.get("error_code"), message)
                failed += 1
        total = succeeded + failed
        if total >= self.cfg.systemic_min_requests and failed / total >= self.cfg.systemic_failure_ratio:
            metrics.SYSTEMIC_FAILURES.labels(batch["provider"]).inc()
            log.error(
                "batch %s (%s): %d of %d requests failed — a systemic problem (quota, model, credentials?)",
                batch["id"], batch["key"], failed, total,
            )
        await self._set_state(part, batch, EMITTED, emitted_at=self.clock(), succeeded=succeeded, failed=failed)

    def _member(self, batch: dict[str, Any], members: dict[str, str], cid: str) -> dict[str, Any] | None:
        """The live table entry behind a custom id of this batch; the table is the truth."""
        rid = members.get(cid)
        if rid is None:
            return None
        entry = self.pending.get(rid)
        if not entry or entry.get("state") != BATCHED or entry.get("batch") != batch["id"]:
            log.warning("batch %s: %s is no longer in flight here (%s); skipping it", batch["id"], rid, entry and entry.get("state"))
            members.pop(cid, None)
            return None
        return entry

    async def _deliver(self, part: _Partition, batch: dict[str, Any], entry: dict[str, Any], outcome: Outcome) -> None:
        req = entry["req"]
        if outcome.kind is OutcomeKind.SUCCEEDED:
            costs = self.prices.costs(req["provider"], req["model"], outcome.usage, batch=True)
            handle = batch.get("handle") or {}
            now = self.clock()
            record = records.result_record(
                req,
                outcome,
                lane="batch",
                costs=costs,
                now=now,
                batch_id=batch["id"],
                provider_batch_id=handle.get("batch_id"),
                submitted_at=batch.get("submitted_at"),
                completed_at=batch.get("ended_at"),
            )
            await self.out.result(record, req.get("reply_topic"))
            metrics.RESULTS.labels("batch", req["provider"]).inc()
            metrics.COST.labels(req["provider"], "batch").inc(costs.cost_usd)
            metrics.REALTIME_COST.labels(req["provider"]).inc(costs.realtime_cost_usd)
            metrics.LATENCY.labels("batch").observe(max(0, now - req["created_at"]) / 1000)
            self._forget(part, entry)
            self._mark_done(part, entry, "result")
        elif outcome.kind is OutcomeKind.RETRYABLE:
            await self._retry_or_fail(
                part, batch, entry, records.RETRIES_EXHAUSTED, outcome.error_code, outcome.error_message or "retryable failure"
            )
        else:
            await self._fail(part, batch, entry, records.PROVIDER_REJECTED, outcome.error_code, outcome.error_message or "rejected")

    async def _retry_or_fail(
        self, part: _Partition, batch: dict[str, Any], entry: dict[str, Any], error_class: str, code: str | None, message: str
    ) -> None:
        req = entry["req"]
        attempt = int(req.get("attempt") or 1)
        if attempt < self.cfg.max_attempts:
            await self.out.retry(dict(req, attempt=attempt + 1))
            metrics.RETRIES.labels(req["provider"]).inc()
            self._forget(part, entry)
            self._mark_done(part, entry, "retried")
        else:
            await self._fail(part, batch, entry, error_class, code, f"{message} (after {attempt} attempts)")

    async def _fail(
        self, part: _Partition, batch: dict[str, Any] | None, entry: dict[str, Any], error_class: str, code: str | None, message: str
    ) -> None:
        handle = (batch or {}).get("handle") or {}
        source = entry.get("src")
        failure = records.failure_record(
            error_class=error_class,
            message=message,
            now=self.clock(),
            request=entry["req"],
            error_code=code,
            batch_id=batch["id"] if batch else None,
            provider_batch_id=handle.get("batch_id"),
            source=tuple(source) if source else None,
        )
        await self.out.failure(failure)
        metrics.FAILURES.labels(error_class).inc()
        self._forget(part, entry)
        self._mark_done(part, entry, "deadletter")

    # ---------------------------------------------------------------- bookkeeping
    def _forget(self, part: _Partition, entry: dict[str, Any]) -> None:
        rid = entry["rid"]
        part.deadlines.pop(rid, None)
        if entry["state"] == QUEUED:
            queue = part.queued.get(entry["key"], {})
            ref = queue.pop(rid, None)
            if ref is not None:
                part.queued_bytes[entry["key"]] -= ref.size
            if not queue:
                self._drop_queue(part, entry["key"])
        elif entry["state"] == BATCHED:
            part.members.get(entry.get("batch"), {}).pop(entry.get("cid"), None)

    @staticmethod
    def _drop_queue(part: _Partition, key: str) -> None:
        part.queued.pop(key, None)
        part.queued_bytes.pop(key, None)

    def _mark_done(self, part: _Partition, entry: dict[str, Any], how: str) -> None:
        now = self.clock()
        self.pending[entry["rid"]] = {
            "rid": entry["rid"],
            "attempt": entry["attempt"],
            "key": entry["key"],
            "p": entry["p"],
            "state": DONE,
            "how": how,
            "at": now,
        }
        part.done.append((now, entry["rid"]))

    async def _set_state(self, part: _Partition, batch: dict[str, Any], state: str, **fields: Any) -> None:
        previous = batch["state"]
        batch.update(fields, state=state)
        self.batches[batch["id"]] = dict(batch)
        metrics.BATCH_TRANSITIONS.labels(batch["provider"], state).inc()
        extra = {"provider_state": batch.get("provider_state")}
        if state in (ENDED, EXPIRED, CANCELLED, FAILED, EMITTED):
            extra.update(succeeded=batch.get("succeeded"), failed=batch.get("failed"))
        await self.out.batch_event(records.batch_event(batch, state=state, previous=previous, now=self.clock(), **extra))
        if state == EMITTED:
            part.batches.pop(batch["id"], None)
            part.members.pop(batch["id"], None)
            part.emitted.append((self.clock(), batch["id"]))
            self._backoff.pop(batch["id"], None)
            self._cancel_sent.discard(batch["id"])
        log.info("batch %s: %s → %s", batch["id"], previous, state)

    def _purge(self, part: _Partition) -> None:
        """Drop done markers and emitted batches once replays can no longer need them."""
        horizon = self.clock() - self.dedupe_window_ms
        while part.done and part.done[0][0] < horizon:
            _, rid = part.done.popleft()
            entry = self.pending.get(rid)
            if entry and entry["state"] == DONE and entry["at"] < horizon:
                del self.pending[rid]
        while part.emitted and part.emitted[0][0] < horizon:
            _, batch_id = part.emitted.popleft()
            if self.batches.get(batch_id):
                del self.batches[batch_id]

    def _observe(self) -> None:
        queued = sum(sum(len(q) for q in p.queued.values()) for p in self._parts.values())
        in_flight = sum(sum(len(m) for m in p.members.values()) for p in self._parts.values())
        metrics.PENDING.labels(QUEUED).set(queued)
        metrics.PENDING.labels(BATCHED).set(in_flight)
        counts: dict[str, int] = {}
        oldest = None
        for part in self._parts.values():
            for batch in part.batches.values():
                counts[batch["state"]] = counts.get(batch["state"], 0) + 1
                oldest = batch["closed_at"] if oldest is None else min(oldest, batch["closed_at"])
        for state in (INTENT, SUBMITTED, ENDED, FAILED, EXPIRED, CANCELLED):
            metrics.BATCHES.labels(state).set(counts.get(state, 0))
        metrics.OLDEST_BATCH_AGE.set(0 if oldest is None else (self.clock() - oldest) / 1000)

    async def wait_for_room(self) -> None:
        """Intake's side of back-pressure: stop reading the input while this worker is full.

        Only a brake (requests already on the work topic still arrive); ``make_room`` is
        what enforces the bound.
        """
        # The live count is derived from the indexes; polling it beats signalling every change.
        while self.live_requests() >= self.settings.max_pending_requests:  # noqa: ASYNC110
            await asyncio.sleep(self.settings.tick_interval_s)

    async def make_room(self, p: int) -> None:
        """Back-pressure: hold this request event until the worker has room for it.

        While ``max_pending_requests`` are live, the work agent of partition ``p`` closes
        what it has queued and drives its own batches (inside the current event, so table
        writes stay on ``p``) instead of taking more; the backlog waits on the broker.
        Memory is bounded by configuration, not by the backlog.
        """
        while self.live_requests() >= self.settings.max_pending_requests:
            part = self._part(p)
            for key in list(part.queued):
                await self._close_due(part, p, key, full_only=False, force=MAX_PENDING)
            await self.on_tick(p)
            if self.live_requests() < self.settings.max_pending_requests:
                return
            await asyncio.sleep(self.settings.tick_interval_s)


@dataclass(frozen=True, slots=True)
class _Sized:
    """A queued request as the provider splitter sees it."""

    model: str
    endpoint: str
    ref: Queued

    @property
    def size_bytes(self) -> int:
        return self.ref.size


def _handle_dict(handle: BatchHandle) -> dict[str, Any]:
    return {
        "provider": handle.provider,
        "batch_id": handle.batch_id,
        "tag": handle.tag,
        "created_at": handle.created_at,
        "extra": dict(handle.extra),
    }


def _handle(batch: dict[str, Any]) -> BatchHandle:
    h = batch["handle"]
    return BatchHandle(h["provider"], h["batch_id"], h["tag"], h.get("created_at"), dict(h.get("extra") or {}))
