"""Pure arithmetic over result, failure and batch records: cost, savings, latency, batch states.

No I/O: the ``status``, ``report`` and ``demo`` commands read the topics and hand the
records here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FINAL_STATES = frozenset({"EMITTED", "FAILED", "EXPIRED", "CANCELLED"})


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def saving_pct(cost: float, realtime_cost: float) -> float | None:
    if realtime_cost <= 0:
        return None
    return round(100.0 * (realtime_cost - cost) / realtime_cost, 2)


@dataclass
class SavingsBreakdown:
    """Where a saving against uncached realtime prices came from; the parts add up to it.

    ``other_usd`` holds what no part explains: a standard-tier request saves nothing
    beyond its cache, so anything left there is a price-table or rounding difference.
    """

    batch_discount_usd: float = 0.0
    cache_usd: float = 0.0
    flex_usd: float = 0.0
    other_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.batch_discount_usd + self.cache_usd + self.flex_usd + self.other_usd

    def add(self, other: SavingsBreakdown) -> None:
        self.batch_discount_usd += other.batch_discount_usd
        self.cache_usd += other.cache_usd
        self.flex_usd += other.flex_usd
        self.other_usd += other.other_usd

    def as_dict(self) -> dict[str, float]:
        return {
            "batch_discount_usd": round(self.batch_discount_usd, 6),
            "cache_usd": round(self.cache_usd, 6),
            "flex_usd": round(self.flex_usd, 6),
            "other_usd": round(self.other_usd, 6),
        }


def service_tier(result: dict[str, Any]) -> str:
    """The price tier that served a result; records older than the field derive it from the lane."""
    tier = result.get("service_tier")
    if tier:
        return str(tier)
    return "batch" if result.get("lane") == "batch" else "standard"


def savings_of(result: dict[str, Any]) -> SavingsBreakdown:
    """Split one result's saving (realtime − cost) into cache savings and its tier's discount."""
    saving = float(result.get("realtime_cost_usd") or 0.0) - float(result.get("cost_usd") or 0.0)
    cache = float(result.get("cache_savings_usd") or 0.0)
    rest = saving - cache
    tier = service_tier(result)
    if tier == "batch":
        return SavingsBreakdown(batch_discount_usd=rest, cache_usd=cache)
    if tier == "flex":
        return SavingsBreakdown(flex_usd=rest, cache_usd=cache)
    return SavingsBreakdown(cache_usd=cache, other_usd=rest)


@dataclass
class CostRow:
    """Totals of one (provider, model), or of everything (``all``, ``all``)."""

    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    realtime_cost_usd: float = 0.0
    savings: SavingsBreakdown = field(default_factory=SavingsBreakdown)

    @property
    def saving_usd(self) -> float:
        return self.realtime_cost_usd - self.cost_usd

    @property
    def saving_pct(self) -> float | None:
        return saving_pct(self.cost_usd, self.realtime_cost_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "realtime_cost_usd": round(self.realtime_cost_usd, 6),
            "saving_usd": round(self.saving_usd, 6),
            "saving_pct": self.saving_pct,
            "savings": self.savings.as_dict(),
        }


def cost_rows(results: Iterable[dict[str, Any]]) -> list[CostRow]:
    """Per (provider, model) totals of InferenceResult records, sorted by provider, model."""
    rows: dict[tuple[str, str], CostRow] = {}
    for result in results:
        key = (result["provider"], result["model"])
        row = rows.setdefault(key, CostRow(*key))
        usage = result.get("usage") or {}
        row.requests += 1
        row.input_tokens += int(usage.get("input_tokens") or 0)
        row.output_tokens += int(usage.get("output_tokens") or 0)
        row.cached_tokens += int(usage.get("cached_tokens") or 0)
        row.cost_usd += float(result.get("cost_usd") or 0.0)
        row.realtime_cost_usd += float(result.get("realtime_cost_usd") or 0.0)
        row.savings.add(savings_of(result))
    return [rows[key] for key in sorted(rows)]


def total_row(rows: Iterable[CostRow]) -> CostRow:
    """The sum of ``rows`` as one row named ``all`` / ``all``."""
    total = CostRow("all", "all")
    for row in rows:
        total.requests += row.requests
        total.input_tokens += row.input_tokens
        total.output_tokens += row.output_tokens
        total.cached_tokens += row.cached_tokens
        total.cost_usd += row.cost_usd
        total.realtime_cost_usd += row.realtime_cost_usd
        total.savings.add(row.savings)
    return total


@dataclass(frozen=True)
class CostReport:
    """Cost and savings per (provider, model) and in total, as ``report`` and the demo show them."""

    rows: list[CostRow]
    total: CostRow

    def as_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": round(self.total.cost_usd, 6),
            "realtime_cost_usd": round(self.total.realtime_cost_usd, 6),
            "saving_usd": round(self.total.saving_usd, 6),
            "saving_pct": self.total.saving_pct,
            "savings": self.total.savings.as_dict(),
            "by_model": [row.as_dict() for row in self.rows],
        }


def cost_report(results: Iterable[dict[str, Any]]) -> CostReport:
    """Per-model rows and their total for InferenceResult records (already de-duplicated)."""
    rows = cost_rows(results)
    return CostReport(rows, total_row(rows))


OutcomeKind = Literal["result", "deadletter"]


@dataclass(frozen=True)
class Outcomes:
    """The first outcome of every request_id in a stream of results and dead letters."""

    results: list[dict[str, Any]]
    failures_by_class: dict[str, int]
    duplicates: int  # later outcomes of a request_id already seen, dropped

    @property
    def deadletters(self) -> int:
        return sum(self.failures_by_class.values())


def first_outcomes(records: Iterable[tuple[OutcomeKind, dict[str, Any]]]) -> Outcomes:
    """De-duplicate by request_id, first one wins (delivery is at-least-once).

    A dead letter without a request_id (undecodable input) cannot repeat one and always counts.
    """
    seen: set[str] = set()
    results: list[dict[str, Any]] = []
    failures: Counter[str] = Counter()
    duplicates = 0
    for kind, record in records:
        request_id = record.get("request_id")
        if request_id is not None:
            if request_id in seen:
                duplicates += 1
                continue
            seen.add(request_id)
        if kind == "result":
            results.append(record)
        else:
            failures[record["error_class"]] += 1
    return Outcomes(results, dict(sorted(failures.items())), duplicates)


def latest_batches(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest BatchEvent of every batch_id (by event_at; later offset wins a tie)."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        current = latest.get(event["batch_id"])
        if current is None or event["event_at"] >= current["event_at"]:
            latest[event["batch_id"]] = event
    return latest


def in_flight(latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Batches not yet in a final state, oldest first."""
    return sorted(
        (e for e in latest.values() if e["state"] not in FINAL_STATES),
        key=lambda e: (e["opened_at"], e["batch_id"]),
    )


def state_counts(latest: dict[str, dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(e["state"] for e in latest.values()).items()))


def shown_batches(latest: dict[str, dict[str, Any]], show_all: bool) -> list[dict[str, Any]]:
    """What ``status`` lists: batches in flight, or with ``show_all`` every batch; oldest first."""
    if not show_all:
        return in_flight(latest)
    return sorted(latest.values(), key=lambda e: (e["opened_at"], e["batch_id"]))


@dataclass(frozen=True)
class BatchFill:
    """How many batches reached a provider and how full they were on average."""

    batches: int
    requests: int

    @property
    def average(self) -> float | None:
        return round(self.requests / self.batches, 1) if self.batches else None


def batch_fill(events: Iterable[dict[str, Any]]) -> BatchFill:
    """Batches that reached the provider (SUBMITTED) and their average request count."""
    submitted: dict[str, int] = {}
    for event in events:
        if event["state"] == "SUBMITTED":
            submitted[event["batch_id"]] = int(event["request_count"])
    return BatchFill(len(submitted), sum(submitted.values()))


def time_to_result_s(results: Iterable[dict[str, Any]]) -> list[float]:
    return [(r["emitted_at"] - r["created_at"]) / 1000.0 for r in results]
