"""The batch state machine: INTENT → SUBMITTED → ENDED → EMITTED, one provider call at a time.

A batch is durable in INTENT before any provider call. Whoever drives it after a restart,
a rebalance or a failed call first asks the provider whether an earlier attempt got
through (``find``) and only then submits. Polling backs off exponentially with jitter; a
webhook can bring the next poll forward. Emission streams the results a chunk per step
and marks each request done once its outcome is acknowledged.

Every step of every batch is isolated: whatever one batch raises, the others go on. A
batch whose steps keep failing backs off, and after ``max_batch_failures`` its requests
follow the retry rules with class ``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from connector import metrics
from connector.collector import fewer_collections
from connector.config import Settings
from connector.lanes import records
from connector.lanes.assembly import Close, Queued
from connector.lanes.cost_control import CostControl
from connector.lanes.delivery import Delivery, DeliveryFailed, Sent
from connector.lanes.index import Members, PartitionIndex
from connector.lanes.ledger import BatchPhase, BatchRecord, EntryState, Ledger, PendingEntry
from connector.lanes.outputs import Outputs
from connector.model import BatchKey
from connector.providers.base import (
    BatchItem,
    BatchState,
    BatchStatus,
    Outcome,
    Provider,
    ProviderLimits,
)
from connector.providers.exceptions import (
    BatchNotFound,
    BatchRejected,
    ProviderError,
    QuotaExceeded,
)
from connector.providers.ids import assign_custom_ids
from connector.providers.split import split_batches

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A batch the provider no longer knows is treated as lost only after this many 404s in a row.
NOT_FOUND_POLLS = 3
# One emission step stops sending after this long, so other batches and partitions get
# their turn (the other batch keys of its partition wait for the step to end).
EMIT_STEP_S = 0.25
# Outcomes read, looked up in the table and sent together within a step.
EMIT_SLICE = 256
# Members a closing or submitting batch reads (and writes) at a time: a 10,000-request batch
# read whole made ~1.3 million short-lived objects at once, and the worker's peak RSS grew
# with every such burst.
MEMBER_CHUNK = 1000


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


@dataclass
class _Emission:
    """An ended batch's result stream, read a chunk per step (it survives between ticks)."""

    stream: AsyncIterator[Outcome]
    succeeded: int = 0
    failed: int = 0
    exhausted: bool = False


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
        costs: CostControl,
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
        self._fresh: set[str] = set()  # intents of this process that no submit attempt has left yet
        self._cancel_sent: set[str] = set()
        self._not_found: dict[str, int] = {}
        self._emissions: dict[str, _Emission] = {}
        self.costs = costs
        # Every batch not yet EMITTED on this worker (admission counts them); set by the lane.
        self.peers: Callable[[], Iterable[BatchRecord]] = lambda: ()
        self._held: set[str] = set()  # batches waiting in INTENT (logged once)

    def reset(self) -> None:
        """Forget what this process knew about its batches (partitions were revoked or reassigned).

        Another worker may have driven them meanwhile: nothing may be assumed fresh.
        """
        self._fresh.clear()
        self._not_found.clear()
        self._held.clear()
        for emission in self._emissions.values():
            _close_quietly(emission.stream)
        self._emissions.clear()

    # ---------------------------------------------------------------- opening
    async def open(
        self,
        index: PartitionIndex,
        partition: int,
        key: BatchKey,
        close: Close,
        limits: ProviderLimits,
    ) -> None:
        """Turn a close into batches: the provider's own rules (envelopes included) have the last word.

        A primer batch (cost rules permitting) goes first and the rest waits for it; every
        batch is cut to the enqueued-token limit of its model, if one is set.
        """
        queue = index.queued[key]
        primer, primed, rest = self.costs.primer_split(
            key, [queue[rid] for rid in close.request_ids], self.clock()
        )
        rejected = []
        waits_for: list[str] = []
        for ids, is_primer, waits in (
            (primer, True, False),
            (primed, False, True),
            (rest, False, False),
        ):
            split = split_batches(
                [_Sized(key.model, key.endpoint, queue[rid]) for rid in ids], limits
            )
            for rejection in split.rejected:
                entry = self.ledger.entry(rejection.request.ref.request_id)
                assert entry is not None
                rejected.append(
                    await self.delivery.fail(None, entry, records.OVERSIZE, None, rejection.reason)
                )
            for sized in split.batches:
                start = 0
                for run in self.costs.token_runs(key, [s.size_bytes for s in sized]):
                    part = sized[start : start + run]
                    start += run
                    ids_ = tuple(s.ref.request_id for s in part)
                    batch = await self._open_one(
                        index,
                        partition,
                        key,
                        Close(ids_, close.reason, sum(s.size_bytes for s in part)),
                        primer=is_primer,
                        waits_for=list(waits_for) if waits and waits_for else None,
                    )
                    if is_primer:
                        waits_for.append(batch.batch_id)
        await self.delivery.settle(index, rejected)

    async def _open_one(
        self,
        index: PartitionIndex,
        partition: int,
        key: BatchKey,
        close: Close,
        *,
        primer: bool = False,
        waits_for: list[str] | None = None,
    ) -> BatchRecord:
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
            primer=primer,
            waits_for=waits_for,
        )
        self.costs.opened(batch, [queue[rid] for rid in close.request_ids])
        self.ledger.put_batch(batch)
        index.add_batch(batch)
        # The members' entries in one read and one write per chunk (a record batch to the
        # changelog, after the INTENT record): per-member reads and writes were 10 % of a
        # worker's CPU. A crash between chunks leaves the rest QUEUED, as before any.
        for chunk in _slices(list(assign_custom_ids(close.request_ids).items()), MEMBER_CHUNK):
            members = []
            for (cid, rid), entry in zip(
                chunk, self.ledger.entries_of([rid for _, rid in chunk]), strict=True
            ):
                assert entry is not None
                index.take_queued(key, rid)
                member = entry.batched(batch.batch_id, cid)
                members.append(member)
                index.add_member(member)
            await self.ledger.put_entries(members)
        self._fresh.add(batch.batch_id)
        metrics.labelled(metrics.BATCH_TRANSITIONS, key.provider, BatchPhase.INTENT).inc()
        log.info(
            "batch %s: %d requests for %s closed by %s%s",
            batch.batch_id,
            batch.count,
            key,
            close.reason,
            " (primer)" if primer else "",
        )
        return batch

    # ---------------------------------------------------------------- driving
    def poke(self, provider_batch_id: str, batches: Iterable[BatchRecord]) -> bool:
        """Poll this provider batch on the next tick (a webhook said it changed)."""
        for batch in batches:
            if batch.handle and batch.handle.batch_id == provider_batch_id:
                self._backoff[batch.batch_id] = Backoff()
                return True
        return False

    def due(self, batch_id: str) -> bool:
        """Whether the batch's next provider call is due (its backoff has passed)."""
        backoff = self._backoff.get(batch_id)
        return backoff is None or backoff.due_ms <= self.clock()

    def _defer(self, batch_id: str, hint_s: float | None = None) -> None:
        backoff = self._backoff.setdefault(batch_id, Backoff())
        backoff.push(self.clock(), self.settings.poll_initial_s, self.settings.poll_max_s, hint_s)

    async def drive(self, index: PartitionIndex, batch: BatchRecord) -> bool:
        """One step for a batch whose next call is due; True if it has more to do right away.

        Never raises: a failed step backs off, and repeated unexpected failures end the
        batch through the retry rules.
        """
        if not self.due(batch.batch_id):
            return False
        provider = self.providers[batch.provider]
        try:
            more = await self._step(index, batch, provider)
        except ProviderError as exc:
            metrics.labelled(metrics.PROVIDER_ERRORS, batch.provider, batch.phase).inc()
            log.warning("batch %s (%s): %s; will retry", batch.batch_id, batch.phase, exc)
            self._defer(batch.batch_id, getattr(exc, "retry_after", None))
            return False
        except DeliveryFailed as exc:
            log.warning("batch %s (%s): %s", batch.batch_id, batch.phase, exc)
            self._defer(batch.batch_id)
            return False
        except Exception as exc:  # noqa: BLE001 - one batch's bug must not stop the others
            await self._step_failed(index, batch, exc)
            return False
        if batch.failures and batch.batch_id in index.batches:
            batch.failures, batch.last_error = 0, None
            self.ledger.put_batch(batch)
        return more

    async def _step(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> bool:
        if batch.phase is BatchPhase.INTENT:
            await self._submit(index, batch, provider)
            return False
        if batch.phase is BatchPhase.SUBMITTED:
            return await self._poll(index, batch, provider)
        try:
            return await self._emit(index, batch, provider)
        except BaseException:
            # The outcomes a failed step took from the result stream went with it (a
            # cancelled task's too): the next step reads the results again from the start,
            # skipping the members already done, instead of retrying the lost ones.
            self._drop_emission(batch.batch_id)
            raise

    async def _step_failed(self, index: PartitionIndex, batch: BatchRecord, exc: Exception) -> None:
        batch.failures += 1
        batch.last_error = records.exception_message(exc)
        log.error(
            "batch %s (%s): step failed (%d of %d): %s",
            batch.batch_id,
            batch.phase,
            batch.failures,
            self.cfg.max_batch_failures,
            batch.last_error,
            exc_info=exc,
        )
        metrics.labelled(metrics.PROVIDER_ERRORS, batch.provider, "internal").inc()
        with contextlib.suppress(Exception):
            self.ledger.put_batch(batch)
        if batch.failures < self.cfg.max_batch_failures:
            self._defer(batch.batch_id)
            return
        try:
            await self._give_up(index, batch)
        except Exception as final:  # noqa: BLE001 - the broker may be down: try again later
            log.error(
                "batch %s: could not end it: %s", batch.batch_id, records.exception_message(final)
            )
            self._defer(batch.batch_id)

    async def _give_up(self, index: PartitionIndex, batch: BatchRecord) -> None:
        """End a batch whose steps keep failing: its requests follow the retry rules."""
        log.error(
            "batch %s: giving up after %d failures; its requests follow the retry rules",
            batch.batch_id,
            batch.failures,
        )
        if batch.handle is not None and not batch.phase.has_ended:
            with contextlib.suppress(Exception):
                await self.providers[batch.provider].cancel(batch.handle)  # stop paying for it
        message = f"the connector could not process this request's batch: {batch.last_error}"
        await self._retry_members(index, batch, records.INTERNAL_ERROR, None, message)
        await self.set_phase(
            index,
            batch,
            BatchPhase.EMITTED,
            emitted_at=self.clock(),
            error_code="internal_error",
            error_message=batch.last_error,
        )

    # ---------------------------------------------------------------- submit
    def _may_submit(self, index: PartitionIndex, batch: BatchRecord) -> bool:
        """Whether an INTENT batch may go now: its primer ended, its tokens fit the limit."""
        primer = next(
            (
                w
                for w in batch.waits_for or ()
                if w in index.batches and not index.batches[w].phase.has_ended
            ),
            None,
        )
        why = f"waits for primer batch {primer}" if primer else None
        if why is None and not self.costs.admits(batch, self.peers()):
            why = "waits for enqueued tokens of earlier batches to clear"
        if why is None:
            self._held.discard(batch.batch_id)
            return True
        if batch.batch_id not in self._held:
            self._held.add(batch.batch_id)
            log.info("batch %s %s", batch.batch_id, why)
        return False

    async def _submit(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> None:
        if not self._may_submit(index, batch):
            return  # asked again at the next tick
        handle = None
        if batch.batch_id not in self._fresh:
            # A previous attempt (maybe by a worker that died) may have reached the provider.
            since = (batch.attempted_at or batch.intent_at or batch.closed_at) / 1000 - 60
            handle = await provider.find(
                batch.current_tag,
                created_after=since,
                expected_count=batch.count,
                custom_ids=index.submitted_ids(batch),
            )
            if handle is not None and handle.batch_id in self._adopted(index, batch.batch_id):
                handle = None  # never adopt a provider batch another connector batch owns
            if handle is not None:
                log.info(
                    "batch %s: reconciled with provider batch %s", batch.batch_id, handle.batch_id
                )
        if handle is None:
            items = self._items(index, batch)
            if not items:
                await self.set_phase(
                    index, batch, BatchPhase.EMITTED, emitted_at=self.clock(), succeeded=0, failed=0
                )
                return
            # What this attempt carries, durable before the provider can hold a batch.
            batch.count, batch.attempted_at = len(items), self.clock()
            self.ledger.put_batch(batch)
            await self._flush()
            self._fresh.discard(batch.batch_id)
            try:
                handle = await provider.submit(batch.current_tag, items)
            except BatchRejected as exc:
                await self.set_phase(
                    index,
                    batch,
                    BatchPhase.FAILED,
                    error_code=exc.code or "rejected",
                    error_message=exc.message,
                    refused=True,
                )
                return
            except QuotaExceeded as exc:
                # Refused before it existed: wait for the quota like a quota-failed batch,
                # or for as long as the provider asked (Retry-After), if it said.
                wait_s = self.cfg.quota_backoff_s if exc.retry_after is None else exc.retry_after
                log.warning("batch %s: %s; trying again in %.0fs", batch.batch_id, exc, wait_s)
                self._backoff[batch.batch_id] = Backoff(due_ms=self.clock() + int(wait_s * 1000))
                return
        self._fresh.discard(batch.batch_id)
        await self.set_phase(
            index,
            batch,
            BatchPhase.SUBMITTED,
            handle=handle,
            submitted_at=self.clock(),
            error_code=None,
            error_message=None,
        )
        self._backoff[batch.batch_id] = Backoff()
        self._defer(batch.batch_id)

    @staticmethod
    def _adopted(index: PartitionIndex, except_batch: str) -> set[str]:
        return {
            b.handle.batch_id
            for bid, b in index.batches.items()
            if bid != except_batch and b.handle
        }

    def _items(self, index: PartitionIndex, batch: BatchRecord) -> list[BatchItem]:
        items = []
        profiles = []
        pairs = list(index.members.get(batch.batch_id, Members()).pairs())
        for chunk in _slices(pairs, MEMBER_CHUNK):  # one multi-get per chunk
            entries = self.ledger.entries_of([rid for _, rid in chunk])
            for (cid, _), entry in zip(chunk, entries, strict=True):
                assert entry is not None and entry.request is not None
                req = entry.request
                items.append(
                    BatchItem(
                        custom_id=cid,
                        model=req["model"],
                        endpoint=req["endpoint"],
                        body=json.loads(req["body"]),
                    )
                )
                profiles.append(entry.profile)
        return self.costs.cache_hints(batch, items, profiles)

    # ---------------------------------------------------------------- poll
    async def _poll(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> bool:
        assert batch.handle is not None
        try:
            status = await provider.poll(batch.handle)
        except BatchNotFound as exc:
            misses = self._not_found[batch.batch_id] = self._not_found.get(batch.batch_id, 0) + 1
            if misses < NOT_FOUND_POLLS:
                raise  # may be transient: poll again after the backoff
            await self.set_phase(
                index, batch, BatchPhase.FAILED, error_code="not_found", error_message=str(exc)
            )
            return True
        self._not_found.pop(batch.batch_id, None)
        if not status.state.is_final:
            await self._maybe_cancel_stuck(batch, status, provider)
            self._defer(batch.batch_id)
            return False
        if _quota_failure(status) and batch.quota_retries < self.cfg.max_quota_retries:
            await self._requeue_for_quota(index, batch, status.error_code, status.error_message)
            return False
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
        return True

    async def _maybe_cancel_stuck(
        self, batch: BatchRecord, status: BatchStatus, provider: Provider
    ) -> None:
        assert batch.handle is not None
        age_s = (self.clock() - (batch.submitted_at or batch.closed_at)) / 1000
        if age_s > self.settings.batch_timeout_s and batch.batch_id not in self._cancel_sent:
            log.warning(
                "batch %s stuck in %s for %.0fs: cancelling",
                batch.batch_id,
                status.provider_state,
                age_s,
            )
            await provider.cancel(batch.handle)
            self._cancel_sent.add(batch.batch_id)

    async def _requeue_for_quota(
        self, index: PartitionIndex, batch: BatchRecord, code: str | None, message: str | None
    ) -> None:
        """An enqueued-token quota clears as other batches finish: same requests, new tag, later."""
        log.warning(
            "batch %s: %s; resubmitting in %.0fs", batch.batch_id, code, self.cfg.quota_backoff_s
        )
        retries = batch.quota_retries + 1
        await self.set_phase(
            index,
            batch,
            BatchPhase.INTENT,
            tag=f"{batch.batch_id}-q{retries}",
            quota_retries=retries,
            handle=None,
            intent_at=self.clock(),
            attempted_at=None,
            error_code=code,
            error_message=message,
        )
        self._fresh.add(batch.batch_id)  # the new tag has never been sent
        self._backoff[batch.batch_id] = Backoff(
            due_ms=self.clock() + int(self.cfg.quota_backoff_s * 1000)
        )

    # ---------------------------------------------------------------- emit
    def _drop_emission(self, batch_id: str) -> None:
        emission = self._emissions.pop(batch_id, None)
        if emission is not None:
            _close_quietly(emission.stream)

    async def _emit(self, index: PartitionIndex, batch: BatchRecord, provider: Provider) -> bool:
        """Emit the next chunk of an ended batch's outcomes; True while more are left."""
        emission = self._emissions.get(batch.batch_id)
        if emission is None:
            if (
                batch.phase is BatchPhase.FAILED
                or not index.members.get(batch.batch_id)
                or batch.handle is None
            ):
                emission = _Emission(_no_outcomes(), exhausted=True)
            else:
                emission = _Emission(provider.results(batch.handle))
                # Each result's member is looked up twice; a failed step keeps the dict
                # until the emission that ends the batch (which retires its members).
                index.members[batch.batch_id].hold_lookups()
            self._emissions[batch.batch_id] = emission
        if not emission.exhausted:
            await self._emit_chunk(index, batch, emission)
            if not emission.exhausted:
                return True
        # Requests the provider returned nothing for go through the retry rules.
        reason = records.failure_class_for_batch(batch)
        message = (
            batch.error_message or f"no result for this request in a {batch.phase.lower()} batch"
        )
        emission.failed += await self._retry_members(
            index, batch, reason, batch.error_code, message
        )
        self._emissions.pop(batch.batch_id, None)
        index.members.get(batch.batch_id, Members()).release_lookups()
        self._report_systemic(batch, emission.succeeded, emission.failed)
        await self.set_phase(
            index,
            batch,
            BatchPhase.EMITTED,
            emitted_at=self.clock(),
            succeeded=emission.succeeded,
            failed=emission.failed,
        )
        return False

    async def _emit_chunk(
        self, index: PartitionIndex, batch: BatchRecord, emission: _Emission
    ) -> None:
        """Send the next outcomes of ``emission`` for up to ``EMIT_STEP_S``, then settle them.

        Outcomes are read a slice at a time and their requests' entries fetched in one read
        per slice; a request is sent once per step even if the provider lists it twice.
        """
        with fewer_collections():
            await self._emit_step(index, batch, emission)

    async def _emit_step(
        self, index: PartitionIndex, batch: BatchRecord, emission: _Emission
    ) -> None:
        members = index.members.get(batch.batch_id, Members())
        sent: list[Sent] = []
        seen: set[str] = set()
        stop_at = time.monotonic() + EMIT_STEP_S
        while len(sent) < self.settings.emit_chunk and time.monotonic() < stop_at:
            want = min(EMIT_SLICE, self.settings.emit_chunk - len(sent))
            outcomes = await _read_outcomes(emission, want, stop_at)
            fresh = []
            for outcome in outcomes:
                if outcome.custom_id not in seen:
                    seen.add(outcome.custom_id)
                    fresh.append(outcome)
            entries = self._members(batch, members, [o.custom_id for o in fresh])
            async with _collected(self.out):
                for outcome, entry in zip(fresh, entries, strict=True):
                    if entry is not None:
                        sent.append(await self._send_outcome(batch, entry, outcome))
            if emission.exhausted:
                break
        await self.delivery.settle(index, sent)
        emission.succeeded += sum(s.succeeded for s in sent)
        emission.failed += sum(not s.succeeded for s in sent)

    async def _send_outcome(
        self, batch: BatchRecord, entry: PendingEntry, outcome: Outcome
    ) -> Sent:
        try:
            return await self.delivery.outcome(batch, entry, outcome)
        except Exception as exc:  # noqa: BLE001 - this request's outcome, not the batch, is broken
            log.exception(
                "batch %s: outcome of %s could not be built", batch.batch_id, entry.request_id
            )
            return await self.delivery.fail(
                batch, entry, records.INTERNAL_ERROR, None, records.exception_message(exc)
            )

    async def _retry_members(
        self, index: PartitionIndex, batch: BatchRecord, reason: str, code: str | None, message: str
    ) -> int:
        """Every member still live goes through the retry rules; how many there were."""
        members = index.members.get(batch.batch_id, Members())
        sent = []
        for cid in list(members):
            entry = self._member(batch, members, cid)
            if entry is not None:
                sent.append(await self.delivery.retry_or_fail(batch, entry, reason, code, message))
        await self.delivery.settle(index, sent)
        return len(sent)

    def _report_systemic(self, batch: BatchRecord, succeeded: int, failed: int) -> None:
        total = succeeded + failed
        if (
            total >= self.cfg.systemic_min_requests
            and failed / total >= self.cfg.systemic_failure_ratio
        ):
            metrics.labelled(metrics.SYSTEMIC_FAILURES, batch.provider).inc()
            log.error(
                "batch %s (%s): %d of %d requests failed — a systemic problem (quota, model, credentials?)",
                batch.batch_id,
                batch.batch_key,
                failed,
                total,
            )

    def _member(self, batch: BatchRecord, members: Members, cid: str) -> PendingEntry | None:
        """The live table entry behind a custom id of this batch; the table is the truth."""
        return self._members(batch, members, [cid])[0]

    def _members(
        self, batch: BatchRecord, members: Members, cids: list[str]
    ) -> list[PendingEntry | None]:
        """:meth:`_member` of each custom id, their entries read from the table at once."""
        rids = [members.get(cid) for cid in cids]
        known = [rid for rid in rids if rid is not None]
        entries = iter(self.ledger.entries_of(known) if known else [])
        live: list[PendingEntry | None] = []
        for cid, rid in zip(cids, rids, strict=True):
            if rid is None:
                live.append(None)
                continue
            entry = next(entries)
            if (
                entry is None
                or entry.state is not EntryState.BATCHED
                or entry.batch_id != batch.batch_id
            ):
                state = entry.state if entry else None
                log.warning(
                    "batch %s: %s is no longer in flight here (%s); skipping it",
                    batch.batch_id,
                    rid,
                    state,
                )
                members.pop(cid, None)
                entry = None
            live.append(entry)
        return live

    async def set_phase(
        self, index: PartitionIndex, batch: BatchRecord, phase: BatchPhase, **changes: Any
    ) -> None:
        """Move a batch to ``phase``: table first, then its lifecycle event."""
        previous = batch.phase
        for name, value in changes.items():
            setattr(batch, name, value)
        batch.phase = phase
        self.ledger.put_batch(batch)
        metrics.labelled(metrics.BATCH_TRANSITIONS, batch.provider, phase).inc()
        counts = {}
        if phase.has_ended or phase is BatchPhase.EMITTED:
            counts = {"succeeded": batch.succeeded, "failed": batch.failed}
        _log_if_undelivered(
            await self.out.batch_event(
                records.batch_event(batch, previous=previous, now=self.clock(), **counts)
            )
        )
        if phase is BatchPhase.EMITTED:
            self.costs.finished(batch)
            self._held.discard(batch.batch_id)
            index.retire(batch, self.clock())
            self._backoff.pop(batch.batch_id, None)
            self._cancel_sent.discard(batch.batch_id)
            self._not_found.pop(batch.batch_id, None)
        log.info("batch %s: %s → %s", batch.batch_id, previous, phase)


def _slices(items: list[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in consecutive slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _quota_failure(status: BatchStatus) -> bool:
    """A batch the provider failed for a quota: "not now" rather than "never"."""
    return status.state is BatchState.FAILED and status.quota_exceeded


def _collected(outputs: Outputs) -> contextlib.AbstractAsyncContextManager[Any]:
    """The outputs' record batching (a slice's records go out in whole batches), if it has one."""
    collected = getattr(outputs, "collected", None)
    return collected() if collected is not None else contextlib.nullcontext()


async def _read_outcomes(emission: _Emission, want: int, stop_at: float) -> list[Outcome]:
    """Up to ``want`` outcomes of the stream, fewer if ``stop_at`` passes or it ends."""
    outcomes: list[Outcome] = []
    while len(outcomes) < want:
        try:
            outcomes.append(await anext(emission.stream))
        except StopAsyncIteration:
            emission.exhausted = True
            break
        if time.monotonic() >= stop_at:
            break
    return outcomes


async def _no_outcomes() -> AsyncIterator[Outcome]:
    return
    yield  # an empty async generator


def _close_quietly(stream: AsyncIterator[Outcome]) -> None:
    """Close an abandoned result stream (and its HTTP response) in the background."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return

    async def close() -> None:
        with contextlib.suppress(Exception):
            await aclose()

    _background.add(task := asyncio.ensure_future(close()))
    task.add_done_callback(_background.discard)


def _log_if_undelivered(delivery: Any) -> None:
    """Batch events are observability: a lost one is logged, never waited for."""

    def check(future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            log.warning("batch event not delivered: %s", records.exception_message(error))

    if isinstance(delivery, asyncio.Future):
        delivery.add_done_callback(check)


_background: set[asyncio.Future[None]] = set()
