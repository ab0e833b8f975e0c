"""The realtime lane: one synchronous provider call per request, bounded concurrency.

Concurrency is the Faust agent's ``concurrency``; each call has a timeout and retries with
exponential backoff that honours the provider's Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

from connector import metrics
from connector.config import Settings
from connector.lanes import records
from connector.lanes.outputs import Outputs, TooLarge
from connector.pricing import PriceTable
from connector.providers.base import BatchItem, Outcome, OutcomeKind, Provider
from connector.providers.ids import custom_id_for

log = logging.getLogger(__name__)


class RealtimeLane:
    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        outputs: Outputs,
        prices: PriceTable,
        clock: Callable[[], int],
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.out = outputs
        self.prices = prices
        self.clock = clock
        self._sleep = sleep

    async def _call(self, provider: Provider, item: BatchItem) -> Outcome:
        try:
            return await asyncio.wait_for(provider.complete(item), self.settings.realtime_timeout_s)
        except TimeoutError:
            return Outcome(item.custom_id, OutcomeKind.RETRYABLE, error_code="timeout", error_message="synchronous call timed out")

    async def handle(self, request: dict[str, Any], source: tuple[str, int, int] | None) -> None:
        """Answer one request synchronously; returns once its outcome is acknowledged.

        Raises on anything unexpected (the agent dead-letters the request as internal_error).
        """
        provider = self.providers[request["provider"]]
        item = BatchItem(
            custom_id=custom_id_for(request["request_id"]),
            model=request["model"],
            endpoint=request["endpoint"],
            body=json.loads(request["body"]),
        )
        submitted = self.clock()
        outcome = await self._call_with_retries(provider, item, request["request_id"])
        now = self.clock()
        if outcome.kind is OutcomeKind.SUCCEEDED:
            costs = self.prices.costs(request["provider"], request["model"], outcome.usage, batch=False)
            record = records.result_record(
                request, outcome, lane="realtime", costs=costs, now=now, submitted_at=submitted, completed_at=now
            )
            try:
                await (await self.out.result(record, request.get("reply_topic")))
            except TooLarge as exc:
                await self._fail(request, source, records.OVERSIZE, None, f"the result is too large to deliver: {exc}")
                return
            metrics.labelled(metrics.RESULTS, "realtime", request["provider"]).inc()
            metrics.labelled(metrics.COST, request["provider"], "realtime").inc(costs.cost_usd)
            metrics.labelled(metrics.REALTIME_COST, request["provider"]).inc(costs.realtime_cost_usd)
            metrics.labelled(metrics.LATENCY, "realtime").observe(max(0, now - request["created_at"]) / 1000)
            return
        error_class = records.PROVIDER_REJECTED if outcome.kind is OutcomeKind.PERMANENT else records.RETRIES_EXHAUSTED
        await self._fail(request, source, error_class, outcome.error_code, outcome.error_message or "synchronous call failed")

    async def _call_with_retries(self, provider: Provider, item: BatchItem, request_id: str) -> Outcome:
        delay = 1.0
        attempts = max(1, self.settings.batching.max_attempts)
        for attempt in range(1, attempts + 1):
            outcome = await self._call(provider, item)
            if outcome.kind is not OutcomeKind.RETRYABLE or attempt == attempts:
                return outcome
            wait = outcome.retry_after if outcome.retry_after is not None else delay * random.uniform(0.8, 1.2)
            log.info("realtime %s: %s, retry %d in %.1fs", request_id, outcome.error_code, attempt, wait)
            await self._sleep(min(wait, self.settings.poll_max_s))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable: the last attempt returns")

    async def _fail(
        self, request: dict[str, Any], source: tuple[str, int, int] | None, error_class: str, code: str | None, message: str
    ) -> None:
        failure = records.failure_record(
            error_class=error_class, message=message, now=self.clock(), request=request, error_code=code, source=source
        )
        await (await self.out.failure(failure))
        metrics.labelled(metrics.FAILURES, error_class).inc()
