"""The cost rules of :mod:`connector.costs`, bound to the deferred lane's records and settings.

One :class:`CostControl` per worker. The lane asks it, at each step, what the rules say:
the profile of an admitted request, the order a queue closes in, which requests the budget
lets go, how a closing batch splits (primer, token limit), whether a batch may be submitted
now, the cache hints its requests get, and what a result or a finished batch settles.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from connector.config import Settings
from connector.costs import admission, budget, primer
from connector.costs.budget import Budgets, Claim, Limits, Verdict
from connector.costs.prefixes import with_cache_breakpoint
from connector.costs.profile import RequestProfile, profile_of
from connector.lanes.assembly import Queued, group_by_prefix
from connector.lanes.ledger import BatchPhase, BatchRecord, PendingEntry
from connector.model import BatchKey
from connector.pricing import PriceTable
from connector.providers.base import BatchItem, Usage

#: A queue with shared prefixes closes its full batches at the next tick, grouped, unless it
#: holds this many batches' worth already.
LOOKAHEAD_BATCHES = 4


class CostControl:
    """What the cost rules say about the deferred lane's requests and batches."""

    def __init__(
        self,
        settings: Settings,
        prices: PriceTable,
        budgets: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.cfg = settings.cost
        self.turnaround_ms = int(settings.batching.expected_turnaround_s * 1000)
        self.max_requests = settings.batching.max_requests
        self.prices = prices
        cfg = self.cfg
        limits = Limits(
            cfg.daily_budget_usd, cfg.tenant_daily_budget_usd, dict(cfg.tenant_budgets_usd)
        )
        self.budgets = Budgets(budgets if budgets is not None else {}, limits)
        # (batch key, prefix) → when a batch carrying it was last opened (primers only)
        self._carried: dict[tuple[BatchKey, str], int] = {}

    def reset(self) -> None:
        """Partitions moved: what is derived from the tables is read again."""
        self.budgets.reset()

    # ---------------------------------------------------------------- requests
    def profiled(self, entry: PendingEntry) -> PendingEntry:
        """The entry with its profile, computed once as it is admitted."""
        if entry.request is None or entry.profile is not None:
            return entry
        profile = profile_of(entry.request, self.cfg, self.prices, budgets=self.budgets.enabled)
        return replace(entry, profile=profile) if profile is not None else entry

    def closing_order(self, queue: Sequence[Queued]) -> list[Queued]:
        """The queue in the order it closes in: shared prefixes together when cache-aware."""
        return group_by_prefix(queue) if self.cfg.cache_aware_batching else list(queue)

    def closes_at_tick(self, queue: Iterable[Queued], length: int, provider_max: int) -> bool:
        """Whether a full queue waits for the next tick to close (not at this arrival), so
        that what arrives meanwhile is grouped with it: it holds shared prefixes, and less
        than :data:`LOOKAHEAD_BATCHES` batches' worth."""
        cap = min(self.max_requests, provider_max)
        if not self.cfg.cache_aware_batching or length >= LOOKAHEAD_BATCHES * cap:
            return False
        return any(q.profile is not None and q.profile.prefix is not None for q in queue)

    def budget_verdict(self, refs: Sequence[Queued], now_ms: int) -> Verdict:
        """Which requests of a closing batch the budgets let go now."""
        if not self.budgets.enabled:
            return Verdict([r.request_id for r in refs], [], [])
        claims = [_claim(r) for r in refs]
        return self.budgets.book().admit(claims, budget.day_of(now_ms), self.budgets.limits)

    # ---------------------------------------------------------------- closing
    def primer_split(
        self, key: BatchKey, refs: Sequence[Queued], now_ms: int
    ) -> tuple[list[str], list[str], list[str]]:
        """The closing batch's primer requests, those that wait for it, and the rest (all of
        them unless primers are configured)."""
        ids = [r.request_id for r in refs]
        if not self.cfg.cache_primer:
            return [], [], ids
        horizon = now_ms - int(primer.WARM_S * 1000)
        warm = {prefix for (k, prefix), at in self._carried.items() if k == key and at >= horizon}

        def worth(profile: RequestProfile, members: int) -> bool:
            read = Usage(input_tokens=profile.prefix_tokens, cached_tokens=profile.prefix_tokens)
            saving = self.prices.costs(key.provider, key.model, read, "batch").cache_savings_usd
            return primer.worth_priming(members, saving, self.cfg.primer_min_saving_usd)

        return primer.plan_primer(
            refs, worth=worth, warm=warm, latest_start_ms=now_ms + 2 * self.turnaround_ms
        )

    def token_runs(self, key: BatchKey, sizes: Sequence[int]) -> list[int]:
        """How a batch of these body sizes is cut to the key's enqueued-token limit."""
        limit = admission.token_limit(self.cfg.enqueued_token_limits, key.provider, key.model)
        if limit is None:
            return [len(sizes)]
        return admission.cut_to_limit(sizes, limit, self.cfg.bytes_per_token)

    def opened(self, batch: BatchRecord, refs: Sequence[Queued]) -> None:
        """A batch of ``refs`` was just opened: reserve its budget, remember its prefixes."""
        if self.cfg.cache_primer:
            for ref in refs:
                if ref.profile is not None and ref.profile.prefix is not None:
                    self._carried[(batch.batch_key, ref.profile.prefix)] = batch.closed_at
            horizon = batch.closed_at - int(primer.WARM_S * 1000)
            self._carried = {k: at for k, at in self._carried.items() if at >= horizon}
        if self.budgets.enabled:
            day = budget.day_of(batch.closed_at)
            amounts = budget.reservation((_claim(r) for r in refs), self.budgets.limits)
            self.budgets.reserve(batch.partition, day, amounts)
            batch.budget = {"day": day, "reserved": amounts}

    # ---------------------------------------------------------------- submitting
    def admits(self, batch: BatchRecord, peers: Iterable[BatchRecord]) -> bool:
        """Whether the enqueued-token limit of the batch's model lets it be submitted now.

        ``peers`` are every batch of this worker not yet EMITTED, each partition's in the
        order they were opened.
        """
        key = batch.batch_key
        limit = admission.token_limit(self.cfg.enqueued_token_limits, key.provider, key.model)
        if limit is None:
            return True
        same = [b for b in peers if b.provider == key.provider and b.batch_key.model == key.model]
        unended = {b.batch_id for b in same if b.phase in _COUNTED}
        # A batch still waiting for its primer is not waiting for tokens: it holds no one back.
        gauges = [
            self._gauge(b)
            for b in same
            if b.phase in _COUNTED
            and not (b.phase is BatchPhase.INTENT and unended.intersection(b.waits_for or ()))
        ]
        if batch.batch_id not in {g.batch_id for g in gauges}:
            gauges.append(self._gauge(batch))
        return admission.admits(batch.batch_id, gauges, limit)

    def _gauge(self, batch: BatchRecord) -> admission.Gauge:
        tokens = admission.estimate_tokens(batch.bytes, batch.count, self.cfg.bytes_per_token)
        return admission.Gauge(
            batch.batch_id, batch.phase is BatchPhase.SUBMITTED, tokens, batch.closed_at
        )

    def cache_hints(
        self, batch: BatchRecord, items: list[BatchItem], profiles: Sequence[RequestProfile | None]
    ) -> list[BatchItem]:
        """Anthropic requests whose shared prefix others in the batch (or its primer) share get
        a cache breakpoint at its end; nothing else is changed."""
        if batch.provider != "anthropic" or not self.cfg.anthropic_cache_breakpoints:
            return items
        primed = batch.primer or bool(batch.waits_for)
        counts: dict[str, int] = {}
        for profile in profiles:
            if profile is not None and profile.prefix is not None:
                counts[profile.prefix] = counts.get(profile.prefix, 0) + 1
        hinted = []
        for item, profile in zip(items, profiles, strict=True):
            shared = (
                profile is not None
                and profile.prefix is not None
                and (primed or counts[profile.prefix] > 1)
            )
            body = with_cache_breakpoint(item.body) if shared else None
            hinted.append(replace(item, body=body) if body is not None else item)
        return hinted

    # ---------------------------------------------------------------- settling
    def spent(self, batch: BatchRecord, entry: PendingEntry, cost_usd: float) -> None:
        """Count one result's actual cost against the budgets its request spends."""
        if not self.budgets.enabled:
            return
        day = (batch.budget or {}).get("day") or budget.day_of(batch.closed_at)
        tenant = entry.profile.tenant if entry.profile else None
        self.budgets.spend(batch.partition, day, tenant, cost_usd)

    def finished(self, batch: BatchRecord) -> None:
        """A batch is done (EMITTED): release what it reserved."""
        if batch.budget and self.budgets.enabled:
            self.budgets.release(batch.partition, batch.budget["day"], batch.budget["reserved"])


_COUNTED = frozenset({BatchPhase.INTENT, BatchPhase.SUBMITTED})


def _claim(ref: Queued) -> Claim:
    profile = ref.profile or RequestProfile()
    return Claim(ref.request_id, profile.tenant, profile.reserve_usd)
