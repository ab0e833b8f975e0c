"""Giving one request its outcome: a result, another attempt, a dead letter or an escalation.

Delivery is two-step. Each path first sends the outcome and returns it as :class:`Sent`;
:meth:`Delivery.settle` then waits for the broker's acknowledgements and only then
replaces each acknowledged request's table entry with a DONE marker. A request whose
outcome was not acknowledged stays live and gets its outcome again later: a crash can
repeat an outcome (at-least-once), never lose one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connector import metrics
from connector.config import BatchingSettings
from connector.costs.flex import BATCH, ESCALATED_KEY
from connector.lanes import records
from connector.lanes.cost_control import CostControl
from connector.lanes.index import PartitionIndex
from connector.lanes.ledger import BatchRecord, Ledger, PendingEntry
from connector.lanes.outputs import Outputs, TooLarge, settle
from connector.pricing import PriceTable
from connector.providers.base import Outcome, OutcomeKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    """An outcome on its way to the broker; its request is done once it is acknowledged."""

    entry: PendingEntry
    outcome: str  # result, retried, deadletter, escalated
    delivery: Awaitable[Any]
    succeeded: bool = False


class DeliveryFailed(Exception):
    """Some outcomes were not acknowledged; their requests stay live and are tried again."""


class Delivery:
    """Produces each request's one outcome and marks the request done once it is delivered."""

    def __init__(
        self,
        ledger: Ledger,
        outputs: Outputs,
        prices: PriceTable,
        cfg: BatchingSettings,
        clock: Callable[[], int],
        costs: CostControl,
    ) -> None:
        self.ledger = ledger
        self.out = outputs
        self.prices = prices
        self.cfg = cfg
        self.clock = clock
        self.costs = costs

    async def outcome(self, batch: BatchRecord, entry: PendingEntry, outcome: Outcome) -> Sent:
        """Send the outcome the provider gave one request of ``batch``."""
        if outcome.kind is OutcomeKind.SUCCEEDED:
            return await self.result(batch, entry, outcome)
        if outcome.kind is OutcomeKind.RETRYABLE:
            message = outcome.error_message or "retryable failure"
            return await self.retry_or_fail(
                batch, entry, records.RETRIES_EXHAUSTED, outcome.error_code, message
            )
        message = outcome.error_message or "rejected"
        return await self.fail(batch, entry, records.PROVIDER_REJECTED, outcome.error_code, message)

    async def result(self, batch: BatchRecord, entry: PendingEntry, outcome: Outcome) -> Sent:
        """Send the result of a succeeded request (a dead letter if it is too large to send)."""
        req = _request(entry)
        costs = self.prices.costs(req["provider"], req["model"], outcome.usage, BATCH)
        now = self.clock()
        record = records.result_record(
            req,
            outcome,
            lane="batch",
            costs=costs,
            now=now,
            batch_id=batch.batch_id,
            provider_batch_id=batch.handle.batch_id if batch.handle else None,
            submitted_at=batch.submitted_at,
            completed_at=batch.ended_at,
            service_tier=BATCH,
        )
        try:
            delivery = await self.out.result(record, req.get("reply_topic"))
        except TooLarge as exc:
            return await self.fail(
                batch, entry, records.OVERSIZE, None, f"the result is too large to deliver: {exc}"
            )
        self.costs.spent(batch, entry, costs.cost_usd)
        metrics.labelled(metrics.RESULTS, "batch", req["provider"]).inc()
        metrics.labelled(metrics.COST, req["provider"], "batch").inc(costs.cost_usd)
        metrics.labelled(metrics.REALTIME_COST, req["provider"]).inc(costs.realtime_cost_usd)
        metrics.labelled(metrics.LATENCY, "batch").observe(max(0, now - req["created_at"]) / 1000)
        return Sent(entry, "result", delivery, succeeded=True)

    async def retry_or_fail(
        self,
        batch: BatchRecord | None,
        entry: PendingEntry,
        error_class: str,
        code: str | None,
        message: str,
    ) -> Sent:
        """Send the request back for another attempt, or dead-letter it once attempts run out."""
        req = _request(entry)
        attempt = int(req.get("attempt") or 1)
        if attempt >= self.cfg.max_attempts:
            return await self.fail(
                batch, entry, error_class, code, f"{message} (after {attempt} attempts)"
            )
        try:
            delivery = await self.out.retry(dict(req, attempt=attempt + 1))
        except TooLarge as exc:
            return await self.fail(
                batch, entry, records.OVERSIZE, None, f"cannot send the request back: {exc}"
            )
        metrics.labelled(metrics.RETRIES, req["provider"]).inc()
        return Sent(entry, "retried", delivery)

    async def fail(
        self,
        batch: BatchRecord | None,
        entry: PendingEntry,
        error_class: str,
        code: str | None,
        message: str,
    ) -> Sent:
        """Send the request's dead letter with its class, code and message."""
        failure = records.failure_record(
            error_class=error_class,
            message=message,
            now=self.clock(),
            request=entry.request,
            error_code=code,
            batch_id=batch.batch_id if batch else None,
            provider_batch_id=batch.handle.batch_id if batch and batch.handle else None,
            source=entry.source,
        )
        delivery = await self.out.failure(failure)
        metrics.labelled(metrics.FAILURES, error_class).inc()
        return Sent(entry, "deadletter", delivery)

    async def escalate(self, entry: PendingEntry) -> Sent:
        """Hand the request to the realtime lane; its later batch answer is dropped."""
        req = _request(entry)
        # Marked so the realtime lane knows it may use a cheaper tier that still meets the deadline.
        escalated = dict(req, metadata={**(req.get("metadata") or {}), ESCALATED_KEY: "true"})
        try:
            delivery = await self.out.escalate(escalated)
        except TooLarge as exc:
            return await self.fail(
                None, entry, records.OVERSIZE, None, f"cannot escalate the request: {exc}"
            )
        metrics.ESCALATIONS.inc()
        return Sent(entry, "escalated", delivery)

    async def settle(self, index: PartitionIndex, sent: Sequence[Sent]) -> None:
        """Mark done every request whose outcome the broker acknowledged.

        Raises :class:`DeliveryFailed` (after marking the others) if any was not.
        """
        errors = await settle(s.delivery for s in sent)
        delivered = []
        failed = 0
        for item, error in zip(sent, errors, strict=True):
            if error is None:
                delivered.append(item)
            else:
                failed += 1
                log.warning(
                    "outcome of %s not delivered: %s",
                    item.entry.request_id,
                    records.exception_message(error),
                )
        await self.mark_all_done(index, delivered)
        if failed:
            raise DeliveryFailed(
                f"{failed} of {len(sent)} outcomes were not delivered; they will be sent again"
            )

    async def mark_all_done(self, index: PartitionIndex, delivered: Sequence[Sent]) -> None:
        """Leave the DONE markers of delivered outcomes in the table (one write), then drop
        their requests from the index."""
        if not delivered:
            return
        now = self.clock()
        await self.ledger.put_entries([item.entry.done(item.outcome, now) for item in delivered])
        for item in delivered:
            index.forget(item.entry, now)
            index.done.append((now, item.entry.request_id))


def _request(entry: PendingEntry) -> dict[str, Any]:
    assert entry.request is not None, f"{entry.request_id}: a live entry always holds its request"
    return entry.request
