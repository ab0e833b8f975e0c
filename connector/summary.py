"""Pure arithmetic over result, failure and batch records: cost, savings, latency, batch states.

No I/O: the ``status``, ``report`` and ``demo`` commands read the topics and hand the
records here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
class CostRow:
    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    realtime_cost_usd: float = 0.0

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
    return [rows[key] for key in sorted(rows)]


def total_row(rows: Iterable[CostRow]) -> CostRow:
    total = CostRow("all", "all")
    for row in rows:
        total.requests += row.requests
        total.input_tokens += row.input_tokens
        total.output_tokens += row.output_tokens
        total.cached_tokens += row.cached_tokens
        total.cost_usd += row.cost_usd
        total.realtime_cost_usd += row.realtime_cost_usd
    return total


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


@dataclass(frozen=True)
class BatchFill:
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
