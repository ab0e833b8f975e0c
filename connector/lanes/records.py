"""Building the records the lanes emit. Pure: no I/O, no clocks (``now`` is passed in)."""

from __future__ import annotations

import json
from typing import Any

from connector.lanes.ledger import BatchPhase, BatchRecord
from connector.pricing import Costs
from connector.providers.base import Outcome

# Failure classes on the dead-letter topic.
DECODE_ERROR = "decode_error"
INVALID_INPUT = "invalid_input"
PROVIDER_REJECTED = "provider_rejected"
RETRIES_EXHAUSTED = "retries_exhausted"
EXPIRED = "expired"
CANCELLED = "cancelled"
BATCH_FAILED = "batch_failed"
OVERSIZE = "oversize"


def result_record(
    request: dict[str, Any],
    outcome: Outcome,
    *,
    lane: str,
    costs: Costs,
    now: int,
    batch_id: str | None = None,
    provider_batch_id: str | None = None,
    submitted_at: int | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request["request_id"],
        "provider": request["provider"],
        "model": request["model"],
        "endpoint": request["endpoint"],
        "lane": lane,
        "batch_id": batch_id,
        "provider_batch_id": provider_batch_id,
        "response": json.dumps(outcome.body or {}, separators=(",", ":"), ensure_ascii=False),
        "usage": {
            "input_tokens": outcome.usage.input_tokens,
            "output_tokens": outcome.usage.output_tokens,
            "cached_tokens": outcome.usage.cached_tokens,
        },
        "cost_usd": costs.cost_usd,
        "realtime_cost_usd": costs.realtime_cost_usd,
        "created_at": request["created_at"],
        "submitted_at": submitted_at,
        "completed_at": completed_at,
        "emitted_at": now,
        "attempt": int(request.get("attempt") or 1),
        "metadata": dict(request.get("metadata") or {}),
    }


def failure_record(
    *,
    error_class: str,
    message: str,
    now: int,
    request: dict[str, Any] | None = None,
    raw_value: bytes | None = None,
    error_code: str | None = None,
    batch_id: str | None = None,
    provider_batch_id: str | None = None,
    source: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request.get("request_id") if request else None,
        "request": request,
        "raw_value": raw_value,
        "error_class": error_class,
        "error_code": error_code,
        "error_message": message,
        "attempts": int(request.get("attempt") or 1) if request else 1,
        "provider": request.get("provider") if request else None,
        "model": request.get("model") if request else None,
        "batch_id": batch_id,
        "provider_batch_id": provider_batch_id,
        "source_topic": source[0] if source else None,
        "source_partition": source[1] if source else None,
        "source_offset": source[2] if source else None,
        "failed_at": now,
    }


def deadletter_headers(failure: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka Connect-style error headers, so Connect tooling can read our dead letters."""
    headers = {
        "__connect.errors.exception.class.name": failure["error_class"],
        "__connect.errors.exception.message": failure["error_message"][:1000],
        "batchbridge.error.class": failure["error_class"],
    }
    if failure.get("error_code"):
        headers["batchbridge.error.code"] = failure["error_code"]
    if failure.get("request_id"):
        headers["batchbridge.request_id"] = failure["request_id"]
    if failure.get("source_topic") is not None:
        headers["__connect.errors.topic"] = failure["source_topic"]
        headers["__connect.errors.partition"] = str(failure["source_partition"])
        headers["__connect.errors.offset"] = str(failure["source_offset"])
    return [(k, v.encode()) for k, v in headers.items()]


def failure_class_for_batch(phase: BatchPhase) -> str:
    """The dead-letter class for requests a batch left unfinished once attempts run out."""
    return {BatchPhase.EXPIRED: EXPIRED, BatchPhase.CANCELLED: CANCELLED, BatchPhase.FAILED: BATCH_FAILED}.get(
        phase, RETRIES_EXHAUSTED
    )


def batch_event(
    batch: BatchRecord, *, previous: BatchPhase | None, now: int, succeeded: int | None = None, failed: int | None = None
) -> dict[str, Any]:
    """The lifecycle event of a batch that just entered ``batch.phase``."""
    return {
        "batch_id": batch.batch_id,
        "provider": batch.provider,
        "model": batch.batch_key.model,
        "endpoint": batch.batch_key.endpoint,
        "state": batch.phase.value,
        "previous_state": previous.value if previous else None,
        "provider_batch_id": batch.handle.batch_id if batch.handle else None,
        "provider_state": batch.provider_state,
        "close_reason": batch.close_reason,
        "request_count": batch.count,
        "bytes": batch.bytes,
        "succeeded": succeeded,
        "failed": failed,
        "error_code": batch.error_code,
        "error_message": batch.error_message,
        "opened_at": batch.opened_at,
        "event_at": now,
    }
