"""Prometheus metrics. The worker serves them on ``BATCHBRIDGE_METRICS_PORT`` (see ``connector.health``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PENDING = Gauge(
    "batchbridge_pending_requests", "Requests queued or in flight on this worker", ["state"]
)
BATCHES = Gauge("batchbridge_batches", "Batches on this worker by state", ["state"])
OLDEST_BATCH_AGE = Gauge(
    "batchbridge_oldest_batch_age_seconds", "Age of the oldest batch not yet emitted"
)
REQUESTS_IN = Counter("batchbridge_requests_total", "Requests accepted", ["lane"])
DUPLICATES = Counter("batchbridge_duplicate_requests_total", "Replayed requests ignored")
RESULTS = Counter("batchbridge_results_total", "Results emitted", ["lane", "provider"])
FAILURES = Counter("batchbridge_failures_total", "Dead letters emitted", ["error_class"])
RETRIES = Counter(
    "batchbridge_retries_total", "Requests re-queued for another attempt", ["provider"]
)
ESCALATIONS = Counter("batchbridge_escalations_total", "Deferred requests escalated to realtime")
BATCH_TRANSITIONS = Counter(
    "batchbridge_batch_transitions_total", "Batch state changes", ["provider", "state"]
)
SYSTEMIC_FAILURES = Counter(
    "batchbridge_systemic_failures_total",
    "Batches in which most requests failed (alert on this)",
    ["provider"],
)
PROVIDER_ERRORS = Counter(
    "batchbridge_provider_errors_total", "Provider calls that failed", ["provider", "call"]
)
COST = Counter(
    "batchbridge_cost_usd_total", "Cost at the price of the lane used", ["provider", "lane"]
)
REALTIME_COST = Counter(
    "batchbridge_realtime_equivalent_cost_usd_total", "Same tokens at realtime prices", ["provider"]
)
LATENCY = Histogram(
    "batchbridge_request_latency_seconds",
    "Request end-to-end latency, created_at to result",
    ["lane"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
)


@lru_cache(maxsize=4096)
def labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once: the lookup costs more than the increment."""
    return metric.labels(*values)
