"""The realtime lane: one synchronous provider call per request, bounded concurrency.

Concurrency is the Faust agent's ``concurrency``; each call has a timeout and retries with
exponential backoff that honours the provider's Retry-After. Requests that opt in, and
escalations, try OpenAI's Flex tier first (see :mod:`connector.costs.flex`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from connector import metrics
from connector.config import Settings
from connector.costs import flex
from connector.lanes import records
from connector.lanes.ledger import REPLAY_OF_KEY
from connector.lanes.outputs import Outputs, TooLarge, deliver_all
from connector.pricing import PriceTable
from connector.providers.base import BatchItem, Outcome, OutcomeKind, Provider
from connector.providers.ids import custom_id_for

log = logging.getLogger(__name__)


class RecentIds:
    """The request ids this worker answered on the realtime lane within the de-dup window.

    The same id again (at the same or a lower attempt, and not a replay of a dead letter)
    is a replay, ignored, as on the deferred lane. The deferred lane remembers ids in its
    changelog-backed table; the realtime lane keeps no state, so this memory is this
    worker's alone and bounded to ``max_ids``: a copy arriving after a restart, on another
    worker or past the bound is answered again (consumers de-duplicate on request_id).
    """

    def __init__(self, window_ms: int, max_ids: int = 100_000) -> None:
        self.window_ms = window_ms
        self.max_ids = max_ids
        # request_id → (attempt, replay_of, forget at); in the order the entries expire
        self._seen: OrderedDict[str, tuple[int, str | None, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def repeats(self, request: dict[str, Any], now: int) -> bool:
        """Whether ``request`` repeats one already answered; else remember it."""
        while self._seen and next(iter(self._seen.values()))[2] <= now:
            self._seen.popitem(last=False)
        rid = request["request_id"]
        attempt = int(request.get("attempt") or 1)
        replay_of = (request.get("metadata") or {}).get(REPLAY_OF_KEY)
        seen = self._seen.get(rid)
        if seen is not None and seen[0] >= attempt and seen[1] == replay_of:
            return True
        self._seen[rid] = (attempt, replay_of, now + self.window_ms)
        self._seen.move_to_end(rid)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        return False


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
        self.recent = RecentIds(int(settings.dedupe_window_s * 1000))

    async def _call(
        self, provider: Provider, item: BatchItem, timeout_s: float | None = None
    ) -> Outcome:
        try:
            return await asyncio.wait_for(
                provider.complete(item), timeout_s or self.settings.realtime_timeout_s
            )
        except TimeoutError:
            return Outcome(
                item.custom_id,
                OutcomeKind.RETRYABLE,
                error_code="timeout",
                error_message="synchronous call timed out",
            )

    async def handle(self, request: dict[str, Any], source: tuple[str, int, int] | None) -> None:
        """Answer one request synchronously; returns once its outcome is acknowledged.

        Raises on anything unexpected (the agent dead-letters the request as internal_error).
        A request id answered within the de-dup window is a replay and is ignored.
        """
        if self.recent.repeats(request, self.clock()):
            metrics.DUPLICATES.inc()
            log.info(
                "realtime %s: a replay of a request already answered; ignored",
                request["request_id"],
            )
            return
        provider = self.providers[request["provider"]]
        item = BatchItem(
            custom_id=custom_id_for(request["request_id"]),
            model=request["model"],
            endpoint=request["endpoint"],
            body=json.loads(request["body"]),
        )
        submitted = self.clock()
        outcome, asked = await self._serve(provider, item, request)
        now = self.clock()
        if outcome.kind is OutcomeKind.SUCCEEDED:
            tier, priced = flex.served_tier(asked, flex.reported_tier(outcome.body))
            costs = self.prices.costs(request["provider"], request["model"], outcome.usage, priced)
            record = records.result_record(
                request,
                outcome,
                lane="realtime",
                costs=costs,
                now=now,
                submitted_at=submitted,
                completed_at=now,
                service_tier=tier,
            )
            try:
                await deliver_all(
                    [lambda: self.out.result(record, request.get("reply_topic"))], "results"
                )
            except TooLarge as exc:
                await self._fail(
                    request,
                    source,
                    records.OVERSIZE,
                    None,
                    f"the result is too large to deliver: {exc}",
                )
                return
            metrics.labelled(metrics.RESULTS, "realtime", request["provider"]).inc()
            metrics.labelled(metrics.COST, request["provider"], "realtime").inc(costs.cost_usd)
            metrics.labelled(metrics.REALTIME_COST, request["provider"]).inc(
                costs.realtime_cost_usd
            )
            metrics.labelled(metrics.LATENCY, "realtime").observe(
                max(0, now - request["created_at"]) / 1000
            )
            return
        error_class = (
            records.PROVIDER_REJECTED
            if outcome.kind is OutcomeKind.PERMANENT
            else records.RETRIES_EXHAUSTED
        )
        await self._fail(
            request,
            source,
            error_class,
            outcome.error_code,
            outcome.error_message or "synchronous call failed",
        )

    async def _serve(
        self, provider: Provider, item: BatchItem, request: dict[str, Any]
    ) -> tuple[Outcome, str]:
        """The request's outcome and the tier it asked for: Flex first where planned."""
        cfg = self.settings.cost
        if flex.plans_flex(
            request, item.body, cfg.flex_models, for_escalations=cfg.flex_for_escalations
        ):
            outcome = await self._flex(provider, item, request)
            if outcome is not None:
                return outcome, flex.FLEX
            log.info(
                "realtime %s: Flex had no answer in time; the standard tier serves it",
                request["request_id"],
            )
        return await self._call_with_retries(provider, item, request["request_id"]), flex.STANDARD

    async def _flex(
        self, provider: Provider, item: BatchItem, request: dict[str, Any]
    ) -> Outcome | None:
        """Flex attempts while the deadline leaves room; None when the standard tier must answer."""
        cfg = self.settings.cost
        flex_item = replace(item, body={**item.body, "service_tier": flex.FLEX})
        deadline = request.get("deadline")
        attempts = max(1, self.settings.batching.max_attempts)
        delay = 1.0
        for attempt in range(1, attempts + 1):
            window = flex.flex_window_s(
                deadline,
                self.clock(),
                timeout_s=cfg.flex_timeout_s,
                reserve_s=cfg.flex_standard_reserve_s,
            )
            if window is None:
                return None
            outcome = await self._call(provider, flex_item, window)
            if outcome.kind is OutcomeKind.SUCCEEDED:
                return outcome
            if outcome.kind is OutcomeKind.PERMANENT or attempt == attempts:
                return None  # refused (the model, the tier), or out of attempts: the standard tier answers
            hint = (
                outcome.retry_after
                if outcome.retry_after is not None
                else delay * random.uniform(0.8, 1.2)
            )
            wait = min(hint, self.settings.poll_max_s)
            later = self.clock() + int(wait * 1000)
            if (
                flex.flex_window_s(
                    deadline,
                    later,
                    timeout_s=cfg.flex_timeout_s,
                    reserve_s=cfg.flex_standard_reserve_s,
                )
                is None
            ):
                return None
            log.info(
                "realtime %s: Flex %s, trying Flex again in %.1fs",
                request["request_id"],
                outcome.error_code,
                wait,
            )
            await self._sleep(wait)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable: the last attempt returns")

    async def _call_with_retries(
        self, provider: Provider, item: BatchItem, request_id: str
    ) -> Outcome:
        delay = 1.0
        attempts = max(1, self.settings.batching.max_attempts)
        for attempt in range(1, attempts + 1):
            outcome = await self._call(provider, item)
            if outcome.kind is not OutcomeKind.RETRYABLE or attempt == attempts:
                return outcome
            wait = (
                outcome.retry_after
                if outcome.retry_after is not None
                else delay * random.uniform(0.8, 1.2)
            )
            log.info(
                "realtime %s: %s, retry %d in %.1fs", request_id, outcome.error_code, attempt, wait
            )
            await self._sleep(min(wait, self.settings.poll_max_s))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable: the last attempt returns")

    async def _fail(
        self,
        request: dict[str, Any],
        source: tuple[str, int, int] | None,
        error_class: str,
        code: str | None,
        message: str,
    ) -> None:
        failure = records.failure_record(
            error_class=error_class,
            message=message,
            now=self.clock(),
            request=request,
            error_code=code,
            source=source,
        )
        await deliver_all([lambda: self.out.failure(failure)], "dead letters")
        metrics.labelled(metrics.FAILURES, error_class).inc()
