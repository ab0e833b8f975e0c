"""Giving one request its outcome: a result, another attempt, a dead letter or an escalation.

Each path produces the outcome, updates the metrics, drops the request from the partition
index and replaces its table entry with a small DONE marker (kept for de-duplication).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector import metrics
from connector.config import BatchingSettings
from connector.lanes import records
from connector.lanes.index import PartitionIndex
from connector.lanes.ledger import BatchRecord, Ledger, PendingEntry
from connector.lanes.outputs import Outputs
from connector.pricing import PriceTable
from connector.providers.base import Outcome, OutcomeKind


class Delivery:
    """Produces each request's one outcome and marks the request done."""

    def __init__(
        self, ledger: Ledger, outputs: Outputs, prices: PriceTable, cfg: BatchingSettings, clock: Callable[[], int]
    ) -> None:
        self.ledger = ledger
        self.out = outputs
        self.prices = prices
        self.cfg = cfg
        self.clock = clock

    async def outcome(self, index: PartitionIndex, batch: BatchRecord, entry: PendingEntry, outcome: Outcome) -> bool:
        """Deliver one provider outcome; True if it was a success."""
        if outcome.kind is OutcomeKind.SUCCEEDED:
            await self.result(index, batch, entry, outcome)
            return True
        if outcome.kind is OutcomeKind.RETRYABLE:
            message = outcome.error_message or "retryable failure"
            await self.retry_or_fail(index, batch, entry, records.RETRIES_EXHAUSTED, outcome.error_code, message)
        else:
            message = outcome.error_message or "rejected"
            await self.fail(index, batch, entry, records.PROVIDER_REJECTED, outcome.error_code, message)
        return False

    async def result(self, index: PartitionIndex, batch: BatchRecord, entry: PendingEntry, outcome: Outcome) -> None:
        """Emit the result of a succeeded request."""
        req = _request(entry)
        costs = self.prices.costs(req["provider"], req["model"], outcome.usage, batch=True)
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
        )
        await self.out.result(record, req.get("reply_topic"))
        metrics.RESULTS.labels("batch", req["provider"]).inc()
        metrics.COST.labels(req["provider"], "batch").inc(costs.cost_usd)
        metrics.REALTIME_COST.labels(req["provider"]).inc(costs.realtime_cost_usd)
        metrics.LATENCY.labels("batch").observe(max(0, now - req["created_at"]) / 1000)
        self.mark_done(index, entry, "result")

    async def retry_or_fail(
        self,
        index: PartitionIndex,
        batch: BatchRecord | None,
        entry: PendingEntry,
        error_class: str,
        code: str | None,
        message: str,
    ) -> None:
        """Send the request back for another attempt, or dead-letter it once attempts run out."""
        req = _request(entry)
        attempt = int(req.get("attempt") or 1)
        if attempt < self.cfg.max_attempts:
            await self.out.retry(dict(req, attempt=attempt + 1))
            metrics.RETRIES.labels(req["provider"]).inc()
            self.mark_done(index, entry, "retried")
        else:
            await self.fail(index, batch, entry, error_class, code, f"{message} (after {attempt} attempts)")

    async def fail(
        self,
        index: PartitionIndex,
        batch: BatchRecord | None,
        entry: PendingEntry,
        error_class: str,
        code: str | None,
        message: str,
    ) -> None:
        """Dead-letter the request with its class, code and message."""
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
        await self.out.failure(failure)
        metrics.FAILURES.labels(error_class).inc()
        self.mark_done(index, entry, "deadletter")

    async def escalate(self, index: PartitionIndex, entry: PendingEntry) -> None:
        """Hand the request to the realtime lane; its later batch answer is dropped."""
        await self.out.escalate(_request(entry))
        metrics.ESCALATIONS.inc()
        self.mark_done(index, entry, "escalated")

    def mark_done(self, index: PartitionIndex, entry: PendingEntry, outcome: str) -> None:
        """Drop the request from the index and leave its DONE marker in the table."""
        index.forget(entry)
        now = self.clock()
        self.ledger.put_entry(entry.done(outcome, now))
        index.done.append((now, entry.request_id))


def _request(entry: PendingEntry) -> dict[str, Any]:
    assert entry.request is not None, f"{entry.request_id}: a live entry always holds its request"
    return entry.request
